"""The GPU check's CPU rehearsal (``bash scripts/gpu_check.sh --dry-run``): every step runs and checks out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_dry_run_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["failed_steps"] == [] and doc["device"] == "cpu"
    assert doc["peaks"]["float32_gflops"] > 0 and doc["peaks"]["bfloat16_gflops"] > 0
    assert doc["tests"]["returncode"] == 0 and "passed" in doc["tests"]["summary"]
    assert doc["jacobian"]["max_abs_difference"] < 1e-4 and doc["jacobian"]["speedup"] > 0
    assert doc["sampler"]["max_abs_difference"] < 1e-5  # batched and one-at-a-time: the same samples
    assert set(doc["training"]["rows"]) == {"fp32", "bf16"}
    assert all(r["images_per_s"] > 0 for r in doc["training"]["rows"].values())
    assert doc["ddp"]["processes"] == 2 and doc["ddp"]["result"]["finished"]


def test_without_a_gpu_the_full_check_refuses_and_says_why(tmp_path):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has a GPU")
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--out", str(tmp_path / "x.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr
