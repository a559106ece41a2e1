"""Run a pipeline job: every stage in a process of its own, skipped when up to date.

``cfvision pipeline JOB.toml`` is :func:`run_job`. For each stage in order
(:data:`cfcore.pipeline.job.STAGES`) the runner computes the stage's **key** — its parameters,
the collabfeat version, the content hashes of the external files it reads and the signatures
of the stages it reads — and skips the stage when its record in the run directory holds that
key and its outputs are intact. Otherwise it starts the stage's process — ``python -m cfcore
run-stage`` for the torch-free stages, ``python -m cfvision run-stage`` for the others, so
numba's and faiss's OpenMP runtime never shares a process with torch's — which writes into
``<stage>.partial/``; on success the runner hashes the outputs, writes the record and renames
the folder into place (:mod:`cfcore.pipeline.rundir`), then updates ``manifest.json``.

A job killed at any moment (``kill -9`` included) leaves finished stages finished and at most
one ``.partial`` folder; the next run discards it and starts that stage again. The run
directory is locked while a job runs; the stage processes hold the lock too, and die with
the runner (``PR_SET_PDEATHSIG`` on Linux).

This module never imports torch, numba or faiss: the runner only hashes, plans and waits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfcore.errors import CollabfeatError, InputError
from cfcore.io import atomic_write_json, atomic_write_text
from cfcore.pipeline.job import (
    STAGE_NAMES,
    STAGES,
    UPSTREAM,
    Job,
    external_inputs,
    load_job,
    stage_params,
)
from cfcore.pipeline.rundir import (
    JOB,
    RESULT,
    DigestCache,
    RunDir,
    digest_json,
    output_entries,
    outputs_intact,
    package_versions,
    signature,
)

Log = Callable[[str], None]


class StageError(CollabfeatError, RuntimeError):
    """A stage's process failed; the message names the stage and what to do."""


@dataclass
class StagePlan:
    """What the runner will do (or did) with one stage."""

    name: str
    runner: str
    action: str  # "skip", "run" or "run?" (dry run: runs unless its inputs come out the same)
    reason: str
    seconds: float | None = None


@dataclass
class JobResult:
    run_dir: Path
    stages: list[StagePlan] = field(default_factory=list)

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.stages if s.action == "run"]

    @property
    def skipped(self) -> list[str]:
        return [s.name for s in self.stages if s.action == "skip"]


def stage_key(
    job: Job, name: str, run: RunDir, digests: DigestCache
) -> tuple[str | None, dict[str, Any]]:
    """The key of stage ``name`` and what it is made of; ``None`` when an upstream stage has
    no record yet (its outputs, hence this key, are not known)."""
    from cfcore.pipeline.job import JobError

    upstream = {}
    for up in UPSTREAM[name]:
        if up not in job.stages():
            continue
        record = run.record(up)
        if record is None:
            return None, {}
        upstream[up] = signature(record)
    try:
        external = {k: digests(p) for k, p in external_inputs(job, name).items()}
    except FileNotFoundError as exc:
        raise JobError(f"{job.where('data')}: {exc}") from None
    parts = {
        "stage": name,
        "params": stage_params(job, name),
        "collabfeat": package_versions(("collabfeat",)).get("collabfeat"),
        "upstream": upstream,
        "external": external,
    }
    return digest_json(parts), parts


