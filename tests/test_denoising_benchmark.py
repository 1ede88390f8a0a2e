"""The denoising benchmark, SSIM, the SURE check and the inverse-problem baselines, by their definitions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from gahb.analysis.denoising import DenoisingProtocol, evaluate_denoiser, unit_noise
from gahb.analysis.metrics import _gaussian_window, ssim
from gahb.analysis.sure import sure_check
from gahb.sampling.inverse import baselines, best_constant
from gahb.sampling.operators import make_operator


class Scale(nn.Module):
    """f(y) = a y: a linear 'denoiser' with J = a I, tr J = a d."""

    def __init__(self, a: float, hide_jacobian: bool = False):
        super().__init__()
        self.a, self.hide = a, hide_jacobian
        self.calls = 0
        self.eval()

    def forward(self, y):
        self.calls += 1
        return self.a * (y.detach() if self.hide else y)


# -- SSIM ------------------------------------------------------------------------------------------------
def test_ssim_is_its_definition_on_one_window():
    g = torch.Generator().manual_seed(0)
    x, r = torch.rand((1, 1, 11, 11), generator=g), torch.rand((1, 1, 11, 11), generator=g)
    w = _gaussian_window(11, 1.5, torch.float64)
    w2 = (w[:, None] * w[None, :]).numpy()
    a, b = x[0, 0].double().numpy(), r[0, 0].double().numpy()
    mx, mr = (w2 * a).sum(), (w2 * b).sum()
    vx, vr = (w2 * a * a).sum() - mx**2, (w2 * b * b).sum() - mr**2
    cxr = (w2 * a * b).sum() - mx * mr
    c1, c2 = 0.01**2, 0.03**2
    ref = (2 * mx * mr + c1) * (2 * cxr + c2) / ((mx**2 + mr**2 + c1) * (vx + vr + c2))
    assert abs(float(ssim(x, r)) - ref) < 1e-12
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(ssim(x, r)) == pytest.approx(float(ssim(r, x)), abs=1e-12)


def test_ssim_falls_with_noise_and_refuses_small_images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand((1, 1, 32, 32), generator=g)
    z = torch.randn(x.shape, generator=g)
    vals = [float(ssim(x + s * z, x)) for s in (0.01, 0.05, 0.2)]
    assert vals[0] > vals[1] > vals[2]
    with pytest.raises(ValueError, match="smaller than"):
        ssim(x[..., :8, :8], x[..., :8, :8])


# -- the benchmark protocol --------------------------------------------------------------------------
def _images(n=3, size=16):
    g = torch.Generator().manual_seed(2)
    return [(f"im{i}.png", torch.rand((1, size, size), generator=g)) for i in range(n)]


def test_benchmark_numbers_follow_the_protocol():
    imgs = _images()
    proto = DenoisingProtocol(sigmas=(10, 40), sigma_scale=255, seed=3)
    rec = evaluate_denoiser(Scale(1.0), imgs, proto, progress=False)  # identity: output = noisy input
    for j, s in enumerate(proto.sigmas):
        for i, (name, x) in enumerate(imgs):
            z = unit_noise(x.shape, 3, i)
            y = (x + s / 255 * z).clamp(0, 1)  # the output is clamped, the input is not
            want = -10 * math.log10(float(((y - x) ** 2).mean()))
            assert rec["per_image"][name]["psnr"][j] == pytest.approx(want, abs=1e-4)
        assert rec["per_sigma"][j]["psnr"] == pytest.approx(np.mean([rec["per_image"][n]["psnr"][j] for n, _ in imgs]))
    # image i's noise does not depend on which noise levels are measured (paired across runs)
    one = evaluate_denoiser(Scale(1.0), imgs, DenoisingProtocol(sigmas=(40,), seed=3), progress=False)
    assert one["per_image"]["im1.png"]["psnr"][0] == rec["per_image"]["im1.png"]["psnr"][1]


def test_an_interrupted_benchmark_resumes_without_redoing_images():
    imgs = _images(3)
    proto = DenoisingProtocol(sigmas=(20,))
    saved = {}

    class Stop(Exception):
        pass

    def stop_after_first(rec):
        saved.update(json.loads(json.dumps(rec)))
        raise Stop

    with pytest.raises(Stop):
        evaluate_denoiser(Scale(0.9), imgs, proto, progress=False, on_image=stop_after_first)
    den = Scale(0.9)
    rec = evaluate_denoiser(den, imgs, proto, progress=False, partial=saved)
    assert den.calls == 2  # only the two images not yet measured
    full = evaluate_denoiser(Scale(0.9), imgs, proto, progress=False)
    assert rec["per_sigma"] == full["per_sigma"]
    # a partial record of another protocol is not used
    den = Scale(0.9)
    evaluate_denoiser(den, imgs, DenoisingProtocol(sigmas=(20,), seed=5), progress=False, partial=saved)
    assert den.calls == 3


def test_parse_sigmas_ellipsis():
    import argparse

    from gahb.cli.evaluate import parse_sigmas

    assert parse_sigmas("10,20,...,100") == [10.0 * k for k in range(1, 11)]
    assert parse_sigmas("15,25,50") == [15.0, 25.0, 50.0]
    for bad in ("10,20,...,95", "10,...,100", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_sigmas(bad)


# -- SURE ----------------------------------------------------------------------------------------------
def test_sure_check_on_a_known_linear_denoiser():
    g = torch.Generator().manual_seed(4)
    imgs = torch.rand((4, 1, 6, 6), generator=g)
    res = sure_check(Scale(0.6), imgs, [0.1, 0.3], draws=3, exact=True, progress=False)
    for row in res["per_sigma"]:
        assert row["trace"] == pytest.approx(0.6 * 36, abs=1e-9) and row["n"] == 12
    assert res["passed"]
    # A Hutchinson trace of J = a I is exact for Rademacher probes as well.
    hutch = sure_check(Scale(0.6), imgs, [0.1], draws=2, probes=4, progress=False)
    assert hutch["per_sigma"][0]["trace"] == pytest.approx(0.6 * 36, abs=1e-9)


def test_sure_check_fails_when_the_trace_is_wrong():
    """A denoiser that hides its Jacobian from autograd gets tr J = 0: SURE is then biased and the check says so."""
    g = torch.Generator().manual_seed(5)
    imgs = torch.rand((4, 1, 6, 6), generator=g)
    res = sure_check(Scale(0.6, hide_jacobian=True), imgs, [0.1, 0.3], draws=3, exact=True, progress=False)
    assert not res["passed"] and all(abs(r["z"]) > 3 for r in res["per_sigma"])


# -- inverse-problem baselines --------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["inpaint", "pixels", "superres", "cs"])
def test_baselines_are_consistent_and_minimum_norm(task):
    g = torch.Generator().manual_seed(6)
    x = torch.rand((3, 1, 16, 16), generator=g, dtype=torch.float64)
    op = make_operator(task, (1, 16, 16), seed=1)
    m = op(x)
    fills = baselines(op, m)
    for name, img in fills.items():
        if name != "bicubic":  # interpolation is not constrained to the measurements
            assert (op(img) - m).abs().max() < 1e-10, name
    pinv = fills["pseudo-inverse"]
    assert torch.all(pinv.flatten(1).norm(dim=1) <= x.flatten(1).norm(dim=1) + 1e-12)
    if task == "superres":  # block averaging: M^T m is the pixel replication, and 1 lies in its row space
        assert torch.allclose(fills["pixel replication"], pinv) and torch.allclose(fills["mean fill"], pinv)


@pytest.mark.parametrize("task", ["pixels", "cs"])
def test_best_constant_recovers_a_constant_image(task):
    op = make_operator(task, (1, 12, 12), seed=2)
    x = torch.full((2, 1, 12, 12), 0.37, dtype=torch.float64)
    assert torch.allclose(best_constant(op, op(x)), torch.tensor([0.37, 0.37], dtype=torch.float64))


def test_center_crop_takes_the_middle_window():
    from gahb.data import center_crop

    img = torch.arange(36.0).reshape(1, 6, 6)
    assert torch.equal(center_crop(img, 2), torch.tensor([[[14.0, 15.0], [20.0, 21.0]]]))
    assert center_crop(img, (2, 4)).shape == (1, 2, 4)
    with pytest.raises(ValueError, match="cannot crop 7x7"):
        center_crop(img, 7)
