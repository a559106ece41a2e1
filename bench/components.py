"""Throughput of the pipeline's other engines — the negative sampler, FAISS k-means, the
interaction-file reader — and the peak memory of ``cfcore factorize`` on a file."""

from __future__ import annotations

import gc
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench import system


def sampler_rate(
    train: sp.csr_matrix,
    threads: int,
    ratio: float = 2.0,
    weighting: str = "log-popularity",
    repeats: int = 3,
) -> dict:
    """Negatives drawn per second by :func:`cfcore.sampling.sample_negatives` (best of repeats).

    The first call (on a tiny matrix) loads or compiles the Numba kernel and is not timed.
    """
    from cfcore.sampling import sample_negatives

    tiny = sp.random(50, 40, density=0.1, format="csr", random_state=0, dtype=np.float32)
    tiny.data[:] = 1
    sample_negatives(tiny, ratio, weighting, seed=0, threads=threads, warn_short=False)
    best = float("inf")
    requested = n_short = 0
    for r in range(repeats):
        t0 = time.perf_counter()
        ns = sample_negatives(train, ratio, weighting, seed=r, threads=threads, warn_short=False)
        best = min(best, time.perf_counter() - t0)
        requested, n_short = int(ns.requested), int(ns.n_short)
    drawn = int(ns.indptr[-1])
    return {
        "seconds": best,
        "requested": requested,
        "drawn": drawn,
        "n_short": n_short,
        "samples_per_s": drawn / best,
        "ratio": ratio,
        "weighting": weighting,
    }


def kmeans_seconds(
    n: int = 100_000, d: int = 64, k: int = 2000, threads: int = 1, niter: int = 20, seed: int = 0
) -> dict:
    """Seconds for spherical k-means of ``n`` × ``d`` float32 vectors into ``k`` clusters.

    The vectors are a seeded mixture (``k // 4`` Gaussian blobs plus noise), like item factors.
    Uses :func:`cfcore.cluster_items` when available, else ``faiss.Kmeans`` directly (every
    point used for training: ``max_points_per_centroid`` is raised so faiss does not subsample).
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, k // 4), d), dtype=np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal(
        (n, d), dtype=np.float32
    )
    x = np.ascontiguousarray(x, dtype=np.float32)
    try:
        has_cluster = importlib.util.find_spec("cfcore.cluster") is not None
    except ImportError:
        has_cluster = False
    if has_cluster:
        from cfcore.cluster import cluster_items

        t0 = time.perf_counter()
        cluster_items(x, k, spherical=True, niter=niter, seed=seed, threads=threads)
        seconds = time.perf_counter() - t0
        via = "cfcore.cluster_items"
    else:
        import faiss

        faiss.omp_set_num_threads(threads)
        km = faiss.Kmeans(
            d,
            k,
            niter=niter,
            spherical=True,
            seed=seed,
            max_points_per_centroid=max(256, n // k + 1),
        )
        t0 = time.perf_counter()
        km.train(x)
        km.index.search(x, 1)
        seconds = time.perf_counter() - t0
        via = "faiss.Kmeans"
    return {"n": n, "d": d, "k": k, "niter": niter, "seconds": seconds, "via": via}


# ---------------------------------------------------------------------- reader and memory
def pyarrow_baseline(csv_path: Path) -> int:
    """The yardstick for the reader: ``pyarrow.csv.read_csv`` of a CSV and ``np.unique`` (with
    the inverse) of its two integer id columns; returns the number of rows."""
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(csv_path)
    for name in ("user_id", "item_id"):
        np.unique(table.column(name).to_numpy(), return_inverse=True)
    return table.num_rows


def _head_file(path: Path, folder: Path, rows: int = 200) -> Path:
    """The first ``rows`` rows of an interaction file, under the same name in ``folder``
    (for warming a process up without reading the real file)."""
    out = folder / path.name
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=rows))
        pq.write_table(pa.Table.from_batches([batch]), out)
    else:
        with open(path, "rb") as fh:
            out.write_bytes(b"".join(fh.readline() for _ in range(rows)))
    return out


def _peak_above(run, warm) -> tuple[object, float, float, float]:
    """Run ``warm()`` then ``run()``: ``(result, seconds, peak MiB above the warm process,
    the warm process's RSS in MiB)`` of ``run``."""
    warm()
    gc.collect()
    rss = system.rss_mb()
    system.reset_peak_rss()
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    return out, seconds, system.peak_rss_mb() - rss, rss


def reader_rate(path: Path, baseline_csv: Path, repeats: int = 3) -> dict:
    """:func:`cfcore.readers.read_interactions` on ``path`` against :func:`pyarrow_baseline`
    on ``baseline_csv`` (the same interactions as a CSV): best-of-``repeats`` seconds of each,
    and the peak memory of the first read above the process warmed up on a 200-row head of
    the file (imports, thread pools), per interaction."""
    from cfcore.readers import read_interactions

    with tempfile.TemporaryDirectory() as tmp:
        head = _head_file(path, Path(tmp))
        inter, _, peak, rss = _peak_above(
            lambda: read_interactions(path), lambda: read_interactions(head)
        )
    nnz, rows = inter.nnz, inter.nnz + inter.n_duplicates
    del inter
    seconds = min(_timed(lambda: read_interactions(path)) for _ in range(repeats))
    base = min(_timed(lambda: pyarrow_baseline(baseline_csv)) for _ in range(repeats))
    return {
        "file": path.name,
        "rows": rows,
        "nnz": nnz,
        "seconds": seconds,
        "baseline_seconds": base,
        "ratio_to_baseline": seconds / base,
        "rows_per_s": rows / seconds,
        "rss_before_mb": rss,
        "peak_delta_mb": peak,
        "bytes_per_interaction": peak * 2**20 / nnz,
    }


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def factorize_file_peak(path: Path, factors: int = 64, epochs: int = 1, threads: int = 0) -> dict:
    """Peak memory of ``cfcore factorize PATH`` (run in this process) above the same command
    on a 200-row head of the file — the import baseline: modules, compiled kernels, thread
    pools — per interaction, and its wall time."""
    from cfcore.cli.main import cli
    from cfcore.readers import read_interactions

    def factorize(source: Path, out: Path) -> None:
        args = [str(source), "-o", str(out), "--factors", str(factors), "--epochs", str(epochs)]
        cli.main(["factorize", *args, "--threads", str(threads), "-q"], standalone_mode=False)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        head = _head_file(path, folder)
        _, seconds, peak, rss = _peak_above(
            lambda: factorize(path, folder / "model.npz"),
            lambda: factorize(head, folder / "head.npz"),
        )
    inter = read_interactions(path)
    return {
        "file": path.name,
        "nnz": inter.nnz,
        "n_users": inter.n_users,
        "n_items": inter.n_items,
        "factors": factors,
        "epochs": epochs,
        "seconds": seconds,
        "rss_before_mb": rss,
        "peak_delta_mb": peak,
        "bytes_per_interaction": peak * 2**20 / inter.nnz,
    }
