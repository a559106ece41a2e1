"""Run a suite: one subprocess per job, one JSON record per job, then the report.

Layout of a run directory (default ``bench/results/<suite>-<YYYYmmdd-HHMMSS>``)::

    records/NNN-<kind>-<what>.json   one record per job (also for skipped and failed jobs)
    logs/NNN-....log                 the job's stdout/stderr
    results.json                     every record of the run, in order
    RESULTS.md                       the Markdown report (tables, ratios, targets)
    *.png                            thread scaling, size scaling, quality vs epochs, ceiling
    ../cache/                        dataset splits shared between runs

A job whose library is not installed is not started: its record says ``skipped`` and why,
and the run goes on. ``resume=True`` (``--resume`` with ``--out`` of an interrupted run) keeps
every record that finished ``ok`` for the same job and runs only the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import suites, system
from bench.data import estimate_bytes
from bench.methods import METHODS, missing_reason
from cfcore.io import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PUBLISHED = Path(__file__).resolve().parent / "RESULTS.md"
#: ``RESULTS.md`` is one page of blocks, one per kind of run, in this order — time to quality
#: leads; a published run rewrites only its own block (suite → block).
BLOCK_OF = {
    "quality": "quality",
    "quick": "throughput",
    "full": "throughput",
    "vision": "vision",
    "spark": "spark",
}
BLOCK_ORDER = ("quality", "throughput", "vision", "spark")
PAGE_HEAD = (
    "# collabfeat benchmarks\n\n"
    "One block per kind of run, each rewritten only by its own suite (`python -m bench run "
    "quality` — time to quality, the headline; `quick` or `full` — throughput; `vision` — the "
    "vision pipeline; `spark` — DSGD on Spark), and each saying when, where and how it ran."
)
PUBLISHED_TAGS = Path(__file__).resolve().parent / "TAGS.md"  # the ``tags`` suite's table
DEFAULT_TIMEOUT = 900


def _slug(job: dict[str, Any]) -> str:
    parts = [job["kind"]]
    for key in ("method", "dataset", "format", "arch", "image_size", "device"):
        if key in job:
            parts.append(str(job[key]))
    if job.get("workers") is not None:
        parts.append(f"w{job['workers']}")
    if "threads" in job:
        parts.append(f"t{job['threads']}")
    return "-".join(parts).replace("/", "_").replace(":", "_")


def _env(job: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    t = job.get("threads")
    if job["kind"] in ("fit", "sampler", "kmeans", "factorize-file", "vision", "tags") and t:
        for var in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS",
        ):
            env[var] = str(t)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def skip_reason(job: dict[str, Any], failed_datasets: set[str]) -> str | None:
    """Why ``job`` will not be started (a missing peer, memory, a failed dataset), or None."""
    if job.get("dataset") in failed_datasets and job["kind"] != "prepare":
        return f"dataset {job['dataset']} is unavailable (see its prepare record)"
    if job["kind"] == "vision" and job.get("device") == "cuda" and not _cuda_available():
        return "no CUDA device on this machine"
    if job["kind"] == "fit":
        method = METHODS.get(job["method"])
        if method is None:
            return f"unknown method {job['method']!r}"
        missing = missing_reason(method)
        if missing is not None:
            return missing
    if job["kind"] in ("prepare", "fit"):
        need = estimate_bytes(job["dataset"], job.get("method", "prepare"))
        avail = system.mem_available_bytes()
        if need is not None and avail is not None and need > 0.7 * avail:
            what = f"{job['method']} on {job['dataset']}" if "method" in job else job["dataset"]
            return f"{what}: needs ~{need / 2**30:.1f} GiB, only {avail / 2**30:.1f} GiB available"
    return None


def _summary(rec: dict[str, Any]) -> str:
    if rec.get("status") != "ok":
        return f"{rec.get('status')}: {rec.get('reason', '')}".strip()
    kind = rec["kind"]
    if kind == "fit":
        rate = (
            f"{rec['updates_per_s'] / 1e6:6.2f} M upd/s"
            if rec.get("updates_per_s")
            else f"{rec['epochs_per_s']:.2f} epochs/s"
        )
        return (
            f"{rec['seconds_per_epoch']:.3f} s/epoch  {rate}  AUC {rec.get('auc', float('nan')):.4f}"
            f"  P@10 {rec.get('precision@10', float('nan')):.4f}"
            f"  NDCG@10 {rec.get('ndcg@10', float('nan')):.4f}  peak {rec['peak_rss_mb']:.0f} MiB"
        )
    if kind == "prepare":
        m = rec["dataset_meta"]
        return f"{m['n_users']}×{m['n_items']}, {m['nnz']} interactions ({rec['seconds']:.1f} s)"
    if kind == "sampler":
        return f"{rec['samples_per_s'] / 1e6:.2f} M samples/s"
    if kind == "kmeans":
        return f"{rec['seconds']:.2f} s ({rec['via']})"
    if kind == "reader":
        return (
            f"{rec['seconds']:.2f} s ({rec['ratio_to_baseline']:.2f}× pyarrow baseline), "
            f"peak +{rec['peak_delta_mb']:.0f} MiB = {rec['bytes_per_interaction']:.0f} B/interaction"
        )
    if kind == "factorize-file":
        return (
            f"{rec['seconds']:.1f} s, peak +{rec['peak_delta_mb']:.0f} MiB = "
            f"{rec['bytes_per_interaction']:.0f} B/interaction"
        )
    if kind == "vision":
        return (
            f"{rec['train_images_per_s']:.0f} img/s of {rec['ceiling_images_per_s']:.0f} "
            f"(ceiling) = {100 * rec['fraction']:.0f}%"
        )
    if kind == "tags":
        eps = rec.get("examples_per_s")
        return f"P@1 {rec['P@1']:.4f}  R@10 {rec['R@10']:.4f}  A@10 {rec['A@10']:.4f}" + (
            f"  {eps:,.0f} examples/s" if eps else ""
        )
    if kind == "ceiling":
        return "; ".join(
            f"t={r['threads']}: {r['bandwidth_gbs']:.1f} GB/s, cache {r['cache_updates_per_s'] / 1e6:.1f}"
            f" M/s, DRAM+pf {r['dram_prefetch_updates_per_s'] / 1e6:.1f} M/s"
            for r in rec["rows"]
        )
    return ""


#: Job fields that must match for a finished record to stand in for the job on ``resume``.
_JOB_KEYS = (
    "id",
    "kind",
    "method",
    "dataset",
    "threads",
    "epochs",
    "factors",
    "format",
    "arch",
    "image_size",
    "device",
    "workers",
)


def _finished(rec_path: Path, job: dict[str, Any]) -> dict[str, Any] | None:
    """The record at ``rec_path`` if it finished ``ok`` for this very job, else None."""
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("status") != "ok" or any(k in rec and rec[k] != job.get(k) for k in _JOB_KEYS):
        return None
    return rec


def run_jobs(
    job_list: list[dict[str, Any]],
    out_dir: Path,
    suite: str,
    cache_dir: Path,
    log: Callable[[str], None] = print,
    timeout: int | None = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Run every job in its own process; return the records (also written under ``out_dir``).

    With ``resume``, a job whose record in ``out_dir`` finished ``ok`` is not run again; its
    record is returned marked ``resumed``.
    """
    (out_dir / "records").mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    failed_datasets: set[str] = set()
    for n, job in enumerate(job_list, 1):
        job = {**job, "id": f"{n:03d}-{_slug(job)}", "suite": suite, "cache_dir": str(cache_dir)}
        head = f"[{n:3d}/{len(job_list)}] {_slug(job):48s}"
        rec_path = out_dir / "records" / f"{job['id']}.json"
        done = _finished(rec_path, job) if resume else None
        if done is not None:
            records.append({**done, "resumed": True})
            log(f"{head} {_summary(done)} (kept from the interrupted run)")
            continue
        reason = skip_reason(job, failed_datasets)
        if reason is not None:
            rec = {
                "id": job["id"],
                "suite": suite,
                "status": "skipped",
                "reason": reason,
                **{k: v for k, v in job.items() if k not in ("cache_dir", "id", "suite")},
            }
            if job["kind"] == "prepare":
                failed_datasets.add(job["dataset"])
        else:
            rec = _run_one(job, out_dir, rec_path, timeout or job.get("timeout", DEFAULT_TIMEOUT))
            if rec["status"] != "ok" and job["kind"] == "prepare":
                failed_datasets.add(job["dataset"])
        atomic_write_text(rec_path, json.dumps(rec, indent=1))
        records.append(rec)
        atomic_write_text(out_dir / "results.json", json.dumps(records, indent=1))
        log(f"{head} {_summary(rec)}")
    return records


