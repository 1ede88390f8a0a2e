"""The analysis package's layout: solvers apart from networks, adjoints on the networks, figures in
gahb.report, and the old import paths still working."""

from __future__ import annotations

import subprocess
import sys

import torch

from conftest import make_tiny


def test_moved_names_still_importable_from_their_old_modules():
    from gahb.analysis import adaptive_basis, eigensolvers, jacobian, memorization, nearest, spectral

    for name in ("TopK", "TraceEstimate", "topk_eigs", "trace_exact", "trace_hutchinson"):
        assert getattr(jacobian, name) is getattr(eigensolvers, name)
    for name in ("AdaptiveBasis", "eigen_basis", "svd_basis", "basis_from_topk"):
        assert getattr(spectral, name) is getattr(adaptive_basis, name)
    for name in ("METRICS", "RunningTopK", "iter_chunks", "nearest_neighbors"):
        assert getattr(memorization, name) is getattr(nearest, name)


def test_importing_analysis_loads_neither_matplotlib_nor_networks_in_the_solvers():
    code = (
        "import sys\n"
        "import gahb.analysis.eigensolvers\n"
        "assert 'gahb.models' not in sys.modules, 'the solvers import the networks'\n"
        "import gahb.analysis.adaptive_basis, gahb.analysis.copies, gahb.analysis.memorization, gahb.analysis.patches\n"
        "import gahb.analysis.sure, gahb.analysis.denoising, gahb.report.jacobian_figures\n"
        "import gahb.report.memorization_figures\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_networks_carry_their_residual_adjoint():
    from gahb.analysis.jacobian import linearize

    for arch in ("unet", "bfcnn"):
        net = make_tiny(arch, seed=3).double().eval()
        y = torch.rand((1, 1, 16, 16), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        lin = linearize(net, y)
        u = torch.randn((2, 1, 16, 16), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        v = torch.randn((2, 1, 16, 16), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            Rv = v - lin(v)  # the frozen residual R = I - J
            RTu = lin.residual_adjoint(u)
        assert torch.allclose((Rv * u).sum(), (v * RTu).sum(), rtol=1e-10)
