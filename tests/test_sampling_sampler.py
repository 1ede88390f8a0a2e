"""The coarse-to-fine sampler (paper Algorithm 1) against closed-form denoisers."""

from __future__ import annotations

import math

import pytest
import torch

from gahb.analysis.empirical import EmpiricalDenoiser
from gahb.analysis.metrics import cosine_similarity
from gahb.sampling import (
    PRESETS,
    LowRankGaussianDenoiser,
    NoiseStreams,
    SamplerConfig,
    SamplingError,
    TrajectoryRecorder,
    get_config,
    sample,
)

SHAPE = (1, 8, 8)




def gaussian(seed=0, rank=4, mean=0.5, variances=(0.03, 0.1)):
    return LowRankGaussianDenoiser.random(SHAPE, rank=rank, variances=variances, mean=mean, seed=seed)


# ---------------------------------------------------------------------------------------------
# Configuration


def test_step_rules_and_noise_scale():
    inc = SamplerConfig(h0=0.01, step_rule="increasing")
    assert inc.step_size(1) == pytest.approx(0.01)
    assert inc.step_size(100) == pytest.approx(0.01 * 100 / (1 + 0.01 * 99))
    assert inc.step_size(10**6) == pytest.approx(1.0, abs=1e-3)
    const = SamplerConfig(h0=0.01, step_rule="constant")
    assert const.step_size(1) == const.step_size(500) == 0.01
    # gamma^2 / sigma^2 = (1 - beta h)^2 - (1 - h)^2, zero for the deterministic variant.
    assert const.noise_scale(3) == pytest.approx(math.sqrt(0.999**2 - 0.99**2))
    assert SamplerConfig(beta=1.0).noise_scale(7) == 0.0


def test_preset_evaluation_counts_match_spec():
    # ~97 steps (increasing h), ~2,995 (constant h), ~25 (beta = 1); plus the evaluation
    # whose sigma_t first falls below sigma_final.
    assert PRESETS["paper"].ideal_evaluations() == 98
    assert PRESETS["paper-constant-h"].ideal_evaluations() == 2996
    assert PRESETS["deterministic"].ideal_evaluations() == 26
    assert PRESETS["paper"].init_mean == 0.5 and PRESETS["paper"].beta == 0.1


def test_config_validation_and_overrides():
    with pytest.raises(ValueError, match="beta"):
        SamplerConfig(beta=0.0)
    with pytest.raises(ValueError, match="step_rule"):
        SamplerConfig(step_rule="cosine")
    with pytest.raises(ValueError, match="preset"):
        get_config("nope")
    with pytest.raises(ValueError, match="inverse_noise"):
        SamplerConfig(inverse_noise="measured")
    cfg = get_config("paper", beta=0.5, h0=None)
    assert cfg.beta == 0.5 and cfg.h0 == 0.01
    assert SamplerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown sampler option"):
        SamplerConfig.from_dict({"h": 0.1})


def test_sampler_spec_strings():
    assert get_config("paper:beta=0.2") == get_config("paper", beta=0.2)
    cfg = get_config("deterministic:max_steps=7,dtype=float64,reproject=false")
    assert (cfg.beta, cfg.max_steps, cfg.dtype, cfg.reproject) == (1.0, 7, "float64", False)
    assert get_config("paper:beta=0.2", beta=0.3).beta == 0.3  # keyword overrides beat the spec
    for bad, msg in (("paper:beta", "KEY=VALUE"), ("paper:gamma=1", "KEY=VALUE"), ("paper:beta=x", "not a float"),
                     ("paper:reproject=maybe", "not a bool"), ("nope:beta=0.2", "preset"),
                     ("paper:beta=2", "beta")):
        with pytest.raises(ValueError, match=msg):
            get_config(bad)


# ---------------------------------------------------------------------------------------------
# Known answers