def _run_one(job: dict[str, Any], out_dir: Path, rec_path: Path, timeout: int) -> dict[str, Any]:
    job_path = out_dir / "logs" / f"{job['id']}.job.json"
    job_path.write_text(json.dumps(job, indent=1))
    log_path = out_dir / "logs" / f"{job['id']}.log"
    base = {k: v for k, v in job.items() if k not in ("cache_dir",)}
    t0 = time.perf_counter()
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench", "worker", str(job_path), str(rec_path)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=_env(job),
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the job's own process group only
            proc.wait()
            return {
                **base,
                "status": "timeout",
                "reason": f"exceeded {timeout} s",
                "wall_seconds": time.perf_counter() - t0,
            }
    if rc != 0 or not rec_path.exists():
        lines = log_path.read_text(errors="replace").strip().splitlines()
        return {
            **base,
            "status": "error",
            "reason": f"exit {rc}: {lines[-1] if lines else 'no output'} (log: {log_path})",
            "wall_seconds": time.perf_counter() - t0,
        }
    return json.loads(rec_path.read_text())


def block_markers(block: str) -> tuple[str, str]:
    """The comments that delimit ``block`` in ``RESULTS.md``."""
    return f"<!-- {block} block: begin -->", f"<!-- {block} block: end -->"


