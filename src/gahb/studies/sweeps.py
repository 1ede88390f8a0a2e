"""Sweeps of independent trainings: in this process, as local subprocesses, or as SLURM jobs (submitit).

A study's networks are independent of one another (the transition study trains two per training-set
size N, section 6.2), so a cluster can train them side by side. The study's ``executor`` setting says
where they run, as ``KIND`` or ``KIND:key=value,...`` (the options are the fields of :class:`Executor`)::

    inline                                   one after another in the study's own process (the default)
    local:max_parallel=2                     submitit's local executor: one subprocess per network
    slurm:partition=gpu,gpus_per_job=1,timeout_min=240
                                             submitit's AutoExecutor on SLURM: one job per network

Each network is a :class:`TrainJob`: a small picklable callable that rebuilds its training data in
the job's process and calls :func:`gahb.training.train` with ``resume="auto"`` in the network's run
folder. When the scheduler warns a job of its time limit (or preempts it), submitit calls
:meth:`TrainJob.checkpoint`, which requeues the same job; the requeued job resumes from the run's
last checkpoint, bit-identically (the training loop's resume; :mod:`gahb.training.run_dir`). The steps
after that checkpoint are trained again, so a job loses at most ``checkpoint_every`` steps per time
limit. The run folder's lock keeps two attempts from training into it at once.

:func:`run_jobs` skips the runs that are finished already, submits the others, waits for them and
raises naming every failed run with the end of its job's log. The study then measures the finished
networks in its own process exactly as after an inline training.

One large network on several GPUs is a different path: ``torchrun`` with data-parallel training
(:mod:`gahb.training.distributed`).

This module imports neither torch nor submitit at import time: a job's process installs submitit's
signal handlers before it imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXECUTOR_KINDS", "Executor", "TrainJob", "load_split_data", "parse_executor", "run_finished", "run_jobs",
           "with_threads"]

EXECUTOR_KINDS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class Executor:
    """Where a study's trainings run, and the scheduler's limits for each job (:func:`parse_executor`)."""

    kind: str = "inline"  # one of EXECUTOR_KINDS
    timeout_min: float = 240.0  # wall-clock limit of one attempt; a job at its limit is requeued and resumes
    signal_delay_s: int = 90  # seconds before the limit at which the job is told to stop
    max_timeouts: int = 3  # requeues after a time limit (or preemption) before a job counts as failed
    max_parallel: int = 0  # jobs running at once (0: all of them; on SLURM the job array's parallelism)
    partition: str = ""  # SLURM partition ("" : the cluster's default)
    account: str = ""  # SLURM account ("" : the user's default)
    gpus_per_job: int = 0
    cpus_per_job: int = 0  # 0: the scheduler's default; also the job's torch threads unless the study pins threads
    mem_gb: float = 0.0  # 0: the scheduler's default
    poll_s: float = 5.0  # seconds between checks on running jobs
    folder: str = ""  # submitit's pickles and job logs ("" : RUNS_DIR/jobs)

    def validate(self) -> None:
        if self.kind not in EXECUTOR_KINDS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTOR_KINDS)} (with :key=value options), "
                             f"got {self.kind!r}")
        if not self.timeout_min > 0:
            raise ValueError(f"executor timeout_min must be > 0 minutes, got {self.timeout_min}")
        if not 0 <= self.signal_delay_s < 60 * self.timeout_min:
            raise ValueError(f"executor signal_delay_s must lie in [0, timeout_min * 60 = {60 * self.timeout_min:g}) "
                             f"seconds, got {self.signal_delay_s}")
        for name in ("max_timeouts", "max_parallel", "gpus_per_job", "cpus_per_job"):
            if getattr(self, name) < 0:
                raise ValueError(f"executor {name} must be >= 0, got {getattr(self, name)}")
        if self.mem_gb < 0 or not self.poll_s > 0:
            raise ValueError("executor mem_gb must be >= 0 and poll_s > 0")


def parse_executor(spec: str) -> Executor:
    """``"KIND"`` or ``"KIND:key=value,..."`` into a validated :class:`Executor` (a clear error otherwise)."""
    from gahb.utils.config import field_types, parse_spec

    if isinstance(spec, Executor):
        spec.validate()
        return spec
    fields = {k: v for k, v in field_types(Executor()).items() if k != "kind"}
    kind, options = parse_spec(spec, fields, what="executor")
    ex = Executor(kind=kind, **options)
    ex.validate()
    return ex


def load_split_data(dataset: str, n: int, subset: str, seed: int, cache_dir: str | None = None,
                    n_test: int | None = None):
    """``(train images, test images, info)`` of the training subset ``subset`` (S1 or S2) of ``n`` images
    of a dataset's deduplicated pool, or of a synthetic dataset (:func:`gahb.data.datasets.load_split`):
    what a job trains on."""
    from gahb.data.datasets import load_split

    split = load_split(dataset, n=n, subset=subset, seed=seed, n_test=n_test, cache_dir=cache_dir, progress=False)
    return split.train, split.test, split.info


@dataclass(frozen=True)
class TrainJob:
    """One network of a sweep as a picklable callable: rebuild the data, then train, resuming what the run
    folder holds (:func:`gahb.training.train`, ``resume="auto"``)."""

    run_dir: str
    train: dict  # the TrainConfig, as TrainConfig.to_dict()
    data_args: dict  # keyword arguments of the data function
    data: str = "gahb.studies.sweeps:load_split_data"  # "module:function" -> (train, test, info)
    threads: int | None = None  # torch intra-op threads in the job (None: torch's default)
    attempt: int = 1  # 1 for the first run of the job, +1 at each requeue

    def __call__(self) -> dict:
        import torch

        from gahb.training import TrainConfig, train

        if self.threads:
            torch.set_num_threads(int(self.threads))
        module, _, name = self.data.partition(":")
        train_images, test_images, info = getattr(importlib.import_module(module), name)(**self.data_args)
        print(f"[gahb job] {self.run_dir}: attempt {self.attempt}, {torch.get_num_threads()} threads", flush=True)
        res = train(TrainConfig.from_dict(self.train), train_images, test_images, self.run_dir, progress=False,
                    data_info=info, resume="auto")
        print(f"[gahb job] {self.run_dir}: step {res.step}/{res.total_steps}"
              + (f", resumed from step {res.resumed_from}" if res.resumed_from is not None else ""), flush=True)
        return {"run_dir": self.run_dir, "attempt": self.attempt, "step": res.step, "finished": res.finished,
                "resumed_from": res.resumed_from}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit at the time limit or on preemption: requeue this job. Its next attempt
        resumes from the run's last checkpoint (the run folder is the job's whole state)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(dataclasses.replace(self, attempt=self.attempt + 1))


def with_threads(job: TrainJob, ex: Executor, at_once: int) -> TrainJob:
    """``job`` with its torch threads set: the study's pinned threads, else ``cpus_per_job``, else for local
    jobs this machine's cores shared among the ``at_once`` jobs that run side by side (else torch's default)."""
    if job.threads:
        return job
    threads = ex.cpus_per_job or (max(1, (os.cpu_count() or 1) // max(1, at_once)) if ex.kind == "local" else None)
    return dataclasses.replace(job, threads=threads)


def run_finished(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a finished training run (its ``config.json`` says so; a corrupt one raises)."""
    from gahb.utils.io import read_json

    path = Path(run_dir) / "config.json"
    return path.is_file() and bool(read_json(path).get("progress", {}).get("finished"))


