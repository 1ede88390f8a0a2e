"""A study's trainings as scheduler jobs (gahb.studies.sweeps): submitit's local executor in real
subprocesses, a job that reaches its time limit and is requeued, and the same numbers as in-process."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from gahb.studies import get_config, get_study
from gahb.studies.sweeps import Executor, TrainJob, parse_executor, run_jobs

submitit = pytest.importorskip("submitit", reason="the sweep tests need submitit (pip install 'gahb[cluster]')")


def test_executor_specs_and_their_errors():
    ex = parse_executor("slurm:partition=gpu,gpus_per_job=1,timeout_min=240,max_parallel=4")
    assert (ex.kind, ex.partition, ex.gpus_per_job, ex.timeout_min, ex.max_parallel) == ("slurm", "gpu", 1, 240.0, 4)
    assert parse_executor("inline") == Executor()
    for bad, says in [("pbs", "executor must be one of"), ("local:timeout=3", "unknown option 'timeout'"),
                      ("local:timeout_min=0.05,signal_delay_s=3", "signal_delay_s must lie in"),
                      ("local:timeout_min=0", "timeout_min must be > 0"), ("local:max_parallel=-1", ">= 0"),
                      ("local:timeout_min=soon", "timeout_min")]:
        with pytest.raises(ValueError, match=says):
            parse_executor(bad)


def test_job_threads_pinned_by_the_study_else_the_cpus_of_a_job_else_a_share_of_this_machine():
    import os

    from gahb.studies.sweeps import with_threads

    job = TrainJob(run_dir="r", train={}, data_args={})
    assert with_threads(dataclasses.replace(job, threads=3), parse_executor("slurm:cpus_per_job=8"), 1).threads == 3
    assert with_threads(job, parse_executor("slurm:cpus_per_job=8"), 12).threads == 8
    assert with_threads(job, parse_executor("slurm"), 12).threads is None  # the allocation's default
    assert with_threads(job, parse_executor("local"), 2).threads == max(1, (os.cpu_count() or 1) // 2)


def test_a_bad_executor_is_refused_before_any_work(tmp_path):
    cfg = get_config("transition", "test", {"dataset": "npy:/no/such/pool.npy", "executor": "slurm:partitoin=gpu"})
    with pytest.raises(ValueError, match="unknown option 'partitoin'"):
        get_study("transition").run(cfg, tmp_path / "out", progress=False)  # the pool would be a FileNotFoundError
    assert not (tmp_path / "out" / "runs").exists()


def test_slurm_jobs_get_the_limits_of_the_spec(tmp_path, monkeypatch):
    from gahb.studies.sweeps import _submitit_executor

    fake = tmp_path / "bin"  # submitit looks for srun before it builds a SLURM executor; nothing is submitted
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    auto = _submitit_executor(parse_executor("slurm:partition=gpu,account=lab,gpus_per_job=2,cpus_per_job=8,"
                                             "timeout_min=90,signal_delay_s=120,max_timeouts=5,max_parallel=3"),
                              tmp_path)
    p = auto._executor.parameters
    assert (p["partition"], p["account"], p["gpus_per_node"], p["cpus_per_task"], p["time"]) == ("gpu", "lab", 2, 8, 90)
    assert p["signal_delay_s"] == 120 and p["array_parallelism"] == 3 and auto._executor.max_num_timeout == 5


def test_a_failed_job_is_reported_with_its_run_and_log(tmp_path):
    job = TrainJob(run_dir=str(tmp_path / "run"), train={}, data_args={"n": 1}, data="gahb.studies.sweeps:no_such_loader")
    with pytest.raises(RuntimeError, match=r"(?s)1 of 1 training jobs failed:\n.*run: job .* failed.*no_such_loader"):
        run_jobs([job], "local:poll_s=0.1", folder=tmp_path / "jobs", progress=False)


def _digests(runs: Path) -> dict:
    return {p.relative_to(runs).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(runs.glob("N*/*.safetensors"))}


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items()
                if k not in ("timing_s", "compute_s", "runs", "measure_seconds")}
    return [_without_timings(v) for v in obj] if isinstance(obj, list) else obj


def test_transition_through_the_local_executor_with_a_requeued_job_gives_the_inline_numbers(tiny_pool, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    dataset, cache = tiny_pool
    study = get_study("transition")
    settings = {"dataset": dataset, "cache_dir": cache, "ns": (1, 4), "threads": 1}  # threads pinned in both
    cfg = get_config("transition", "test", {**settings, "executor": "local:poll_s=0.2"})
    runs = tmp_path / "local" / "runs"
    jobs = study.training_jobs(cfg, runs, [1, 4])
    assert [Path(j.run_dir).name for j in jobs] == ["N1_s1", "N1_s2", "N4_s1", "N4_s2"]

    # 1. One network alone, through a 12-second time limit (the stop signal at 8 s, 4 s to exit). Its first attempt is
    #    slowed (3 s after every step of 4, a checkpoint after each), so the limit interrupts it; submitit
    #    requeues it and the second attempt, at full speed, resumes from the run's last checkpoint.
    #    Meanwhile (the job mostly sleeps) the in-process study runs: the reference numbers.
    class SlowFirstAttempt(TrainJob):  # defined here, so cloudpickle sends it by value
        def __call__(self):
            import os

            if self.attempt == 1:
                os.environ["GAHB_TRAIN_TEST_STEP_SLEEP"] = "3"
            return TrainJob.__call__(dataclasses.replace(self, train={**self.train, "checkpoint_every": 1}))

    slow = SlowFirstAttempt(**{f.name: getattr(jobs[-1], f.name) for f in dataclasses.fields(TrainJob)})
    with ThreadPoolExecutor(1) as pool:
        submitted = pool.submit(run_jobs, [slow], "local:timeout_min=0.2,signal_delay_s=4,max_timeouts=4,poll_s=0.2",
                                folder=tmp_path / "slow-job", progress=False)
        inline = study.run(get_config("transition", "test", settings), tmp_path / "inline", progress=False)
        [done] = submitted.result(timeout=300)
    assert done["finished"] and done["attempt"] >= 2 and done["resumed_from"] is not None
    log = "\n".join(p.read_text() for p in (tmp_path / "slow-job").glob("*_log.*"))
    assert "this job is timed-out" in log and "Requeued job" in log, log
    assert "attempt 1" in log and "attempt 2" in log

    # 2. The study through the local executor: the finished network is skipped, the other three are
    #    submitted as jobs side by side, and the measurements are the in-process run's, bit for bit.
    local = study.run(cfg, tmp_path / "local", progress=False)
    submitted = sorted(p.name for p in (runs / "jobs").glob("*_result.pkl"))
    assert len(submitted) == 3, submitted
    assert _digests(runs) == _digests(tmp_path / "inline" / "runs") and len(_digests(runs)) == 8
    assert json.dumps(_without_timings(local["numbers"]), sort_keys=True) == \
        json.dumps(_without_timings(inline["numbers"]), sort_keys=True)
    assert [c["status"] for c in local["claims"]] == [c["status"] for c in inline["claims"]]


@pytest.mark.parametrize("name, runs_named", [("calpha", ["alpha1", "alpha5"]), ("shuffled", ["original", "shuffled"])])
def test_a_studys_jobs_train_the_networks_the_study_then_measures(name, runs_named, tmp_path):
    study = get_study(name)
    cfg = get_config(name, "test", {"threads": 1})
    runs = tmp_path / "out" / "runs"
    done = run_jobs(study.training_jobs(cfg, runs), "inline", progress=False)
    assert [Path(d["run_dir"]).name for d in done if d["finished"]] == runs_named
    assert run_jobs(study.training_jobs(cfg, runs), "inline", progress=False) == []  # finished runs are skipped
    written = {p: p.stat().st_mtime_ns for p in runs.glob("*/*.safetensors")}
    res = study.run(cfg, tmp_path / "out", progress=False)  # a job that trained another network would be refused
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/*.safetensors")} == written  # measured, not retrained
    assert len(written) == 4 and res["claims"]
