"""Shared fixtures: tiny bias-free networks whose BF-BN layers hold non-trivial eval statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gahb.models import BFBatchNorm2d, ModelConfig, build_model


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BF-BN layer O(1) gains and random running sds, as after training.

    Freshly initialised gains are ~0.003, which makes the residual almost zero and identities
    such as f(a y) = a f(y) trivially true; tests must not pass for that reason.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BFBatchNorm2d):
                m.gammas.copy_(0.5 + torch.rand(m.gammas.shape, generator=g))
                m.running_sd.copy_(0.5 + torch.rand(m.running_sd.shape, generator=g))
    return model


def make_tiny(arch: str = "unet", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    if arch == "unet":
        cfg = ModelConfig(arch="unet", num_blocks=kw.pop("num_blocks", 2), width=kw.pop("width", 8), **kw)
    else:
        cfg = ModelConfig(arch="bfcnn", num_layers=kw.pop("num_layers", 5), width=kw.pop("width", 8), **kw)
    return randomize_bn(build_model(cfg), seed).eval()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every device this machine has: the CPU always, CUDA when present (as deepinv's tests do). Numeric
    identities take it; bit-identity and timing tests stay on the CPU. On CUDA, TensorFloat-32 is off
    during the test: its 10-bit mantissas would break tolerances set for float32 arithmetic."""
    dev = torch.device(request.param)
    if dev.type != "cuda":
        yield dev
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield dev
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(params=["unet", "bfcnn"])
def tiny_model(request):
    """A tiny eval-mode network of each architecture."""
    return make_tiny(request.param)


@pytest.fixture
def tiny_unet():
    return make_tiny("unet")


@pytest.fixture
def tiny_bfcnn():
    return make_tiny("bfcnn")


@pytest.fixture(autouse=True)
def one_thread():
    """Run every test with one intra-op thread.

    The tests use tiny tensors, for which a second OpenMP thread costs more than it gains (and on
    a busy 2-core machine its spin-waiting made some tests ~100x slower). Tests that measure or
    depend on threading set it themselves.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory):
    """``(dataset spec, cache dir)`` of a pool of 90 distinct 16x16 images (nothing is removed by
    deduplication), for the studies' test presets."""
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    x = np.zeros((90, 16, 16), np.float32)
    for i in range(len(x)):  # distinct squares on a faint noise floor
        a, b = rng.integers(1, 10, 2)
        x[i, a:a + 6, b:b + 6] = rng.uniform(0.3, 1.0)
        x[i] += rng.uniform(0, 0.05, (16, 16)).astype(np.float32)
    np.save(root / "pool.npy", np.clip(x, 0, 1))
    return f"npy:{root / 'pool.npy'}", str(root / "cache")
