"""Kill-and-resume: a run killed at any moment resumes to the same weights as an uninterrupted run.

The killed runs are real processes that receive SIGKILL (no cleanup, no atexit): once from
themselves right after an optimizer step, once in the middle of writing ``state.pt`` and once in
the middle of writing ``model_ema.safetensors`` (each leaving a torn temporary file), once from the
test at an arbitrary moment; in process, a run that dies between a metrics line and its checkpoint
and a metrics line torn in half. The runs keep an EMA of their weights. On the CPU with one thread the
resumed weights, EMA weights, optimizer state and logged losses are bit-identical to the
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from gahb.models import ModelConfig
from gahb.training import load_state, make_config, read_metrics, train
from gahb.training import loop
from gahb.training.checkpoint import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME
from gahb.training.run_dir import LOCK_NAME, METRICS_NAME, STATE_NAME, RunDir, RunFolderBusy

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    import torch.nn.functional as F
    from gahb.models import ModelConfig
    from gahb.training import make_config, train

    def smooth(n, seed):
        g = torch.Generator().manual_seed(seed)
        return F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=16, mode="bilinear", align_corners=False)

    cfg = make_config("quick", model=ModelConfig(arch="unet", num_blocks=2, width=8), steps=30, batch_size=8,
                      images_per_epoch=84, lr=5e-3, eval_images=8, eval_every=1, eval_unit="epoch",
                      checkpoint_every=4, ema_halflife_kimg=0.1, ema_rampup_ratio=0.5, ema_bn_batches=2)
    res = train(cfg, smooth(40, 0), smooth(8, 1), sys.argv[1], progress=False)
    print("RESULT", res.step, res.resumed_from, res.finished)
    """
)

TIMING = ("images_per_s", "wall_time")


def _cfg():
    return make_config("quick", model=ModelConfig(arch="unet", num_blocks=2, width=8), steps=30, batch_size=8,
                       images_per_epoch=84, lr=5e-3, eval_images=8, eval_every=1, eval_unit="epoch",
                       checkpoint_every=4, ema_halflife_kimg=0.1, ema_rampup_ratio=0.5, ema_bn_batches=2)


def _data():
    import torch.nn.functional as F

    def smooth(n, seed):
        g = torch.Generator().manual_seed(seed)
        return F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=16, mode="bilinear", align_corners=False)

    return smooth(40, 0), smooth(8, 1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in this process, one thread like the subprocesses)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("ref")
        x, xt = _data()
        res = train(_cfg(), x, xt, out, progress=False)
        assert res.finished and res.step == 30
        return load_state(out), read_metrics(out)
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "run_train.py"
    path.write_text(SCRIPT)
    return path


def _env(**hooks):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for k in list(env):
        if k.startswith(("GAHB_TRAIN_TEST_", "GAHB_TEST_")):
            del env[k]
    env.update({k: str(v) for k, v in hooks.items()})
    return env


def _run(script, out, **hooks) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), str(out)], env=_env(**hooks), capture_output=True,
                          text=True, timeout=300)


class _Interrupted(Exception):
    """Stands in for a kill in an in-process run; carries the interrupted trainer."""


def _train_interrupted(monkeypatch, stop_step, *args, **kwargs):
    """``train(*args, **kwargs)`` interrupted right after optimizer step ``stop_step``; returns its trainer."""
    real_step = loop._Trainer._train_step

    def step_then_stop(trainer):
        images = real_step(trainer)
        if trainer.step == stop_step:
            raise _Interrupted(trainer)
        return images

    with monkeypatch.context() as m:
        m.setattr(loop._Trainer, "_train_step", step_then_stop)
        with pytest.raises(_Interrupted) as stopped:
            train(*args, **kwargs)
    return stopped.value.args[0]