def publish_report(md: str, suite: str, path: Path = PUBLISHED) -> None:
    """Write a run's report into its block of ``path`` (headings one level down, under the
    page's title), keeping the other blocks as they are, in :data:`BLOCK_ORDER`."""
    old = path.read_text() if path.exists() else ""
    blocks: dict[str, str] = {}
    for block in BLOCK_ORDER:
        begin, end = block_markers(block)
        if begin in old and end in old:
            blocks[block] = old[old.index(begin) : old.index(end) + len(end)]
    if suite not in BLOCK_OF:
        raise ValueError(f"suite {suite!r} has no block in {path.name}; publish {tuple(BLOCK_OF)}")
    block = BLOCK_OF[suite]
    begin, end = block_markers(block)
    demoted = "\n".join("#" + ln if ln.startswith("#") else ln for ln in md.strip().splitlines())
    blocks[block] = f"{begin}\n{demoted}\n{end}"
    body = "\n\n".join(blocks[b] for b in BLOCK_ORDER if b in blocks)
    atomic_write_text(path, f"{PAGE_HEAD}\n\n{body}\n")


def run_suite(
    suite: str,
    out_dir: Path | None = None,
    threads: list[int] | None = None,
    methods: list[str] | None = None,
    datasets: list[str] | None = None,
    publish: bool | None = None,
    timeout: int | None = None,
    log: Callable[[str], None] = print,
    command: str | None = None,
    resume: bool = False,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run ``suite`` and write records, ``results.json``, ``RESULTS.md`` and the plots.

    Parameters
    ----------
    suite : str
        ``quick``, ``full``, ``quality``, ``vision`` or ``tiny``.
    out_dir : Path, optional
        Run directory (default ``bench/results/<suite>-<timestamp>``).
    threads : list of int, optional
        Thread counts (default: the suite's).
    methods : list of str, optional
        Keep only the fit jobs of these methods.
    datasets : list of str, optional
        Run the suite's per-dataset block on these datasets instead of its standard list
        (see :func:`bench.suites.jobs`).
    publish : bool, optional
        Also write the Markdown report into the suite's block of ``bench/RESULTS.md``
        (default: for ``quality``, ``quick``, ``full``, ``vision`` and ``spark`` runs into the
        default directory; see :func:`publish_report`).
    timeout : int, optional
        Seconds per job (default: the job's own, else 900).
    resume : bool
        Continue an interrupted run in ``out_dir``: jobs with an ``ok`` record are kept.
    """
    from bench.report import render, write_report

    if resume and out_dir is None:
        raise ValueError("resume: name the interrupted run's directory (--out)")
    default_out = out_dir is None
    if out_dir is None:
        out_dir = RESULTS_DIR / f"{suite}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out_dir)
    job_list = suites.jobs(suite, threads, datasets)
    if methods:
        job_list = [
            j for j in job_list if j["kind"] not in ("fit", "tags") or j["method"] in methods
        ]
    cache_dir = (RESULTS_DIR if default_out else out_dir) / "cache"
    machine = system.machine()
    log(f"bench {suite}: {len(job_list)} jobs → {out_dir}")
    log(
        f"  {machine['cpu_model']}, {machine['cores']} cores; threads "
        f"{sorted({j['threads'] for j in job_list if 'threads' in j})}"
    )
    t0 = time.perf_counter()
    load_start = system.load_average()
    records = run_jobs(job_list, out_dir, suite, cache_dir, log, timeout, resume)
    load = {"start": load_start, "end": system.load_average()}
    for rec in records:
        rec.setdefault("run_load_average", load)
    atomic_write_text(out_dir / "results.json", json.dumps(records, indent=1))
    command = command or f"python -m bench run {suite}"
    elapsed = time.perf_counter() - t0
    write_report(records, out_dir, suite=suite, command=command, elapsed=elapsed)
    if publish if publish is not None else (default_out and suite in (*BLOCK_OF, "tags")):
        md = render(records, suite=suite, command=command, elapsed=elapsed)
        where = out_dir.resolve()
        try:
            where = where.relative_to(PUBLISHED.parent.parent)
        except ValueError:
            pass
        md += f"\nPlots and per-job JSON records of this run: `{where}/` (not committed).\n"
        if suite == "tags":  # its own file: a different table
            atomic_write_text(PUBLISHED_TAGS, md)
            log(f"published {PUBLISHED_TAGS}")
        else:
            publish_report(md, suite)
            log(f"published {PUBLISHED}")
    log(f"done in {time.perf_counter() - t0:.0f} s: {out_dir / 'RESULTS.md'}")
    return out_dir, records
