"""Typed architecture configuration and the factory that builds a denoiser from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from torch import nn

ARCHITECTURES = ("unet", "bfcnn")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a blind bias-free denoiser.

    ``arch="unet"`` uses ``num_blocks``, ``width``, ``pad_mode`` and the official code's
    ``enc_convs``/``mid_convs``/``dec_convs`` (convolutions per block) and ``pool_window``;
    ``arch="bfcnn"`` uses ``num_layers``, ``width`` and ``first_layer_linear``. The defaults are the
    paper's 80x80 UNet (3 blocks, width 64, 2 convolutions per block, pooling window 2,
    7,659,264 params).
    """

    arch: str = "unet"
    channels: int = 1
    width: int = 64
    num_blocks: int = 3
    num_layers: int = 21
    kernel_size: int = 3
    pad_mode: str = "reflect"
    first_layer_linear: bool = False
    enc_convs: int = 2
    mid_convs: int = 2
    dec_convs: int = 2
    pool_window: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", self.arch.lower().replace("-", "").replace("_", ""))
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {ARCHITECTURES}")
        if self.channels < 1 or self.width < 1:
            raise ValueError("channels and width must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Presets named after the paper's Table 1 (UNet sized to the image) and App. A.1 (BF-CNN).
MODEL_PRESETS: dict[str, ModelConfig] = {
    "unet-20": ModelConfig(arch="unet", num_blocks=1),
    "unet-40": ModelConfig(arch="unet", num_blocks=2),
    "unet-80": ModelConfig(arch="unet", num_blocks=3),
    "unet-160": ModelConfig(arch="unet", num_blocks=4),
    "bfcnn": ModelConfig(arch="bfcnn", num_layers=21),
    # Small models for CPU work on 28x28 Fashion-MNIST.
    "unet-small": ModelConfig(arch="unet", num_blocks=2, width=32),
    "unet-tiny": ModelConfig(arch="unet", num_blocks=2, width=16),
}


def model_config(model: "ModelConfig | str | dict", base: str | None = None) -> ModelConfig:
    """The one model lookup: a preset name (``"unet-small"``), a dict of fields (over preset ``base``'s,
    or over the class defaults when ``base`` is None) or a ModelConfig, as a ModelConfig."""
    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, str):
        if model not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {model!r}; choose one of {sorted(MODEL_PRESETS)} "
                             "or give a dict of ModelConfig fields")
        return MODEL_PRESETS[model]
    if isinstance(model, dict):
        return ModelConfig.from_dict({**(model_config(base).to_dict() if base else {}), **model})
    raise TypeError(f"model must be a preset name, a dict or a ModelConfig, got {type(model).__name__}")


def build_model(cfg: ModelConfig | str) -> nn.Module:
    """Build a freshly initialised denoiser (Kaiming-normal convolutions, BF-BN gains as in the paper)."""
    cfg = model_config(cfg)
    if cfg.arch == "unet":
        from .unet import UNet

        model = UNet(cfg.channels, cfg.num_blocks, cfg.width, cfg.kernel_size, cfg.pad_mode,
                     enc_convs=cfg.enc_convs, mid_convs=cfg.mid_convs, dec_convs=cfg.dec_convs,
                     pool_window=cfg.pool_window)
    else:
        from .bfcnn import BFCNN

        model = BFCNN(cfg.channels, cfg.num_layers, cfg.width, cfg.kernel_size, cfg.first_layer_linear)
    init_weights(model)
    return model


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_in, ReLU gain) on every (transposed) convolution, as the official code."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
