"""Run one benchmark job in this process and write its JSON record.

The runner starts one process per job (``python -m bench worker JOB.json RECORD.json``) so
that every method gets a fresh heap: its peak RSS is its own, one library's thread pool or
allocator state cannot slow the next, and a crash or a timeout costs one record.

Job kinds: ``prepare`` (generate/split a dataset into the cache), ``fit`` (one method on one
dataset at one thread count), ``ceiling``, ``sampler``, ``kmeans``, ``reader`` (the interaction
file reader against a pyarrow baseline, with its peak memory), ``factorize-file`` (the peak
memory of ``cfcore factorize`` on a file above its import baseline), ``vision``
(``cfvision train`` images/s and the model's ceiling, :mod:`bench.vision`) and ``tags`` (one
tag-prediction method on one tag dataset, :mod:`bench.tags`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from bench import system
from bench.data import eval_users, load_split
from bench.methods import METHODS, FactorTables, FitTask

#: Held-out metrics reported for every fit (cfcore.metrics.evaluate, k = 10).
METRIC_KEYS = ("auc", "pr", "precision@10", "recall@10", "ndcg@10")


def _evaluate(
    tables: FactorTables, train: sp.csr_matrix, test: sp.csr_matrix, users: np.ndarray
) -> dict[str, float]:
    """Held-out AUC/PR vs uniform unobserved items and top-10 metrics (train items excluded)."""
    from cfcore.metrics import evaluate, factor_scorer

    scorer = factor_scorer(tables.user_factors, tables.item_factors, tables.item_bias)
    out = evaluate(scorer, train, test, k=10, users=users)
    return {k: float(out[k]) for k in METRIC_KEYS if k in out}


def _warmup(method_name: str, threads: int) -> None:
    """One tiny fit so JIT compilation and thread-pool start-up are not timed (for the methods
    that need one, :attr:`bench.methods.Method.warmup`)."""
    if not METHODS[method_name].warmup:
        return
    rng = np.random.default_rng(0)
    tiny = sp.random(60, 40, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    tiny.data[:] = 1
    METHODS[method_name].fit(FitTask(tiny, factors=8, epochs=1, threads=threads, seed=0))


def run_fit(job: dict[str, Any], cache_dir: Path) -> dict[str, Any]:
    method = METHODS[job["method"]]
    split = load_split(job["dataset"], job.get("seed", 0), cache_dir)
    users = eval_users(split.test, job.get("eval_users", 2000), job.get("seed", 0))
    threads = int(job["threads"])
    epochs = int(job["epochs"])
    curve_at = sorted({int(e) for e in job.get("curve_epochs", []) if 0 < int(e) <= epochs})
    _warmup(method.name, threads)

    # The timed fit evaluates nothing: an evaluation between epochs would evict the factor
    # tables from the cache and leave the BLAS threads spinning into the next epoch, charging
    # the method for our measurement. The per-epoch hook only notes the time and, at the
    # checkpoints, copies the tables (one memcpy, its time excluded); the copies are
    # evaluated after the fit, so every curve point is timed by the very fit it scores.
    stamps: dict[int, float] = {}
    snapshots: dict[int, FactorTables] = {}
    excluded = 0.0

    def on_epoch(epoch: int, tables) -> None:
        nonlocal excluded
        now = time.perf_counter()
        stamps[epoch] = now - excluded
        if epoch in curve_at:
            snapshots[epoch] = tables().copy()
        excluded += time.perf_counter() - now

    task = FitTask(
        split.train,
        factors=int(job["factors"]),
        epochs=epochs,
        threads=threads,
        seed=int(job.get("seed", 0)),
        callback=on_epoch if method.callbacks else None,
    )
    rss_before = system.rss_mb()
    reset_ok = system.reset_peak_rss()
    started = time.perf_counter()
    result = method.fit(task)
    finished = time.perf_counter() - excluded
    peak = system.peak_rss_mb()
    metrics = _evaluate(result.tables, split.train, split.test, users)
    # Training seconds at the end of each epoch, on the method's own clock (our set-up
    # before its fit call — model construction, format conversion — left out).
    offset = (finished - started) - result.seconds
    epoch_end = {e: t - started - offset for e, t in sorted(stamps.items())}
    curve: list[dict[str, Any]] = []
    for e in curve_at:
        if e >= result.epochs or e not in snapshots:
            continue
        scored = _evaluate(snapshots.pop(e), split.train, split.test, users)
        curve.append({"epoch": e, "seconds": epoch_end[e], **scored})
    # Methods without a per-epoch hook: refit from scratch for the earlier checkpoints.
    if curve_at and not method.callbacks:
        for e in curve_at:
            if e >= result.epochs:
                continue
            sub = method.fit(dataclasses.replace(task, epochs=e))
            curve.append(
                {
                    "epoch": e,
                    "seconds": sub.seconds,
                    "refit": True,
                    **_evaluate(sub.tables, split.train, split.test, users),
                }
            )
    if curve_at:
        curve.append({"epoch": result.epochs, "seconds": result.seconds, **metrics})
        curve.sort(key=lambda p: p["epoch"])
    # Steady-state pace: epochs 2..E only, without the fit call's set-up and first epoch
    # (per-epoch stamps, or for methods without a hook a second fit of one epoch).
    steady = None
    if result.epochs >= 2:
        if 1 in epoch_end and result.epochs in epoch_end:
            steady = (epoch_end[result.epochs] - epoch_end[1]) / (result.epochs - 1)
        elif not method.callbacks:
            one = next((p["seconds"] for p in curve if p["epoch"] == 1), None)
            if one is None:
                one = method.fit(dataclasses.replace(task, epochs=1)).seconds
            steady = (result.seconds - one) / (result.epochs - 1)
        if steady is not None and steady <= 0:
            steady = None
    seconds_per_epoch = result.seconds / max(result.epochs, 1)
    updates_per_epoch = None if result.updates is None else result.updates / max(result.epochs, 1)
    return {
        "kind": "fit",
        "method": method.name,
        "library": method.package,
        "family": method.family,
        "counting": method.counting,
        "dataset": split.name,
        "dataset_meta": split.meta,
        "n_users": split.shape[0],
        "n_items": split.shape[1],
        "train_nnz": int(split.train.nnz),
        "test_nnz": int(split.test.nnz),
        "threads": threads,
        "factors": task.factors,
        "epochs": result.epochs,
        "fit_seconds": result.seconds,
        "prep_seconds": result.prep_seconds,
        "seconds_per_epoch": seconds_per_epoch,
        "epochs_per_s": result.epochs / result.seconds if result.seconds > 0 else None,
        "steady_seconds_per_epoch": steady,
        "steady_updates_per_s": (
            None if steady is None or updates_per_epoch is None else updates_per_epoch / steady
        ),
        "updates_per_epoch": updates_per_epoch,
        "updates_per_s": None if result.updates is None else result.updates / result.seconds,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
        "fit_peak_delta_mb": peak - rss_before if reset_ok else None,
        "peak_rss_method": "VmHWM reset before fit" if reset_ok else "ru_maxrss (not reset)",
        "eval_users": int(len(users)),
        **metrics,
        "curve": curve,
        "epoch_seconds": [epoch_end[e] for e in sorted(epoch_end)],
        "params": result.params,
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` and return its record (without the common header)."""
    cache_dir = Path(job["cache_dir"]) if job.get("cache_dir") else None
    kind = job["kind"]
    if kind == "prepare":
        t0 = time.perf_counter()
        split = load_split(job["dataset"], job.get("seed", 0), cache_dir)
        return {
            "kind": "prepare",
            "dataset": split.name,
            "dataset_meta": split.meta,
            "seconds": time.perf_counter() - t0,
            "peak_rss_mb": system.peak_rss_mb(),
        }
    if kind == "fit":
        return run_fit(job, cache_dir)
    if kind == "vision":
        from bench.vision import run_vision

        return run_vision(job, cache_dir)
    if kind == "tags":
        from bench.tags import run_job

        return run_job(job)
    if kind == "ceiling":
        from bench import ceiling

        rows = ceiling.measure(
            job["threads_list"],
            samples=job.get("samples", 10_000_000),
            triad_n=job.get("triad_n", 1 << 25),
            dram_shape=tuple(job.get("dram_shape", ceiling.DRAM_SHAPE)),
        )
        return {
            "kind": "ceiling",
            "rows": rows,
            "prefetch": ceiling.PREFETCH_KIND,
            "prefetch_distance": ceiling.PREFETCH_DISTANCE,
        }
    if kind == "sampler":
        from bench.components import sampler_rate

        split = load_split(job["dataset"], job.get("seed", 0), cache_dir)
        return {
            "kind": "sampler",
            "dataset": split.name,
            "threads": job["threads"],
            "train_nnz": int(split.train.nnz),
            **sampler_rate(split.train, int(job["threads"])),
        }
    if kind == "kmeans":
        from bench.components import kmeans_seconds

        return {
            "kind": "kmeans",
            "threads": job["threads"],
            **kmeans_seconds(
                job.get("n", 100_000),
                job.get("d", 64),
                job.get("k", 2000),
                int(job["threads"]),
                job.get("niter", 20),
            ),
        }
    if kind == "reader":
        from bench.components import reader_rate
        from bench.data import interaction_file

        path = interaction_file(job["dataset"], job["format"], cache_dir, job.get("seed", 0))
        csv = interaction_file(job["dataset"], "csv", cache_dir, job.get("seed", 0))
        return {
            "kind": "reader",
            "dataset": job["dataset"],
            "format": job["format"],
            **reader_rate(path, csv, job.get("repeats", 3)),
        }
    if kind == "factorize-file":
        from bench.components import factorize_file_peak
        from bench.data import interaction_file

        path = interaction_file(job["dataset"], job.get("format", "csv"), cache_dir)
        return {
            "kind": "factorize-file",
            "dataset": job["dataset"],
            "format": job.get("format", "csv"),
            "threads": job["threads"],
            **factorize_file_peak(path, job["factors"], job["epochs"], job["threads"]),
        }
    raise ValueError(f"unknown job kind {kind!r}")


def main(job_path: str, record_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    warnings.simplefilter("ignore")  # library chatter goes nowhere; errors still raise
    t0 = time.perf_counter()
    record = {
        "id": job["id"],
        "suite": job.get("suite"),
        "status": "ok",
        **run_job(job),
        "wall_seconds": time.perf_counter() - t0,
        "machine": system.machine(),
        "versions": system.versions(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    from cfcore.io import atomic_write_text

    atomic_write_text(record_path, json.dumps(record, indent=1, default=_json_default))
    return 0


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(*sys.argv[1:3]))
