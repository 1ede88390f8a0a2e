"""The standard denoising benchmark of blind denoisers (Mohan et al. 2020, their Table; ``gahb evaluate``).

Protocol (that of bias_free_denoising's evaluation, which produced the published Set68 numbers):

* full test images, grayscale on the [0, 1] scale (8-bit files divided by 255);
* Gaussian noise of std s / ``sigma_scale`` added to the [0, 1] image, the noisy image **not**
  clipped; image i gets the noise s * z_i / ``sigma_scale``, with z_i ~ N(0, I) drawn once from a
  CPU generator seeded ``seed + i`` (the same z_i at every s, on every device, for every network:
  comparisons between networks and noise levels are paired);
* the denoised image clamped to [0, 1];
* PSNR (data range 1, i.e. 255 on the 8-bit scale) and SSIM (:func:`~gahb.analysis.metrics.ssim`)
  per image, averaged over the images, with the standard error of the mean.

:func:`evaluate_denoiser` runs it; an interrupted run continues from its partial record
(``partial`` argument) when the protocol, checkpoint and images are the same.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from gahb.analysis.metrics import psnr, ssim
from gahb.models.base import require_eval_mode


@dataclass(frozen=True)
class DenoisingProtocol:
    """What a denoising table is measured with; two tables compare only under the same protocol.

    Attributes:
        sigmas: noise levels on the ``sigma_scale`` scale (e.g. 10, 20, ..., 100 out of 255).
        sigma_scale: the noise std on the [0, 1] pixel scale is ``s / sigma_scale``.
        seed: image i's unit noise is drawn from a CPU generator seeded ``seed + i``.
        clamp: clamp the denoised image to [0, 1] before measuring (the published protocol).
        clip_noisy: clip the noisy image to [0, 1] before denoising (not the published protocol).
    """

    sigmas: tuple = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
    sigma_scale: float = 255.0
    seed: int = 0
    clamp: bool = True
    clip_noisy: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        if not self.sigmas or any(not (s >= 0 and math.isfinite(s)) for s in self.sigmas):
            raise ValueError(f"sigmas must be non-negative numbers, got {self.sigmas}")
        if not self.sigma_scale > 0:
            raise ValueError(f"sigma_scale must be positive, got {self.sigma_scale}")

    def to_dict(self) -> dict:
        return {**asdict(self), "sigmas": list(self.sigmas), "psnr": "per image, data range 1, averaged",
                "ssim": "Wang et al. 2004: 11x11 Gaussian window (std 1.5), K = (0.01, 0.03), valid positions",
                "noise": "s / sigma_scale * z_i, z_i ~ N(0, I) from torch.Generator().manual_seed(seed + i)"}

    def comparable(self) -> dict:
        """The fields that must agree for two runs' numbers to be the same measurement (not ``sigmas``)."""
        return {k: v for k, v in self.to_dict().items() if k != "sigmas"}


def unit_noise(shape: Sequence[int], seed: int, index: int) -> torch.Tensor:
    """Image ``index``'s unit noise z_i (float32, CPU) under :class:`DenoisingProtocol` ``seed``."""
    from gahb.utils.noise import gaussian

    return gaussian(shape, int(seed) + int(index))


@torch.no_grad()
def denoise_measure(denoiser: nn.Module, clean: torch.Tensor, sigma: float, z: torch.Tensor,
                    protocol: DenoisingProtocol, device: torch.device | str = "cpu") -> dict:
    """PSNR in and out, and SSIM out, of one (C, H, W) image at noise ``sigma`` (pixel scale) and unit noise z."""
    x = clean.float().unsqueeze(0)
    y = x + sigma * z.float().unsqueeze(0)
    if protocol.clip_noisy:
        y = y.clamp(0, 1)
    out = denoiser(y.to(device)).float().cpu()
    if protocol.clamp:
        out = out.clamp(0, 1)
    return {"psnr_in": float(psnr(y, x)), "psnr": float(psnr(out, x)), "ssim": float(ssim(out, x))}


def _stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0
    return float(a.mean()), se


