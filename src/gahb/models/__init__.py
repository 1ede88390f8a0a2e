"""Blind bias-free denoisers: BF-BN, the paper's UNet and BF-CNN, the denoiser contract."""

from .base import ResidualDenoiser, check_batch, count_parameters
from .bfbn import BFBatchNorm2d
from .bfcnn import BFCNN
from .config import MODEL_PRESETS, ModelConfig, build_model, init_weights, model_config
from .fold import fold_batchnorm, optimize_for_inference
from .unet import UNet

__all__ = [
    "BFBatchNorm2d", "BFCNN", "MODEL_PRESETS", "ModelConfig", "ResidualDenoiser", "UNet",
    "build_model", "check_batch", "count_parameters", "fold_batchnorm", "init_weights", "model_config",
    "optimize_for_inference",
]
