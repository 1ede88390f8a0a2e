"""Measurement operators (orthonormal rows, adjoints) and the constrained sampler for inverse problems."""

from __future__ import annotations

import pytest
import torch

from gahb.sampling import (
    CompressiveSensing,
    Inpainting,
    LowRankGaussianDenoiser,
    RandomPixels,
    SuperResolution,
    get_config,
    make_operator,
    sample,
)




OPERATORS = {
    "inpaint": lambda: Inpainting((1, 8, 8)),
    "inpaint-rgb-corner": lambda: Inpainting((3, 6, 8), block=(2, 3), top=0, left=5),
    "pixels": lambda: RandomPixels((2, 8, 8), fraction=0.3, seed=3),
    "superres2": lambda: SuperResolution((1, 8, 8), 2),
    "superres4-rgb": lambda: SuperResolution((3, 8, 12), 4),
    "cs-dense": lambda: CompressiveSensing((1, 8, 8), fraction=0.25, seed=1, method="dense"),
    "cs-fast-even": lambda: CompressiveSensing((1, 8, 8), fraction=0.25, seed=1, method="fast"),
    "cs-fast-odd": lambda: CompressiveSensing((1, 7, 9), num_measurements=20, seed=2, method="fast"),
}


@pytest.fixture(params=sorted(OPERATORS))
def op(request):
    return OPERATORS[request.param]()


def test_rows_are_orthonormal(op):
    M = op.matrix()
    assert M.shape == (op.num_measurements, op.dim)
    assert torch.allclose(M @ M.T, torch.eye(op.num_measurements, dtype=M.dtype), atol=1e-12)


def test_adjoint_and_projections(op):
    g = torch.Generator().manual_seed(0)
    x = torch.randn((3, *op.image_shape), generator=g, dtype=torch.float64)
    m = torch.randn((3, op.num_measurements), generator=g, dtype=torch.float64)
    # <M x, m> = <x, M^T m>
    lhs = (op.forward(x) * m).sum(1)
    rhs = (x * op.adjoint(m)).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, atol=1e-12)
    # The adjoint matches the dense matrix's transpose; pseudo-inverse = adjoint.
    M = op.matrix()
    assert torch.allclose(op.adjoint(m).flatten(1), m @ M, atol=1e-12)
    assert torch.allclose(op.forward(op.pseudo_inverse(m)), m, atol=1e-12)
    # Projections: idempotent, complementary, orthogonal.
    p, q = op.project(x), op.complement(x)
    assert torch.allclose(op.project(p), p, atol=1e-12)
    assert torch.allclose(p + q, x)
    assert (p * q).flatten(1).sum(1).abs().max() < 1e-10
    assert op.forward(q).abs().max() < 1e-12


def test_float32_inputs_work(op):
    x = torch.rand((2, *op.image_shape))
    assert op(x).dtype == torch.float32
    assert torch.allclose(op.forward(op.adjoint(op(x))), op(x), atol=1e-5)