def _submitit_executor(ex: Executor, folder: Path):
    """submitit's executor for ``ex``: its AutoExecutor on SLURM, its LocalExecutor (subprocesses here) for
    "local" (whose time limit may be a fraction of a minute), with the job limits of ``ex``."""
    try:
        import submitit
    except ImportError:
        raise ImportError(f"executor {ex.kind!r} needs submitit: pip install 'gahb[cluster]'") from None
    if ex.kind == "local":
        local = submitit.LocalExecutor(folder=str(folder), max_num_timeout=ex.max_timeouts)
        local.update_parameters(timeout_min=float(ex.timeout_min), signal_delay_s=int(ex.signal_delay_s),
                                **({"gpus_per_node": ex.gpus_per_job} if ex.gpus_per_job else {}))
        return local
    auto = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=ex.max_timeouts)
    params = {"name": "gahb-train", "timeout_min": max(1, int(ex.timeout_min)),  # SLURM counts whole minutes
              "slurm_signal_delay_s": int(ex.signal_delay_s)}
    params.update({k: v for k, v in (("gpus_per_node", ex.gpus_per_job), ("cpus_per_task", ex.cpus_per_job),
                                      ("mem_gb", ex.mem_gb), ("slurm_partition", ex.partition),
                                      ("slurm_account", ex.account),
                                      ("slurm_array_parallelism", ex.max_parallel)) if v})
    auto.update_parameters(**params)
    return auto