def test_gaussian_prior_mean_and_variance():
    """With the exact blind denoiser of N(mu, U diag(lam) U^T), samples have that mean and covariance.

    A small constant step is used: it tracks the prior within sampling error (the increasing step
    is checked separately below).
    """
    den = gaussian(mean=0.3)  # init_mean 0.5 != prior mean: the sampler has to move the mean
    n = 384
    cfg = get_config("paper", step_rule="constant", h0=0.05, beta=0.5, sigma_final=0.02, max_steps=2000,
                     dtype="float64")
    res = sample(den, (n, *SHAPE), seeds=0, config=cfg, progress=False)
    assert res.ok
    # The injected noise keeps the effective noise shrinking by (1 - beta h) per step; too much or
    # too little noise shows up here first (the variances themselves are robust to it).
    assert abs(res.evaluations.double().mean() / cfg.ideal_evaluations() - 1) < 0.1
    c = den.coefficients(res.samples)  # (n, k) coordinates along the prior's directions
    lam = den.variances
    # Means: within 4 standard errors per direction.
    assert (c.mean(0).abs() < 4 * (lam / n).sqrt()).all(), c.mean(0)
    # Variances: the final denoising step shrinks by lam / (lam + sigma_T^2) <= 1.5%.
    ratio = c.var(0) / lam
    assert ((ratio - 1).abs() < 4 * math.sqrt(2 / n)).all(), ratio
    assert abs(ratio.mean().item() - 1) < 4 * math.sqrt(2 / (n * len(lam))), ratio
    # Nothing outside the prior's support survives the final denoising step.
    outside = res.samples.reshape(n, -1).double() - den.mean - den._combine(c)
    assert outside.abs().max() < 1e-10
    assert res.samples.reshape(n, -1).double().mean(0).sub(0.3).abs().max() < 0.05


def test_gaussian_prior_paper_preset_variance_bias():
    """The increasing step (h_t -> 1) removes some variance: measured ~0.8 of the prior's.

    This documents a property of Algorithm 1 with large steps, not of this implementation: the
    per-step variance deficit is h_t^2 sigma_t^2 lam / (lam + sigma_t^2) (second order in h).
    """
    den = gaussian()
    n = 384
    res = sample(den, (n, *SHAPE), seeds=0, config=get_config("paper", dtype="float64"), progress=False)
    assert res.ok
    assert 80 <= res.evaluations.double().mean() <= 110
    ratio = (den.coefficients(res.samples).var(0) / den.variances).mean().item()
    assert 0.6 < ratio < 0.95, ratio
    c = den.coefficients(res.samples)
    assert (c.mean(0).abs() < 4 * (den.variances / n).sqrt()).all()


def test_single_training_image_is_reproduced():
    """With the memorising denoiser of one image, every sample converges to that image."""
    g = torch.Generator().manual_seed(1)
    img = torch.rand((1, 1, 12, 12), generator=g)
    den = EmpiricalDenoiser(img)  # blind
    res = sample(den, (6, 1, 12, 12), seeds=0, config="paper", progress=False)
    assert res.ok
    cos = cosine_similarity(res.samples, img.expand(6, -1, -1, -1))
    assert (cos > 0.99).all(), cos
    assert (res.evaluations < 200).all()


def test_few_training_images_each_sample_is_one_of_them():
    g = torch.Generator().manual_seed(2)
    train = torch.rand((3, 1, 10, 10), generator=g)
    res = sample(EmpiricalDenoiser(train), (8, 1, 10, 10), seeds=0, config="paper", progress=False)
    assert res.ok
    cos = torch.stack([cosine_similarity(res.samples, t.expand(8, -1, -1, -1)) for t in train], 1)
    assert (cos.max(1).values > 0.99).all(), cos


# ---------------------------------------------------------------------------------------------
# Reproducibility


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_seeded_samples_are_batch_invariant_exactly(dtype):
    """Sample k with seed s is bit-identical alone, in a batch of 64, in chunks, at any position."""
    den = gaussian()
    cfg = get_config("paper", dtype=dtype)
    seeds = [int(s) for s in torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:64]]
    batch = sample(den, SHAPE, seeds, cfg, progress=False)
    chunked = sample(den, SHAPE, seeds[::-1], cfg, progress=False, batch_size=5)
    assert len(set(batch.steps.tolist())) > 1  # samples stop at different steps
    for k in (0, 17, 63):
        alone = sample(den, SHAPE, [seeds[k]], cfg, progress=False)
        assert torch.equal(alone.samples[0], batch.samples[k])
        assert torch.equal(alone.last_iterate[0], batch.last_iterate[k])
        assert alone.steps[0] == batch.steps[k] and alone.sigma[0] == batch.sigma[k]
        assert torch.equal(chunked.samples[63 - k], batch.samples[k])


def test_network_batch_invariance_to_float_tolerance():
    """A CNN's batched convolution can differ from batch-1 in the last bits (measured ~1e-6 on
    CPU), so network samples agree to float tolerance; the injected noise is identical."""
    from conftest import make_tiny

    net = make_tiny("unet", width=8)
    cfg = get_config("fast", max_steps=15)
    rec_b, rec_a = TrajectoryRecorder(keep_x=False), TrajectoryRecorder(keep_x=False)
    noise_b, noise_a = {}, {}

    def grab(store, rec):
        def cb(info):
            rec(info)
            for j, i in enumerate(info["index"].tolist()):
                store[(i, info["step"])] = info["noise"][j]
        return cb

    with pytest.warns(RuntimeWarning):
        batch = sample(net, (8, 1, 16, 16), 0, cfg, callback=grab(noise_b, rec_b), progress=False)
        alone = sample(net, (1, 16, 16), [3], cfg, callback=grab(noise_a, rec_a), progress=False)
    for (i, t), z in noise_a.items():
        assert torch.equal(z, noise_b[(3, t)])
    assert torch.allclose(alone.samples[0], batch.samples[3], atol=1e-4)


def test_two_denoisers_get_identical_initial_images_and_noises():
    """Paired comparison (Fig 2): same seeds -> same x_0 and the same z_t at every step."""
    den1, den2 = gaussian(seed=0), gaussian(seed=1, variances=(0.01, 0.2))
    seeds = [5, 6, 7, 8, 9, 10]

    def run(den):
        log = {}

        def cb(info):
            for j, i in enumerate(info["index"].tolist()):
                log[(i, info["step"])] = (info["x"][j].clone(), info["noise"][j].clone())
        res = sample(den, SHAPE, seeds, "paper", callback=cb, progress=False)
        return res, log

    r1, log1 = run(den1)
    r2, log2 = run(den2)
    assert not torch.equal(r1.steps, r2.steps)  # different stopping steps per sample
    common = set(log1) & set(log2)
    assert len(common) > 300
    for key in common:
        assert torch.equal(log1[key][1], log2[key][1])
    for i in range(len(seeds)):
        assert torch.equal(log1[(i, 1)][0], log2[(i, 1)][0])  # same x_0
    assert not torch.allclose(r1.samples, r2.samples)


def test_initial_image_and_noise_streams_are_documented_draws():
    """x_0 = init_mean + sigma_0 z_0 with z_0 the first float32 draw of Generator(seed); passing
    that x_0 explicitly gives the same samples (the stream still consumes z_0)."""
    den = gaussian()
    cfg = get_config("paper", dtype="float64", sigma_0=0.8, init_mean=0.4)
    seeds = [11, 12, 13]
    z0 = torch.stack([torch.randn(SHAPE, generator=torch.Generator().manual_seed(s)) for s in seeds])
    assert torch.equal(NoiseStreams(seeds, SHAPE).draw([0, 1, 2]), z0)
    x0 = z0.double() * 0.8 + 0.4
    a = sample(den, SHAPE, seeds, cfg, progress=False)
    b = sample(den, x0, seeds, cfg, progress=False)
    assert torch.equal(a.samples, b.samples)


# ---------------------------------------------------------------------------------------------
# Callback, guards