def test_superresolution_measures_block_means():
    op = SuperResolution((1, 4, 4), 2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    low = op.low_resolution(op(x))
    assert torch.equal(low, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert torch.equal(op.project(x)[0, 0, :2, :2], torch.full((2, 2), 2.5))


def test_pixel_masks():
    op = Inpainting((1, 8, 8))
    assert op.num_measurements == 64 - 16 and not op.mask[2:6, 2:6].any() and op.mask.sum() == 48
    rp = RandomPixels((3, 10, 10), fraction=0.2, seed=5)
    assert rp.num_measurements == 3 * 20  # all channels of each kept location
    assert torch.equal(rp.mask, RandomPixels((3, 10, 10), fraction=0.2, seed=5).mask)
    assert not torch.equal(rp.mask, RandomPixels((3, 10, 10), fraction=0.2, seed=6).mask)
    vis = op.mean_fill(op(torch.zeros(1, 1, 8, 8)))
    assert (vis[0, 0, 2:6, 2:6] == 0.5).all() and (vis[0, 0, 0] == 0).all()


def test_bad_operator_arguments():
    with pytest.raises(ValueError, match="divide"):
        SuperResolution((1, 9, 9), 2)
    with pytest.raises(ValueError, match="does not fit"):
        Inpainting((1, 8, 8), block=(4, 4), top=6)
    with pytest.raises(ValueError, match="fraction"):
        RandomPixels((1, 8, 8), fraction=1.5)
    with pytest.raises(ValueError, match="num_measurements"):
        CompressiveSensing((1, 4, 4), num_measurements=16)
    with pytest.raises(ValueError, match="task"):
        make_operator("deblur", (1, 8, 8))
    with pytest.raises(ValueError, match="expects images"):
        Inpainting((1, 8, 8))(torch.zeros(1, 1, 6, 6))
    with pytest.raises(ValueError, match="expects measurements"):
        Inpainting((1, 8, 8)).adjoint(torch.zeros(1, 3))


def test_make_operator_defaults():
    shape = (1, 16, 16)
    assert make_operator("superres", shape).factor == 4
    assert make_operator("cs", shape, fraction=0.5).num_measurements == 128
    assert make_operator("pixels", shape).num_measurements == round(0.1 * 256)
    assert make_operator("inpaint", shape, block=(4, 6)).block == (4, 6)


# ---------------------------------------------------------------------------------------------
# Solving inverse problems with the prior of an exact denoiser

SHAPE = (1, 8, 8)
TASKS = {
    "inpaint": Inpainting(SHAPE),
    "pixels": RandomPixels(SHAPE, fraction=0.2, seed=0),
    "superres": SuperResolution(SHAPE, 2),
    "cs": CompressiveSensing(SHAPE, fraction=0.2, seed=0),
}


@pytest.fixture(scope="module")
def prior_and_truth():
    den = LowRankGaussianDenoiser.random(SHAPE, rank=4, variances=(0.03, 0.1), seed=0)
    g = torch.Generator().manual_seed(7)
    coef = torch.randn((4, 4), generator=g, dtype=torch.float64) * den.variances.sqrt()
    truth = (den.mean + den._combine(coef)).reshape(4, *SHAPE)
    return den, truth


@pytest.mark.parametrize("noise", ["full", "unmeasured"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_restoration_keeps_measurements_and_finds_the_truth(task, noise, prior_and_truth):
    """A rank-4 Gaussian prior and >= 4 generic measurements determine the image: the
    constrained sampler must satisfy the measurements and recover the truth."""
    den, truth = prior_and_truth
    op = TASKS[task]
    m = op(truth)
    cfg = get_config("paper", dtype="float64", sigma_final=0.005, inverse_noise=noise)
    res = sample(den, SHAPE, [0, 1, 2, 3], cfg, operator=op, measurement=m, progress=False)
    assert res.ok
    assert (op(res.samples) - m).abs().max() < 1e-10  # re-projected output
    gap = (op(res.last_iterate) - m).abs().max()
    if noise == "unmeasured":
        assert gap < 1e-10  # the iterate never leaves the constraint
    else:
        assert 1e-6 < gap < 0.05  # pulled towards m, up to the remaining noise
    err = (res.samples - truth).pow(2).mean().sqrt()
    baseline = (op.mean_fill(m) - truth).pow(2).mean().sqrt()
    assert err < 0.25 * baseline, (err, baseline)

    # Without re-projection the final denoising step alone is only approximately consistent.
    raw = sample(den, SHAPE, [0, 1, 2, 3], cfg.replace(reproject=False), operator=op, measurement=m,
                 progress=False)
    gap = (op(raw.samples) - m).abs().max()
    assert 1e-10 < gap < 0.1
    assert torch.equal(raw.last_iterate, res.last_iterate)


def test_restoration_broadcasts_one_measurement_and_checks_shapes(prior_and_truth):
    den, truth = prior_and_truth
    op = TASKS["inpaint"]
    m = op(truth[:1])
    res = sample(den, SHAPE, [0, 1, 2], "fast", operator=op, measurement=m[0], progress=False)
    assert (op(res.samples.double()) - m).abs().max() < 1e-5
    assert res.summary()["operator"]["name"] == "inpaint"
    with pytest.raises(ValueError, match="measurement must be"):
        sample(den, SHAPE, [0, 1], "fast", operator=op, measurement=torch.zeros(3, op.num_measurements),
               progress=False)
    with pytest.raises(ValueError, match="operator acts on"):
        sample(den, (1, 4, 4), [0], "fast", operator=op, measurement=m, progress=False)