def _assert_release_matches_state(out):
    """The release files hold the networks of ``state.pt``: raw weights and EMA weights (running_sd included)."""
    from safetensors.torch import load_file

    st = load_state(out)
    assert json.loads((out / CONFIG_NAME).read_text())["progress"]["step"] == st["step"]
    for name, key in ((WEIGHTS_NAME, "model"), (EMA_WEIGHTS_NAME, "ema")):
        saved = load_file(str(out / name))
        assert saved.keys() == st[key].keys()
        assert all(torch.equal(saved[k], v) for k, v in st[key].items()), f"{name} differs from state.pt"


def _assert_same_as_reference(out, reference):
    ref_state, ref_metrics = reference
    st = load_state(out)
    assert st["step"] == 30 and st["finished"]
    for k, v in ref_state["model"].items():
        assert torch.equal(st["model"][k], v), f"weights differ at {k}"
    assert ref_state["ema"].keys() == st["ema"].keys()
    for k, v in ref_state["ema"].items():
        assert torch.equal(st["ema"][k], v), f"EMA weights differ at {k}"
    _assert_release_matches_state(out)
    ref_opt, opt = ref_state["optimizer"]["state"], st["optimizer"]["state"]
    for i in ref_opt:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt[i][k], ref_opt[i][k]), f"optimizer {k} differs for param {i}"
    for k in ("data", "noise"):
        assert torch.equal(st["rng"][k], ref_state["rng"][k])
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [m["step"] for m in ref_metrics]
    for m, r in zip(metrics, ref_metrics):
        assert {k: v for k, v in m.items() if k not in TIMING} == {k: v for k, v in r.items() if k not in TIMING}


