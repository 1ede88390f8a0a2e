"""Evaluation during training and one-image denoising (PSNR as in the paper's Fig 1: 10 log10(1/MSE) per image, averaged).

The per-epoch numbers must be comparable across epochs and across resumed sessions, so the
evaluation uses fixed images (the first ``k`` training and the first ``k`` held-out images) and
fixed noise drawn once from a generator seeded by the run's seed, independent of the training
generators. The network is evaluated in eval mode (BF-BN uses its running standard deviation),
the mode used for sampling and Jacobians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gahb.analysis.metrics import input_psnr, psnr

from .noise import denoising_loss, draw_noise


def sigma_key(s: float) -> str:
    """Stable JSON key for a noise level (``0.1`` -> ``"0.1"``)."""
    return f"{s:g}"


@dataclass
class _Fixed:
    clean: torch.Tensor  # (k, C, H, W)
    unit_noise: torch.Tensor  # N(0, I), scaled by each sweep sigma
    loss_noise: torch.Tensor  # sigma-law noise for the fixed-noise loss


class EvalSet:
    """Fixed train/held-out images and fixed noise for the per-epoch PSNR sweep and losses."""

    def __init__(
        self,
        train_images: torch.Tensor,
        test_images: torch.Tensor | None,
        k: int,
        sigmas: tuple[float, ...],
        law: str,
        sigma_max: float,
        seed: int,
        batch: int = 256,
    ):
        self.sigmas = tuple(float(s) for s in sigmas)
        self.batch = batch
        g = torch.Generator().manual_seed(int(seed))
        self.sets: dict[str, _Fixed] = {}
        for name, imgs in (("train", train_images), ("test", test_images)):
            if imgs is None or len(imgs) == 0:
                continue
            clean = imgs[: min(k, len(imgs))].detach().float().cpu().contiguous()
            unit = torch.randn(clean.shape, generator=g)
            _, loss_noise = draw_noise(clean.shape, law, sigma_max, generator=g)
            self.sets[name] = _Fixed(clean, unit, loss_noise)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict:
        """``{"train_loss_fixed", "test_loss", "train_psnr": {sigma: dB}, "test_psnr": {...}}``.

        The model is switched to eval mode and restored to its previous mode afterwards.
        """
        was_training = model.training
        model.eval()
        out: dict = {}
        try:
            for name, fx in self.sets.items():
                loss_sum = 0.0
                psnrs = {s: 0.0 for s in self.sigmas}
                for i in range(0, len(fx.clean), self.batch):
                    x = fx.clean[i : i + self.batch].to(device)
                    z = fx.loss_noise[i : i + self.batch].to(device)
                    loss_sum += denoising_loss(model.residual(x + z), z, batch_size=1).item()
                    u = fx.unit_noise[i : i + self.batch].to(device)
                    for s in self.sigmas:
                        den = model(x + s * u)
                        psnrs[s] += psnr(den, x, reduce=False).sum().item()
                n = len(fx.clean)
                out["train_loss_fixed" if name == "train" else "test_loss"] = loss_sum / n
                out[f"{name}_psnr"] = {sigma_key(s): v / n for s, v in psnrs.items()}
        finally:
            model.train(was_training)
        return out


@torch.no_grad()
def denoise_image(
    model: nn.Module,
    clean: torch.Tensor,
    sigma: float,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """Add N(0, sigma^2) noise to one clean image (C, H, W) in [0, 1] and denoise it (eval mode).

    The noise comes from a CPU generator seeded with ``seed``, so the noisy image is the same on
    every device. Returns the noisy and denoised images (unclipped, on the CPU) and the PSNRs of
    both against the clean image.
    """
    if clean.ndim != 3:
        raise ValueError(f"expected one image of shape (C, H, W), got {tuple(clean.shape)}")
    if not (sigma >= 0):
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    clean = clean.float().cpu()
    g = torch.Generator().manual_seed(int(seed))
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    model.eval()
    den = model(noisy.unsqueeze(0).to(device)).squeeze(0).float().cpu()
    return {
        "noisy": noisy,
        "denoised": den,
        "psnr_in": float(psnr(noisy[None], clean[None])),
        "psnr_out": float(psnr(den[None], clean[None])),
        "psnr_in_nominal": float(input_psnr(sigma)) if sigma > 0 else float("inf"),
    }
