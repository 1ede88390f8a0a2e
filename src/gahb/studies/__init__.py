"""Studies: the paper's experiments, each composed from the library (see :mod:`gahb.studies.common`).

==============  ================================================================================
``transition``  memorization -> generalization on a real dataset (paper Figs 1, 2, 15; section 6)
``gahb_basis``  Jacobian eigenbasis of the smallest vs largest N of a transition study (Fig 3)
``calpha``      PSNR slopes on geometric C^alpha images vs the optimal alpha/(alpha+1) (Fig 4)
``manifold``    disks (a 5-D manifold): eigenvectors vs the tangent space, PSNR slope (Fig 5)
``shuffled``    the same dataset with a fixed pixel permutation: lower PSNR, slower spectra (Fig 21)
``published``   the lab's published denoisers: Set68 table, GAHB of a converged BF-CNN, its prior
==============  ================================================================================

Modules are imported lazily (:func:`get_study`) so ``gahb --help`` stays fast.
"""

from __future__ import annotations

import importlib

STUDIES: dict[str, str] = {
    "transition": "memorization -> generalization as N grows, on two disjoint training sets (Figs 1, 2, 15)",
    "gahb_basis": "Jacobian eigenbasis (GAHB) of the smallest vs largest N of a transition study: spectra, "
                  "tr J vs sigma, symmetry (Fig 3, eqs. 6-7)",
    "calpha": "C^alpha images: output-vs-input PSNR slope vs the optimal alpha/(alpha+1) (Fig 4)",
    "manifold": "disk manifold: top eigenvectors vs the 5-D tangent space, PSNR slope (Fig 5)",
    "shuffled": "pixel-shuffled dataset: PSNR curves and spectra against the unshuffled model (Fig 21)",
    "published": "the lab's published blind denoisers (needs --weights, --images): Set68 PSNR vs sigma against "
                 "the published table, the converged BF-CNN's Jacobian on natural images, its prior",
}

PRESET_NAMES = ("test", "quick", "standard", "paper")


def get_study(name: str):
    """The module implementing study ``name`` (see the module docstring for the contract)."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {sorted(STUDIES)}")
    return importlib.import_module(f"gahb.studies.{name}")


def get_config(name: str, preset: str = "quick", overrides=None):
    """The study's ``Config`` for ``preset`` with ``overrides`` (``["key=value"]`` or a dict) applied."""
    from gahb.studies.common import apply_overrides

    mod = get_study(name)
    if preset not in mod.PRESETS:
        raise ValueError(f"study {name!r} has no preset {preset!r}; choose one of {sorted(mod.PRESETS)}")
    return apply_overrides(mod.PRESETS[preset], overrides)


def run_study(name: str, preset: str = "quick", out_dir=None, overrides=None, progress: bool = True) -> dict:
    """Run study ``name`` at ``preset`` into ``out_dir`` (default ``runs/study-<name>-<preset>``)."""
    cfg = get_config(name, preset, overrides)
    out = out_dir if out_dir is not None else f"runs/study-{name}-{preset}"
    return get_study(name).run(cfg, out, progress=progress, preset=preset)