def _status(job: Job, name: str, run: RunDir, digests: DigestCache, forced: bool):
    key, parts = stage_key(job, name, run, digests)
    record = run.record(name)
    if forced:
        return key, parts, "run", "forced (--from)"
    if record is None:
        return key, parts, "run", "never ran"
    if key is None:
        return key, parts, "run?", "after its inputs are rebuilt"
    if record.get("key") != key:
        changed = [k for k in ("params", "upstream", "external") if record.get(k) != parts[k]]
        what = {"params": "parameters", "upstream": "inputs", "external": "input files"}
        reason = " and ".join(what[c] for c in changed) or "collabfeat version"
        return key, parts, "run", f"{reason} changed"
    if not outputs_intact(run.stage(name), record.get("outputs", {})):
        return key, parts, "run", "outputs changed on disk"
    return key, parts, "skip", "up to date"


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """Die with the runner (Linux): a stage never outlives a killed job."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_stage_process(job: Job, run: RunDir, name: str, runner: str, lock_fd: int) -> None:
    env = dict(os.environ)
    if job.threads_for(name):
        env["OMP_NUM_THREADS"] = str(job.threads_for(name))
    command = [sys.executable, "-m", runner, "run-stage", str(run.root), name]
    proc = subprocess.Popen(
        command,
        env=env,
        pass_fds=(lock_fd,),
        preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
    )
    try:
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise StageError(
            f"stage {name} failed (exit status {code}; its message is above); fix the cause "
            f"and run the job again: finished stages are kept, {name} starts over"
        )


def run_job(
    job_file: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None = None,
    *,
    from_stage: str | None = None,
    dry_run: bool = False,
    log: Log | None = None,
) -> JobResult:
    """Run (or, with ``dry_run``, plan) the job in ``job_file``.

    Parameters
    ----------
    job_file : path-like
        The TOML job (:mod:`cfcore.pipeline.job`).
    run_dir : path-like, optional
        Where outputs go (default: the job's ``[job] run_dir``, else ``runs/<job stem>``).
    from_stage : str, optional
        Run this stage and every later one even when up to date.
    dry_run : bool
        Only say what would run and why.
    log : callable, optional
        Receives one line per stage decision.

    Raises
    ------
    JobError
        The job file is invalid (the message names the line and key).
    RunLockedError
        Another job is running in ``run_dir``.
    StageError
        A stage's process failed.
    """
    say = log or (lambda _m: None)
    job = load_job(job_file)
    if from_stage is not None and from_stage not in job.stages():
        raise InputError(
            f"--from {from_stage}: not a stage of this job ({', '.join(job.stages())})"
        )
    run = RunDir(Path(run_dir) if run_dir is not None else job.default_run_dir())
    result = JobResult(run.root)
    names = job.stages()
    forced = set(names[names.index(from_stage) :]) if from_stage else set()
    runners = {s.name: s.runner for s in STAGES}
    resumable = {s.name: s.resumable for s in STAGES}
    digests = DigestCache()
    if dry_run:
        for name in names:
            _, _, action, reason = _status(job, name, run, digests, name in forced)
            result.stages.append(StagePlan(name, runners[name], action, reason))
            say(f"{name:<10} {action:<4} {reason} ({runners[name]})")
        return result

    with run.lock() as lock_fd:
        run.clean()
        atomic_write_json(run.root / JOB, job.to_dict())
        atomic_write_text(run.root / "job.toml", job.text)  # the text the job was read from
        started = time.time()
        for name in names:
            key, parts, action, reason = _status(job, name, run, digests, name in forced)
            assert key is not None  # every stage before this one has its record now
            if action == "run" and name not in forced and run.recover(name, key):
                action, reason = "skip", "finished before the last run was stopped"
            if action == "skip":
                say(f"{name:<10} skip ({reason})")
                result.stages.append(StagePlan(name, runners[name], "skip", reason))
                continue
            if run.begin(name, key, resumable[name]):
                reason += "; continuing the stopped run from its checkpoint"
            say(f"{name:<10} run  ({reason})")
            t0 = time.perf_counter()
            _run_stage_process(job, run, name, runners[name], lock_fd)
            seconds = time.perf_counter() - t0
            part = run.partial(name)
            record = {
                "stage": name,
                "runner": runners[name],
                "key": key,
                **{k: parts[k] for k in ("params", "upstream", "external")},
                "versions": package_versions(),
                "started": time.strftime(
                    "%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - seconds)
                ),
                "seconds": round(seconds, 3),
                "outputs": output_entries(part),
                "result": _read_result(part),
            }
            run.commit(name, record)
            result.stages.append(StagePlan(name, runners[name], "run", reason, seconds))
            say(f"{name:<10} done in {seconds:.1f} s")
            _write_manifest(job, run, names, started)
        _write_manifest(job, run, names, started)
    return result


def _read_result(folder: Path) -> Any:
    import json

    try:
        return json.loads((folder / RESULT).read_text())
    except (OSError, ValueError):
        raise StageError(f"{folder / RESULT}: the stage wrote no result") from None


def _write_manifest(job: Job, run: RunDir, names: list[str], started: float) -> None:
    stages = {}
    for name in names:
        record = run.record(name)
        if record is not None:
            stages[name] = {k: v for k, v in record.items() if k != "result"}
    run.write_manifest(
        {
            "job": str(job.path),
            "stages_in_order": names,
            "complete": len(stages) == len(names),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "last_run_started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "versions": package_versions(),
            "stages": stages,
        }
    )


__all__ = ["STAGE_NAMES", "JobResult", "StageError", "StagePlan", "run_job", "stage_key"]