def test_in_process_interrupt_and_resume_is_bit_identical(reference, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    x, xt = _data()
    part = _train_interrupted(monkeypatch, 13, _cfg(), x, xt, tmp_path, progress=False)  # last checkpoint: step 12
    assert not part.finished and part.step == 13
    assert load_state(tmp_path)["step"] == 12
    res = train(_cfg(), x, xt, tmp_path, progress=False)
    assert res.resumed_from == 12 and res.finished
    _assert_same_as_reference(tmp_path, reference)


def test_sigkill_after_a_step_and_during_a_checkpoint_write(reference, script, tmp_path):
    # 1) SIGKILL right after step 17: mid-epoch (10 steps per epoch), one step after the checkpoint at 16.
    killed = _run(script, tmp_path, GAHB_TRAIN_TEST_KILL_AT_STEP=17)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    st = load_state(tmp_path)
    assert st["step"] == 16 and not st["finished"] and st["batch_in_epoch"] == 6 and st["perm"] is not None
    # 2) Resume, and SIGKILL half-way through writing the second state after resuming (step 24;
    #    checkpoints at 20 (end of epoch 2) and 24), leaving a torn temporary file.
    killed = _run(script, tmp_path, GAHB_TEST_KILL_AT_WRITE="state.pt:torn:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    torn = list(tmp_path.glob(".state.pt.*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size < (tmp_path / STATE_NAME).stat().st_size * 0.75
    assert load_state(tmp_path)["step"] == 20  # the previous checkpoint is intact and loadable
    # 3) Resume, and SIGKILL half-way through writing model_ema.safetensors at the next checkpoint
    #    (step 24): state.pt and model.safetensors are new, model_ema.safetensors and config.json old.
    killed = _run(script, tmp_path, GAHB_TEST_KILL_AT_WRITE="model_ema.safetensors:torn:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(tmp_path.glob(".model_ema.safetensors.*.tmp"))) == 1
    assert load_state(tmp_path)["step"] == 24
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["progress"]["step"] == 20
    # 4) Resume, which repairs the release from state.pt, and SIGKILL right after the next step.
    killed = _run(script, tmp_path, GAHB_TRAIN_TEST_KILL_AT_STEP=25)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not list(tmp_path.glob(".*.tmp")) and load_state(tmp_path)["step"] == 24
    _assert_release_matches_state(tmp_path)
    # 5) Resume to the end: same weights, optimizer state, generators and metrics as never killed.
    done = _run(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "RESULT 30 24 True" in done.stdout
    assert not list(tmp_path.glob(".*.tmp"))
    _assert_same_as_reference(tmp_path, reference)


def test_sigkill_at_an_arbitrary_moment(reference, script, tmp_path):
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=_env(GAHB_TRAIN_TEST_STEP_SLEEP=0.05),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (tmp_path / STATE_NAME).exists() and load_state(tmp_path)["step"] >= 8:
                break
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        proc.kill()
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    step = load_state(tmp_path)["step"]
    assert 8 <= step < 30
    done = _run(script, tmp_path)
    assert done.returncode == 0, done.stderr
    _assert_same_as_reference(tmp_path, reference)


def test_failed_state_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / STATE_NAME
    run_dir = RunDir(tmp_path)
    run_dir.save_state({"step": 1, "w": torch.arange(1000.0)})

    def torn_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        run_dir.save_state({"step": 2, "w": torch.zeros(1000)})
    monkeypatch.undo()
    st = torch.load(path, weights_only=True)
    assert st["step"] == 1 and torch.equal(st["w"], torch.arange(1000.0))
    assert [p.name for p in tmp_path.iterdir()] == [STATE_NAME]


def test_a_second_process_stops_at_a_live_run_and_a_killed_holder_frees_the_folder(script, tmp_path):
    """The run folder's lock: training into a folder that a live process trains into fails with a message
    naming that process and changes no file (even with resume="overwrite"); once the holder is SIGKILLed
    the folder is free and the run resumes."""
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=_env(GAHB_TRAIN_TEST_STEP_SLEEP=0.05),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    x, xt = _data()
    try:
        deadline = time.time() + 120
        while not ((tmp_path / STATE_NAME).exists() and load_state(tmp_path)["step"] >= 4):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != METRICS_NAME}
        with pytest.raises(RunFolderBusy, match=rf"in use: pid {proc.pid} .*{LOCK_NAME}"):
            train(_cfg(), x, xt, tmp_path, progress=False, resume="overwrite")
        assert proc.poll() is None  # the holder was not disturbed ...
        assert {p.name for p in tmp_path.iterdir()} >= set(before)  # ... and nothing of its run was deleted
        proc.kill()
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    res = train(_cfg(), x, xt, tmp_path, progress=False)  # the OS released the lock with its holder
    assert res.finished and res.resumed_from is not None and res.resumed_from >= 4
    again = RunDir(tmp_path)  # and train() released it on return (flock conflicts within one process too)
    again.lock()
    again.unlock()


def test_the_lock_is_released_when_training_stops_with_an_error(tmp_path, monkeypatch):
    """An exception out of train() releases the folder even while the trainer is still referenced (by the
    exception here; by a traceback in a notebook), so retrying in the same process works."""
    x, xt = _data()
    trainer = _train_interrupted(monkeypatch, 5, _cfg(), x, xt, tmp_path, progress=False)
    assert trainer.step == 5  # alive, with its run folder
    again = RunDir(tmp_path)
    again.lock()
    again.unlock()


def test_a_kill_between_a_metrics_line_and_its_checkpoint_duplicates_no_line(reference, tmp_path, monkeypatch):
    """The evaluation at step 20 appends its metrics line, then the run dies writing that checkpoint. The
    resume (from step 16) drops the line and recomputes it: the finished log has it once."""
    torch.set_num_threads(1)
    x, xt = _data()
    real = RunDir.save_state

    def die_at_20(self, state):
        if state["step"] == 20:
            raise _Interrupted(None)
        return real(self, state)

    with monkeypatch.context() as m:
        m.setattr(RunDir, "save_state", die_at_20)
        with pytest.raises(_Interrupted):
            train(_cfg(), x, xt, tmp_path, progress=False)
    assert load_state(tmp_path)["step"] == 16
    assert read_metrics(tmp_path)[-1]["step"] == 20  # written before its checkpoint
    res = train(_cfg(), x, xt, tmp_path, progress=False)
    assert res.resumed_from == 16 and res.finished
    _assert_same_as_reference(tmp_path, reference)


def test_a_torn_metrics_line_loses_no_later_line(reference, tmp_path, monkeypatch):
    """A kill in the middle of an append leaves half a line without its newline. The resume rewrites the
    log without it, so the next line is not glued onto it (and lost)."""
    torch.set_num_threads(1)
    x, xt = _data()
    _train_interrupted(monkeypatch, 13, _cfg(), x, xt, tmp_path, progress=False)  # last checkpoint: step 12
    with open(tmp_path / METRICS_NAME, "a", encoding="utf-8") as fh:
        fh.write('{"step": 13, "train_lo')
    res = train(_cfg(), x, xt, tmp_path, progress=False)
    assert res.resumed_from == 12 and res.finished
    _assert_same_as_reference(tmp_path, reference)


KILL_POINTS = [(name, phase) for name in (STATE_NAME, WEIGHTS_NAME, EMA_WEIGHTS_NAME, CONFIG_NAME)
               for phase in ("before", "written", "renamed")]


@pytest.fixture(scope="module")
def killed_at_writes(tmp_path_factory):
    """The 12 runs of KILL_POINTS, each killed at its point, started side by side (the cores are
    shared; the kills are at a write, not at a time): ``{(name, phase): (folder, returncode, stderr)}``."""
    root = tmp_path_factory.mktemp("killed")
    script = root / "run_train.py"
    script.write_text(SCRIPT)
    procs = {}
    for name, phase in KILL_POINTS:
        out = root / f"{name}-{phase}"
        procs[name, phase] = (out, subprocess.Popen([sys.executable, str(script), str(out)], text=True,
                                                    env=_env(GAHB_TEST_KILL_AT_WRITE=f"{name}:{phase}:10"),
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    done = {}
    for k, (out, proc) in procs.items():
        stderr = proc.communicate(timeout=300)[1]  # reads while waiting: a full stderr pipe cannot block the run
        done[k] = (out, proc.returncode, stderr)
    return done


@pytest.mark.parametrize("name, phase", KILL_POINTS, ids=[f"{n}-{p}" for n, p in KILL_POINTS])
def test_sigkill_at_every_point_of_a_checkpoint_write(reference, killed_at_writes, name, phase):
    """SIGKILL at the last checkpoint (step 30, the 10th write of each file): before each file's temporary
    write, after it (not renamed), after its rename; state.pt's rename is the point between the state and
    the release. The resume yields the uninterrupted run and a release that matches state.pt: from step 28
    it trains again; from the finished state it only repairs the release."""
    tmp_path, returncode, stderr = killed_at_writes[name, phase]
    assert returncode == -signal.SIGKILL, stderr
    assert load_state(tmp_path)["step"] == (30 if name != STATE_NAME or phase == "renamed" else 28)
    torch.set_num_threads(1)
    x, xt = _data()
    res = train(_cfg(), x, xt, tmp_path, progress=False)
    assert res.finished and not list(tmp_path.glob(".*.tmp"))
    _assert_same_as_reference(tmp_path, reference)


def test_a_full_disk_stops_training_with_a_clear_error_and_keeps_the_last_checkpoint(reference, tmp_path,
                                                                                     monkeypatch):
    """The disk fills while state.pt is written at step 8 (a patched torch.save writes a few bytes, then fails
    with ENOSPC): training stops with an error naming the file and saying the previous one is unchanged;
    the step-4 checkpoint is intact, and after space is freed the resume gives the uninterrupted run."""
    import errno

    from gahb.utils.io import WriteError

    torch.set_num_threads(1)
    x, xt = _data()
    real, calls = torch.save, []

    def full_disk(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == 3:  # state.pt at steps 0, 4, then 8
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        with pytest.raises(WriteError, match=r"could not write .*state\.pt \(No space left on device\); "
                                             r"the previous state\.pt is unchanged"):
            train(_cfg(), x, xt, tmp_path, progress=False)
    assert load_state(tmp_path)["step"] == 4 and not list(tmp_path.glob(".*.tmp"))
    _assert_release_matches_state(tmp_path)
    res = train(_cfg(), x, xt, tmp_path, progress=False)
    assert res.resumed_from == 4 and res.finished
    _assert_same_as_reference(tmp_path, reference)
