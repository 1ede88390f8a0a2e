"""The networks' defining properties: parameter counts (paper Table 1) and bias-free identities."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny, randomize_bn
from gahb.models import (
    BFBatchNorm2d, BFCNN, ModelConfig, UNet, build_model, count_parameters, fold_batchnorm,
    optimize_for_inference,
)


@pytest.mark.parametrize(
    "blocks, expected", [(1, 366_080), (2, 1_825_024), (3, 7_659_264), (4, 30_993_152)]
)
def test_unet_parameter_counts_match_paper_table1(blocks, expected):
    assert count_parameters(UNet(in_channels=1, num_blocks=blocks, width=64)) == expected


def test_bfcnn_parameter_count():
    assert count_parameters(BFCNN(in_channels=1, num_layers=21, width=64)) == 702_784


def test_no_additive_parameters_anywhere():
    for model in (build_model("unet-80"), build_model("bfcnn")):
        for name, mod in model.named_modules():
            assert getattr(mod, "bias", None) is None, f"{name} has a bias"


def test_bfbn_train_mode_divides_by_batch_sd_without_centering():
    bn = BFBatchNorm2d(3)
    with torch.no_grad():
        bn.gammas.fill_(2.0)
    x = torch.randn(4, 3, 5, 5) + 3.0  # a non-zero mean must survive (no centering)
    out = bn.train()(x)
    sd = torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(out, 2.0 * x / sd)
    torch.testing.assert_close(bn.running_sd, 0.9 + 0.1 * sd)
    # Eval mode: the fixed map x * gamma / running_sd, linear in x.
    bn.eval()
    torch.testing.assert_close(bn(x), 2.0 * x / bn.running_sd)
    torch.testing.assert_close(bn(-3.0 * x), -3.0 * bn(x))


def test_bfbn_gamma_init_is_small_and_clipped():
    g = BFBatchNorm2d(4096).gammas
    assert g.abs().max() <= 0.025
    assert 0.002 < g.std() < 0.005


@pytest.mark.parametrize("a", [0.1, 0.7, 3.0, 25.0])
def test_homogeneity_in_eval_mode(tiny_model, a, device):
    """f(a y) = a f(y) for a > 0 (paper eq. 6): no additive constant anywhere."""
    y = torch.rand(3, 1, 16, 16, dtype=torch.float64).to(device)
    model = tiny_model.double().to(device)
    r = model.residual(y)
    assert r.abs().max() > 1e-2, "the residual is ~0: the identity would hold trivially"
    torch.testing.assert_close(model(a * y), a * model(y), rtol=1e-10, atol=1e-12)


def test_homogeneity_fails_with_a_bias():
    """The homogeneity test can fail: adding a bias to one convolution breaks it."""
    model = make_tiny("bfcnn").double()
    conv = model.net[0]
    conv.bias = torch.nn.Parameter(torch.full((conv.out_channels,), 0.1, dtype=torch.float64))
    y = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    assert (model(3 * y) - 3 * model(y)).abs().max() > 1e-6


def test_jacobian_times_input_equals_output(tiny_model, device):
    """J(y) y = f(y) for a bias-free piecewise-linear network, via a forward-mode JVP."""
    model = tiny_model.double().to(device)
    y = torch.rand(1, 1, 16, 16, dtype=torch.float64).to(device)
    fy, jy = torch.func.jvp(model, (y,), (y,))
    torch.testing.assert_close(jy, fy, rtol=1e-10, atol=1e-12)
    assert (fy - y).abs().max() > 1e-2


def test_unet_pads_sizes_it_cannot_pool_and_stays_homogeneous():
    model = make_tiny("unet", num_blocks=3).double()
    y = torch.rand(2, 1, 28, 28, dtype=torch.float64)  # 28 is not a multiple of 8
    out = model(y)
    assert out.shape == y.shape
    torch.testing.assert_close(model(2.5 * y), 2.5 * out, rtol=1e-10, atol=1e-12)
    fy, jy = torch.func.jvp(model, (y,), (y,))
    torch.testing.assert_close(jy, fy, rtol=1e-10, atol=1e-12)


def test_unet_error_mode_refuses_unpoolable_size():
    model = UNet(num_blocks=3, width=4, pad_mode="error").eval()
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 1, 28, 28))
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_wrong_channels_or_rank_is_a_clear_error(tiny_unet):
    with pytest.raises(ValueError, match="channel"):
        tiny_unet(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        tiny_unet(torch.rand(16, 16))


def test_fold_batchnorm_is_exact_and_removes_bn(tiny_model, device):
    y = torch.rand(2, 1, 16, 16).to(device)
    tiny_model = tiny_model.to(device)
    folded = fold_batchnorm(tiny_model)
    assert not any(isinstance(m, BFBatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, BFBatchNorm2d) for m in tiny_model.modules()), "original untouched"
    torch.testing.assert_close(folded.residual(y), tiny_model.residual(y), rtol=1e-5, atol=1e-6)
    fast = optimize_for_inference(tiny_model)
    torch.testing.assert_close(fast(y), tiny_model(y), rtol=1e-5, atol=1e-6)


def test_presets_and_config_round_trip():
    cfg = ModelConfig(arch="UNet", num_blocks=2, width=16)
    assert cfg.arch == "unet"
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown architecture"):
        ModelConfig(arch="transformer")
    assert count_parameters(build_model("unet-80")) == 7_659_264


def test_multichannel_models():
    model = randomize_bn(build_model(ModelConfig(arch="unet", channels=3, num_blocks=1, width=8))).eval()
    y = torch.rand(1, 3, 8, 8)
    assert model(y).shape == y.shape


def test_train_mode_bfbn_matches_the_batch_variance_definition_and_its_gradient(device):
    """The closed-form training-mode BF-BN (two-pass statistics, analytic gradient) equals y = x gamma / sd with
    sd from Tensor.var, value and gradients, to float64 rounding; gradcheck confirms the backward."""
    from gahb.models.bfbn import _BatchScale

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 3, 5, 6, generator=g, dtype=torch.float64) * 2 + 0.7).to(device)
    gamma = torch.randn(1, 3, 1, 1, generator=g, dtype=torch.float64).to(device)
    gy = torch.randn(4, 3, 5, 6, generator=g, dtype=torch.float64).to(device)
    ref_in = [x.clone().requires_grad_(), gamma.clone().requires_grad_()]
    sd = torch.sqrt(ref_in[0].var(dim=(0, 2, 3), keepdim=True, unbiased=False) + 1e-5)
    (ref_in[0] * (ref_in[1] / sd) * gy).sum().backward()
    ours = [x.clone().requires_grad_(), gamma.clone().requires_grad_()]
    y, our_sd = _BatchScale.apply(ours[0], ours[1], 1e-5)
    (y * gy).sum().backward()
    assert torch.allclose(our_sd, sd.detach(), rtol=1e-12)
    for a, b in zip(ours, ref_in):
        assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: _BatchScale.apply(a, b, 1e-5)[0], (x.requires_grad_(), gamma.requires_grad_()))