def _log_tail(job, lines: int = 25) -> str:
    text = "\n".join(t for t in (job.stdout(), job.stderr()) if t) or "(the job wrote no log)"
    return "\n".join(text.splitlines()[-lines:])


def run_jobs(jobs: list[TrainJob], executor: str | Executor, *, folder: str | os.PathLike | None = None,
             progress: bool = True) -> list[dict]:
    """Train every job's network on ``executor`` (:func:`parse_executor`) and wait for all of them.

    Runs already finished are skipped; the others are submitted: on SLURM as one job array, locally
    at most ``max_parallel`` at once. Returns each submitted job's result (its run folder, attempt,
    steps, and the step it resumed from). A failed job does not stop the others; after all have ended a
    RuntimeError names every failed run, its job log and the log's last lines.
    """
    ex = parse_executor(executor)
    todo = [j for j in jobs if not run_finished(j.run_dir)]
    if progress:
        print(f"[sweep] {len(jobs) - len(todo)} of {len(jobs)} networks already trained; "
              f"{len(todo)} to train ({ex.kind})", flush=True)
    if not todo:
        return []
    if ex.kind == "inline":
        return [job() for job in todo]
    where = Path(folder if folder is not None else ex.folder or Path(todo[0].run_dir).parent / "jobs")
    auto = _submitit_executor(ex, where)
    from tqdm.auto import tqdm

    limit = ex.max_parallel if ex.kind == "local" and ex.max_parallel else len(todo)
    todo = [with_threads(j, ex, min(limit, len(todo))) for j in todo]
    waiting, running, results, failures = list(todo), {}, [], []
    if ex.kind == "slurm":  # one job array, of which SLURM runs at most max_parallel tasks at once
        with auto.batch():
            handles = [auto.submit(job) for job in todo]
        waiting, running = [], dict(zip(handles, todo))
    bar = tqdm(total=len(todo), desc=f"sweep ({ex.kind})", unit="net", disable=not progress)
    try:
        while waiting or running:
            while waiting and len(running) < limit:  # local jobs: at most max_parallel at once
                job = waiting.pop(0)
                running[auto.submit(job)] = job
            for handle in [h for h in running if h.done()]:
                job = running.pop(handle)
                try:
                    results.append(handle.result())
                except Exception as exc:  # noqa: BLE001 - every failure is reported below
                    failures.append(f"{job.run_dir}: job {handle.job_id} failed ({type(exc).__name__}); "
                                    f"log in {handle.paths.stdout.parent}:\n{_log_tail(handle)}")
                bar.update(1)
            if running:
                time.sleep(ex.poll_s)
    finally:
        bar.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(todo)} training jobs failed:\n" + "\n\n".join(failures))
    return results
