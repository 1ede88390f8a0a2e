"""Synthetic image datasets of the paper: C^alpha images, disks, sinusoids, rescalings, shuffles.

Every generator is seeded, vectorised over images and returns float32 tensors (N, 1, H, W) on the
pixel scale [0, 1] (the gahb denoiser contract). The seeding contract (same seed, same images,
whatever the chunking; smaller datasets are prefixes of larger ones) is in :mod:`.seeding`.

Generators, one module each:

* :mod:`.calpha`: :func:`calpha_images`, geometric C^alpha images, two variants (paper section 4,
  Fig. 4; App. E, Algorithm 2).
* :mod:`.disks`: :func:`disk_images`, :func:`sample_disk_params`, :func:`disk_tangent_space`: the
  5-dimensional manifold of disks and its tangent space (paper section 4, Fig. 5).
* :mod:`.sinusoids`: :func:`sinusoid_images`, :func:`sample_sinusoid_params`: unit-frequency
  sinusoids (paper Fig. 20).
* :mod:`.rescaled`: :func:`rescaled_image_dataset`: one image and its positive rescalings (paper
  Fig. 19).
* :mod:`.pixel_shuffle`: :class:`PixelShuffle`: one fixed pixel permutation for "shuffled"
  datasets (paper App. C.3, Fig. 21).
* :mod:`.strokes`: :func:`stroke_images`, :func:`sample_stroke_params`: sparse bright strokes (not
  from the paper).
* :mod:`.registry`: :func:`synthetic_dataset`, :func:`iter_synthetic`, :class:`SyntheticConfig`,
  :func:`parse_synthetic_spec`: a uniform entry point by name, streaming, a JSON-able config and
  the ``"calpha:alpha=2,size=80"`` spec-string parser.
"""

from .calpha import (
    CALPHA_VARIANTS,
    CONTRAST_MODES,
    CalphaParts,
    calpha_backgrounds,
    calpha_contour_rows,
    calpha_contours,
    calpha_images,
    smooth_mask_2x2,
)
from .disks import DISK_PARAM_NAMES, DiskTangent, disk_images, disk_tangent_space, sample_disk_params
from .pixel_shuffle import PixelShuffle
from .registry import SYNTHETIC_NAMES, SyntheticConfig, iter_synthetic, parse_synthetic_spec, synthetic_dataset
from .rescaled import rescaled_image_dataset
from .seeding import BLOCK, Size
from .sinusoids import sample_sinusoid_params, sinusoid_images
from .strokes import sample_stroke_params, stroke_images

__all__ = [
    "BLOCK",
    "CALPHA_VARIANTS",
    "CONTRAST_MODES",
    "DISK_PARAM_NAMES",
    "SYNTHETIC_NAMES",
    "CalphaParts",
    "DiskTangent",
    "PixelShuffle",
    "Size",
    "SyntheticConfig",
    "calpha_backgrounds",
    "calpha_contour_rows",
    "calpha_contours",
    "calpha_images",
    "disk_images",
    "disk_tangent_space",
    "iter_synthetic",
    "parse_synthetic_spec",
    "rescaled_image_dataset",
    "sample_disk_params",
    "sample_sinusoid_params",
    "sample_stroke_params",
    "sinusoid_images",
    "smooth_mask_2x2",
    "stroke_images",
    "synthetic_dataset",
]
