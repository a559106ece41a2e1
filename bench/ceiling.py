"""The hardware ceiling: memory bandwidth and a bare random-row SGD loop.

Two numbers bound any factorization kernel on this machine:

- **bandwidth** — a STREAM-style triad ``a[i] = b[i] + s·c[i]`` over float32 arrays far
  larger than the last-level cache, parallel over ``threads``; GB/s counts the 3 arrays
  (12 bytes per element, write-allocate traffic not counted, as STREAM does);
- **the bare update** — the minimal SGD step of a factorization, with nothing else:
  gather user row ``x_u`` and item row ``y_i`` (64 float32 each), ``e = 1 − x_u·y_i``,
  ``x_u += η(e·y_i − λx_u)``, ``y_i += η(e·x_u − λy_i)``, for uniformly random (u, i) pairs
  precomputed in arrays, the samples cut into one contiguous slice per thread (Hogwild, no
  locks). Measured with tables that fit in cache (MovieLens-1M's 6,040 × 3,706 rows) and
  tables that do not (200,000 × 100,000 rows, the 16 M synthetic shape), each without and
  with software prefetch: the rows of the sample ``PREFETCH_DISTANCE`` steps ahead are
  requested early by the kernels' own helper (:mod:`cfcore._kernels.prefetch`,
  ``llvm.prefetch``; where that intrinsic cannot be built it does nothing and the record's
  ``prefetch`` says ``none``).

The same loop over DRAM-sized tables with the samples sorted by user ("grouped", the order of
collabfeat's factorizer) is reported beside it: it is not the ceiling, it shows what the order
alone buys. A method's *fraction of the ceiling* is its updates/s divided by the random-row bare
loop's at the same threads, on tables that fit in cache (or not) like the method's dataset. A bare update touches
two rows; a BPR/WARP triple touches three, so pairwise methods cannot reach 1.0.
"""

from __future__ import annotations

import time

import numba
import numpy as np
from numba import prange

from cfcore._kernels.prefetch import PREFETCH_KIND, prefetch_row

PREFETCH_DISTANCE = 8
CACHE_SHAPE = (6040, 3706)
DRAM_SHAPE = (200_000, 100_000)


@numba.njit(parallel=True, cache=True)
def _triad(a, b, c, s, n_chunks):
    n = a.shape[0]
    for t in prange(n_chunks):
        lo = t * n // n_chunks
        hi = (t + 1) * n // n_chunks
        for i in range(lo, hi):
            a[i] = b[i] + s * c[i]


@numba.njit(inline="always", fastmath=True, cache=True)
def _step(X, Y, u, i, lr, reg):
    """The bare squared-loss SGD step on entry (u, i): dot, error, update both rows."""
    k = X.shape[1]
    dot = np.float32(0.0)
    for f in range(k):
        dot += X[u, f] * Y[i, f]
    e = np.float32(1.0) - dot
    for f in range(k):
        xf = X[u, f]
        yf = Y[i, f]
        X[u, f] = xf + lr * (e * yf - reg * xf)
        Y[i, f] = yf + lr * (e * xf - reg * yf)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _bare_sgd(X, Y, users, items, lr, reg, n_chunks):
    n = users.shape[0]
    for t in prange(n_chunks):
        lo = t * n // n_chunks
        hi = (t + 1) * n // n_chunks
        for s in range(lo, hi):
            _step(X, Y, users[s], items[s], lr, reg)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _bare_sgd_prefetch(X, Y, users, items, lr, reg, n_chunks, distance):
    """As :func:`_bare_sgd`, prefetching the rows of the sample ``distance`` steps ahead."""
    n = users.shape[0]
    for t in prange(n_chunks):
        lo = t * n // n_chunks
        hi = (t + 1) * n // n_chunks
        for s in range(lo, hi):
            ahead = s + distance
            if ahead < hi:
                prefetch_row(X, users[ahead])
                prefetch_row(Y, items[ahead])
            _step(X, Y, users[s], items[s], lr, reg)


def _best(fn, repeats: int) -> float:
    fn()  # compile / warm the caches and pages
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bandwidth_gbs(threads: int, n: int = 1 << 25, repeats: int = 5) -> float:
    """Triad bandwidth in GB/s (10⁹ bytes/s) with ``threads`` threads, float32 arrays of ``n``."""
    numba.set_num_threads(threads)
    b = np.ones(n, dtype=np.float32)
    c = np.full(n, 2.0, dtype=np.float32)
    a = np.empty_like(b)
    seconds = _best(lambda: _triad(a, b, c, np.float32(3.0), threads), repeats)
    return 3 * 4 * n / seconds / 1e9


def bare_update_rate(
    threads: int,
    shape: tuple[int, int],
    factors: int = 64,
    samples: int = 10_000_000,
    prefetch: bool = False,
    repeats: int = 2,
    seed: int = 0,
    grouped: bool = False,
) -> float:
    """Bare gather–dot–update steps per second over uniformly random (u, i) pairs.

    Parameters
    ----------
    threads : int
        Numba threads (one contiguous slice of samples each).
    shape : (n_users, n_items)
        Table sizes; ``CACHE_SHAPE`` fits in cache, ``DRAM_SHAPE`` does not.
    factors : int
        Row length (float32).
    samples : int
        Steps per timed pass.
    prefetch : bool
        Request the rows ``PREFETCH_DISTANCE`` steps ahead (see the module docstring).
    grouped : bool
        Visit the samples user by user (users sorted): the order collabfeat's factorizer uses.
        Not part of the ceiling; it shows what the order alone buys.
    """
    numba.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((shape[0], factors), dtype=np.float32) * 0.1
    Y = rng.standard_normal((shape[1], factors), dtype=np.float32) * 0.1
    users = rng.integers(0, shape[0], samples).astype(np.int32)
    if grouped:  # each user's samples consecutive: its row stays in L1, only items are random
        users.sort()
    items = rng.integers(0, shape[1], samples).astype(np.int32)
    lr, reg = np.float32(0.01), np.float32(0.01)
    if prefetch:

        def run() -> None:
            _bare_sgd_prefetch(X, Y, users, items, lr, reg, threads, PREFETCH_DISTANCE)
    else:

        def run() -> None:
            _bare_sgd(X, Y, users, items, lr, reg, threads)

    return samples / _best(run, repeats)


def measure(
    threads_list: list[int],
    samples: int = 10_000_000,
    triad_n: int = 1 << 25,
    dram_shape: tuple[int, int] = DRAM_SHAPE,
) -> list[dict]:
    """All ceiling numbers for each thread count (one dict per threads)."""
    out = []
    for t in threads_list:
        rec = {"threads": t, "bandwidth_gbs": bandwidth_gbs(t, triad_n), "prefetch": PREFETCH_KIND}
        for where, shape in (("cache", CACHE_SHAPE), ("dram", dram_shape)):
            for pf in (False, True):
                key = f"{where}{'_prefetch' if pf else ''}_updates_per_s"
                rec[key] = bare_update_rate(t, shape, samples=samples, prefetch=pf)
            rec[f"{where}_shape"] = list(shape)
        rec["dram_grouped_prefetch_updates_per_s"] = bare_update_rate(
            t, dram_shape, samples=samples, prefetch=True, grouped=True
        )
        out.append(rec)
    return out
