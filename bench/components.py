"""Throughput of the pipeline's other engines: the negative sampler and FAISS k-means."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import scipy.sparse as sp


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