def evaluate_denoiser(denoiser: nn.Module, images: Sequence[tuple[str, torch.Tensor]],
                      protocol: DenoisingProtocol | None = None, *, device: torch.device | str = "cpu",
                      progress: bool = True, partial: dict | None = None, on_image=None) -> dict:
    """The denoising table of ``denoiser`` on named clean images (C, H, W) in [0, 1].

    ``partial``: a record returned earlier (or saved by ``on_image``) for the same protocol and
    images; the images it holds are not measured again. ``on_image(record)`` is called after each
    image with the record so far (for saving progress). Returns ``{"protocol", "images",
    "per_sigma": [{"sigma", "sigma_pixel", "psnr_in", "psnr", "psnr_se", "ssim", "ssim_se"}],
    "per_image": {name: {"psnr": [...], "ssim": [...], "psnr_in": [...]}}, "seconds"}``.
    """
    from tqdm.auto import tqdm

    protocol = protocol or DenoisingProtocol()
    if not images:
        raise ValueError("no images to evaluate")
    names = [n for n, _ in images]
    if len(set(names)) != len(names):
        raise ValueError("image names must be unique")
    require_eval_mode(denoiser, "a denoising benchmark")
    record = {"protocol": protocol.to_dict(), "images": names, "per_image": {}, "seconds": 0.0}
    if partial and partial.get("protocol") == record["protocol"] and partial.get("images") == names:
        record["per_image"] = {k: v for k, v in partial.get("per_image", {}).items() if k in names}
        record["seconds"] = float(partial.get("seconds", 0.0))
    todo = [(i, n, img) for i, (n, img) in enumerate(images) if n not in record["per_image"]]
    bar = tqdm(total=len(todo) * len(protocol.sigmas), desc="evaluate", unit="image", disable=not progress,
               leave=False)
    try:
        for i, name, img in todo:
            t0 = time.perf_counter()
            if img.ndim != 3:
                raise ValueError(f"image {name}: expected (C, H, W), got shape {tuple(img.shape)}")
            z = unit_noise(img.shape, protocol.seed, i)
            rows = {"psnr_in": [], "psnr": [], "ssim": []}
            for s in protocol.sigmas:
                m = denoise_measure(denoiser, img, s / protocol.sigma_scale, z, protocol, device)
                for k in rows:
                    rows[k].append(m[k])
                bar.update(1)
            record["per_image"][name] = rows
            record["seconds"] += time.perf_counter() - t0
            if on_image is not None:
                on_image(record)
    finally:
        bar.close()
    record["per_sigma"] = summarize(record, protocol)
    return record


def summarize(record: dict, protocol: DenoisingProtocol) -> list[dict]:
    """Mean and standard error over the images of each noise level of a record."""
    rows = []
    for j, s in enumerate(protocol.sigmas):
        per = [record["per_image"][n] for n in record["images"]]
        p, p_se = _stats([r["psnr"][j] for r in per])
        q, q_se = _stats([r["ssim"][j] for r in per])
        rows.append({"sigma": s, "sigma_pixel": s / protocol.sigma_scale,
                     "psnr_in": _stats([r["psnr_in"][j] for r in per])[0],
                     "psnr": p, "psnr_se": p_se, "ssim": q, "ssim_se": q_se})
    return rows


def load_image_set(folder: str | Path, channels: int = 1, limit: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """The images of a folder (sorted by name; PNG/JPEG/...) as ``[(file name, (C, H, W) in [0, 1])]``."""
    from gahb.data import load_image
    from gahb.data.readers import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder at {folder}")
    paths = sorted(list_images(folder, recursive=False), key=lambda p: p.name)
    if not paths:
        raise FileNotFoundError(f"{folder} holds no image files (PNG, JPEG, ...)")
    if limit is not None:
        paths = paths[: int(limit)]
    return [(p.name, load_image(p, channels=channels)) for p in paths]


def image_set_signature(folder: str | Path, names: Sequence[str]) -> dict:
    """sha256 of each named file of ``folder``: which images a table was measured on."""
    from gahb.utils.io import file_sha256

    return {n: file_sha256(Path(folder) / n) for n in names}


def format_table(record: dict, reference: dict | None = None, label: str = "gahb") -> str:
    """A plain-text table of a record's ``per_sigma`` rows (and a reference PSNR per sigma, if given)."""
    head = f"{'sigma':>7} {'PSNR in':>8} {label + ' PSNR':>12} {'+-se':>6} {'SSIM':>7}"
    if reference:
        head += f" {'published':>10} {'diff':>7}"
    lines = [head]
    for r in record["per_sigma"]:
        line = f"{r['sigma']:>7g} {r['psnr_in']:>8.2f} {r['psnr']:>12.2f} {r['psnr_se']:>6.2f} {r['ssim']:>7.4f}"
        ref = (reference or {}).get(f"{r['sigma']:g}")
        if reference:
            line += f" {ref:>10.2f} {r['psnr'] - ref:>+7.2f}" if ref is not None else f" {'-':>10} {'':>7}"
        lines.append(line)
    return "\n".join(lines)
