"""Facts about the lab's published blind denoisers: where the files live and the numbers they must reproduce.

The Set68 tables are those of bias_free_denoising's ``precomputed/dncnn/bias_free/*_metrics.p``
(mean over the 68 images of the per-image PSNR of the denoised image clamped to [0, 1]; noise of
std s/255 added to the [0, 1] image, not clipped): the protocol of
:class:`gahb.analysis.denoising.DenoisingProtocol` with its defaults. Files are identified by the
sha256 of their bytes (a network downloaded from the same repository path has the same one).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PublishedDenoiser:
    """A published checkpoint: its import format, where it lives, what it was trained on."""

    key: str
    format: str
    repository: str
    path: str
    sha256: str
    description: str
    set68_psnr: dict = field(default_factory=dict)  # {"s": dB} for s = 10, ..., 100 (out of 255)


PUBLISHED: dict[str, PublishedDenoiser] = {d.key: d for d in (
    PublishedDenoiser(
        "uip-bfcnn-bsd400-0to100", "uip-bfcnn", "LabForComputationalVision/universal_inverse_problem",
        "denoisers/BF_CNN/BSD400_gray/noise_range_0to100/model.pt",
        "cb99c1acae801b4ecc361e113b510e11000fcb7e365e19be993c3ec3986e7bcf",
        "blind BF-CNN, 20 layers x 64 channels, BSD400 gray, sigma in [0, 100]/255 (Kadkhodaie & Simoncelli 2021)"),
    PublishedDenoiser(
        "bfd-dncnn-0-100", "bfd-dncnn", "LabForComputationalVision/bias_free_denoising",
        "pretrained/dncnn/bias_free/0-100.pt",
        "a21e6541a39f3975f421142f5d3845bc858e89881118be647ad9208cb61126e5",
        "bias-free DnCNN, 20 layers x 64 channels, BSD400, sigma in [0, 100]/255 (Mohan et al. 2020)",
        {"10": 33.65, "20": 30.13, "30": 28.29, "40": 27.09, "50": 26.20, "60": 25.51, "70": 24.94,
         "80": 24.47, "90": 24.07, "100": 23.69}),
    PublishedDenoiser(
        "bfd-dncnn-0-10", "bfd-dncnn", "LabForComputationalVision/bias_free_denoising",
        "pretrained/dncnn/bias_free/0-10.pt",
        "620fda70ca2c199cca91454e1b7b169032d4aedd947367ec1de0f2fe0513e017",
        "bias-free DnCNN trained only on sigma in [0, 10]/255 (generalization beyond the training range)",
        {"10": 33.84, "20": 30.14, "30": 28.15, "40": 26.82, "50": 25.80, "60": 24.99, "70": 24.31,
         "80": 23.74, "90": 23.25, "100": 22.83}),
)}
SET68_SIZE = 68


def by_sha256(sha256: str | None) -> PublishedDenoiser | None:
    """The published checkpoint with these bytes, or None."""
    return next((d for d in PUBLISHED.values() if d.sha256 == sha256), None)