def test_callback_and_trajectory_recorder():
    den = gaussian()
    rec = TrajectoryRecorder(every=10)
    res = sample(den, SHAPE, [1, 2], "paper", callback=rec, progress=False)
    for i in range(2):
        tr = rec[i]
        assert tr["steps"][0] == 1 and tr["steps"][-1] == res.evaluations[i]
        assert tr["sigma"][-1] == pytest.approx(res.sigma[i].item())
        assert tr["sigma"][-1] < 0.05 <= tr["sigma"][-2]
        assert torch.allclose(tr["denoised"][-1], res.samples[i])
        assert torch.allclose(tr["x"][-1], res.last_iterate[i])
        assert tr["sigma"][0] > 0.5  # starts at ~sigma_0


def test_result_counts_and_summary():
    res = sample(gaussian(), SHAPE, [0, 1, 2], "deterministic", progress=False)
    assert torch.equal(res.evaluations, res.steps + 1)
    assert (res.sigma < 0.05).all() and res.status == ["converged"] * 3
    s = res.summary()
    assert s["num_samples"] == 3 and s["samples"][1]["seed"] == 1 and s["config"]["beta"] == 1.0


class Unstable(torch.nn.Module):
    """The Gaussian denoiser, except on images whose corner pixel is marked: there it blows up
    (flag 1) or returns NaN (flag 2)."""

    def __init__(self, den):
        super().__init__()
        self.den = den

    def forward(self, y):
        out = self.den(y)
        corner = y[:, 0, 0, 0]
        grow = (corner > 50).view(-1, 1, 1, 1)
        out = torch.where(grow, y + 3 * (y - 0.5), out)
        return torch.where((corner < -50).view(-1, 1, 1, 1), torch.full_like(out, float("nan")), out)


def test_divergence_is_flagged_and_the_rest_kept():
    den = gaussian()
    cfg = get_config("paper", dtype="float64")
    seeds = list(range(6))
    clean = sample(den, SHAPE, seeds, cfg, progress=False)
    z0 = NoiseStreams(seeds, SHAPE).draw(range(6)).double()
    x0 = z0 + 0.5
    x0[1, 0, 0, 0] = 100.0  # diverges
    x0[4, 0, 0, 0] = -100.0  # NaN
    with pytest.warns(RuntimeWarning, match=r"diverged.*samples \[1, 4\]"):
        res = sample(Unstable(den), x0, seeds, cfg, progress=False)
    assert res.status[1] == res.status[4] == "diverged"
    assert res.failed == [1, 4] and res.diverged.tolist() == [False, True, False, False, True, False]
    good = [0, 2, 3, 5]
    assert torch.equal(res.samples[good], clean.samples[good])
    assert (res.evaluations[[1, 4]] == 1).all()

    with pytest.raises(SamplingError, match=r"samples \[1, 4\]") as err:
        sample(Unstable(den), x0, seeds, cfg, progress=False, raise_on_failure=True)
    assert torch.equal(err.value.result.samples[good], clean.samples[good])


def test_max_steps_is_flagged():
    cfg = get_config("paper", max_steps=5)
    with pytest.warns(RuntimeWarning, match="max_steps=5"):
        res = sample(gaussian(), SHAPE, [0, 1], cfg, progress=False)
    assert res.status == ["max_steps", "max_steps"] and (res.evaluations == 5).all()
    assert res.hit_max_steps.all() and (res.sigma > 0.05).all()


def test_bad_arguments():
    den = gaussian()
    with pytest.raises(ValueError, match="seeds"):
        sample(den, (3, *SHAPE), [1, 2], progress=False)
    with pytest.raises(ValueError, match="number of samples"):
        sample(den, SHAPE, 4, progress=False)
    with pytest.raises(ValueError, match="shape"):
        sample(den, (8, 8), [0], progress=False)
    with pytest.raises(ValueError, match="operator"):
        sample(den, SHAPE, [0], measurement=torch.zeros(1, 3), progress=False)
    from conftest import make_tiny

    with pytest.raises(ValueError, match="eval"):
        sample(make_tiny("bfcnn").train(), SHAPE, [0], progress=False)
