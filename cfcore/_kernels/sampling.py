"""Numba kernels of Fang et al.'s negative sampler (Algorithm 1).

Fang, Jin, Yang, Mech & Wang (2015), *Collaborative Feature Learning from Social Media*,
Algorithm 1 and eq. 1–2: for every user ``j`` draw ``n_j`` items ``j`` has not viewed, with
``P_ij ∝ w(p_i)`` over the non-viewed items (``P_ij = 0`` for viewed ones), without
replacement. The Python API (:mod:`cfcore.sampling`) validates the input, turns the item
weights into the cumulative table these kernels take and calls them in two passes:

1. :func:`negative_counts` — ``n_j = min(round(ratio · |positives_j|), candidates_j)`` per
   user and the number of users that got fewer than requested (the shortfall);
2. :func:`sample_into` — fills a CSR (``out_indptr`` = prefix sum of the counts) in parallel,
   each user's indices sorted ascending.

The distribution
----------------
Each user's negatives are drawn by *successive weighted sampling without replacement*: the
first item is drawn with probability ``w_i / W_j`` over the user's candidates ``C_j`` (the
items with ``w_i > 0`` the user has not interacted with, ``W_j = Σ_{i∈C_j} w_i``), the second
∝ ``w`` over ``C_j`` minus the first, and so on. So a single draw is exactly Fang's eq. 2,
and a set ``S`` drawn in order ``s_1, s_2, …`` has probability
``Π_t w_{s_t} / (W_j − w_{s_1} − … − w_{s_{t−1}})``. Items of weight 0 are never drawn.
Two exact implementations of that one distribution are mixed per user:

* rejection — draw ``i`` ∝ ``w`` over all items from a global alias table (Walker 1977,
  Vose 1991: O(1) per draw) and reject it when it is a positive or already drawn. Conditioned on
  acceptance the draw is ∝ ``w`` over the remaining candidates, i.e. the next step of
  successive sampling. Expected cost per accepted draw: ``W / W_remaining`` trials.
* Efraimidis–Spirakis (2006) keys — every remaining candidate gets ``k_i = E_i / w_i`` with
  ``E_i ~ Exp(1)``; the ``r`` smallest keys are the next ``r`` items of successive sampling
  (as a set). Cost ``O(n_items)``; used when rejection would need more trials than that
  (the user's positives hold most of the weight, or ``n_j`` is close to ``|C_j|``). Because
  successive sampling is Markov in the remaining set, switching from rejection to keys in
  the middle of a user keeps the distribution exact.

When ``n_j ≥ |C_j|`` the user gets all of ``C_j`` (no randomness).

Random numbers: user ``j``'s stream is ``stream_seed(seed, epoch, j)``
(:mod:`cfcore._kernels.rng`), so the output depends on ``(seed, epoch)`` and the data only —
never on the number of threads or on which thread served which user.

Memory: per thread, two bitmaps of ``n_items`` bits (positives ∪ drawn, and drawn), and
``n_items`` float64 keys and int32 candidate ids for the keys path (≈ 12.25 bytes ×
``n_items`` × threads), allocated once per call, outside the loop over users. The bitmaps
keep the per-user working set small (a 100k-item catalogue is 12.5 kB), and reading the
drawn bitmap word by word yields each user's negatives already sorted.
Weights are float64: popularity sums overflow float32's 24-bit mantissa.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from cfcore._kernels.rng import next_float, stream_seed

_ZERO = np.uint64(0)
_ONE = np.uint64(1)

# Read a user's n negatives back in order by scanning its bitmap (O(n_items / 64)) rather than
# sorting them (O(n log n)) when n_items / 64 < _SCAN_FACTOR · n · log2(n + 1).
_SCAN_FACTOR = 2.0

# Default ``switch`` of :func:`sample_into`: rejection trials are a few times cheaper than one
# candidate's key (a log and a division), so rejection goes on up to 4 trials per item.
DEFAULT_SWITCH = 4.0

# Give up on rejection after this many consecutive failed trials and finish with keys; this
# only matters when rounding makes the running estimate of the remaining weight too large.
_MAX_CONSECUTIVE_REJECTS = 64


@numba.njit(cache=True)
def select_smallest(keys: np.ndarray, ids: np.ndarray, m: int, k: int) -> None:
    """Reorder ``keys[:m]`` (and ``ids[:m]`` alongside) so the ``k`` smallest come first.

    Hoare-partition quickselect with a median-of-three pivot: expected ``O(m)``, in place,
    deterministic (no random pivot, so the result is reproducible).
    """
    if k <= 0 or k >= m:
        return
    target = k - 1
    lo = 0
    hi = m - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        a = keys[lo]
        b = keys[mid]
        c = keys[hi]
        if a > b:
            a, b = b, a
        if b > c:
            b = c
            if a > b:
                b = a
        pivot = b
        i = lo
        j = hi
        while i <= j:
            while keys[i] < pivot:
                i += 1
            while keys[j] > pivot:
                j -= 1
            if i <= j:
                tk = keys[i]
                keys[i] = keys[j]
                keys[j] = tk
                ti = ids[i]
                ids[i] = ids[j]
                ids[j] = ti
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return


@numba.njit(cache=True)
def build_alias(weights: np.ndarray, out_prob: np.ndarray, out_alias: np.ndarray) -> float:
    """Walker's alias table for sampling ``i ∝ weights[i]`` in O(1) (Vose's stable build).

    Draw: ``x = U · n``, ``i = ⌊x⌋``; keep ``i`` when ``x − i < out_prob[i]``, else take
    ``out_alias[i]``. Items of weight 0 get ``out_prob = 0`` and a positive-weight alias, so
    they are never drawn.

    Parameters
    ----------
    weights : float64 array (n), non-negative
    out_prob : float64 array (n), written
    out_alias : int32 array (n), written

    Returns
    -------
    float : the total weight (0 when there is nothing to draw; the table is then unusable)
    """
    n = weights.shape[0]
    total = 0.0
    heaviest = 0
    for i in range(n):
        total += weights[i]
        if weights[i] > weights[heaviest]:
            heaviest = i
    for i in range(n):
        out_prob[i] = 1.0
        out_alias[i] = i
    if n == 0 or total <= 0.0:
        return total
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    scaled = np.empty(n, dtype=np.float64)
    n_small = 0
    n_large = 0
    for i in range(n):
        scaled[i] = weights[i] * n / total
        if scaled[i] < 1.0:
            small[n_small] = i
            n_small += 1
        else:
            large[n_large] = i
            n_large += 1
    while n_small > 0 and n_large > 0:
        n_small -= 1
        s = small[n_small]
        g = large[n_large - 1]
        out_prob[s] = scaled[s]
        out_alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            n_large -= 1
            small[n_small] = g
            n_small += 1
    # Whatever is left has scaled weight 1 up to rounding: keep it with certainty, except
    # weight-0 items, which must stay undrawable.
    for t in range(n_small):
        s = small[t]
        if weights[s] <= 0.0:
            out_prob[s] = 0.0
            out_alias[s] = heaviest
    return total


@numba.njit(inline="always", cache=True)
def _count_weighted(weights: np.ndarray) -> int:
    n = 0
    for i in range(weights.shape[0]):
        if weights[i] > 0.0:
            n += 1
    return n


@numba.njit(cache=True)
def negative_counts(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    ratio: float,
    out_counts: np.ndarray,
    out_requested: np.ndarray,
) -> int:
    """Number of negatives per user; returns how many users get fewer than requested.

    ``requested_j = floor(ratio · |positives_j| + 0.5)`` (round half up) and
    ``out_counts[j] = min(requested_j, |C_j|)``, ``C_j`` = items with weight > 0 that are
    not among ``indices[indptr[j]:indptr[j+1]]`` (rows must hold no duplicates).

    Parameters
    ----------
    indptr : int64 array (n_users + 1)
    indices : int32 array (nnz), the positives, no duplicates within a row
    weights : float64 array (n_items), non-negative item weights
    ratio : float > 0
    out_counts : int64 array (n_users), written
    out_requested : int64 array (n_users), written: ``requested_j``

    Returns
    -------
    int : number of users with ``out_counts[j] < requested_j``
    """
    n_users = indptr.shape[0] - 1
    n_nonzero = _count_weighted(weights)
    n_short = 0
    for u in range(n_users):
        start = indptr[u]
        end = indptr[u + 1]
        n_pos_weighted = 0
        for p in range(start, end):
            if weights[indices[p]] > 0.0:
                n_pos_weighted += 1
        requested = np.int64(np.floor(ratio * (end - start) + 0.5))
        n_cand = n_nonzero - n_pos_weighted
        out_requested[u] = requested
        if requested > n_cand:
            out_counts[u] = n_cand
            n_short += 1
        else:
            out_counts[u] = requested
    return n_short


@numba.njit(inline="always", cache=True)
def _bit(i: int) -> np.uint64:
    return _ONE << np.uint64(i & 63)


@numba.njit(inline="always", cache=True)
def _has(bits: np.ndarray, i: int) -> bool:
    return (bits[i >> 6] >> np.uint64(i & 63)) & _ONE != _ZERO


@numba.njit(cache=True)
def _scratch(weights: np.ndarray, n_threads: int):
    """Per-thread scratch and the shared read-only summary of the weights."""
    n_items = weights.shape[0]
    n_words = (n_items + 63) >> 6
    # ``taken`` = positives ∪ drawn (what rejection rejects); ``drawn`` = this user's
    # negatives, read back in ascending order by a word scan.
    taken = np.zeros((n_threads, n_words), dtype=np.uint64)
    drawn = np.zeros((n_threads, n_words), dtype=np.uint64)
    keys = np.empty((n_threads, n_items), dtype=np.float64)
    cand = np.empty((n_threads, n_items), dtype=np.int32)
    weighted = np.zeros(n_words, dtype=np.uint64)  # items with weight > 0
    total = 0.0
    for i in range(n_items):
        total += weights[i]
        if weights[i] > 0.0:
            weighted[i >> 6] |= _bit(i)
    return taken, drawn, keys, cand, weighted, total, _count_weighted(weights)


@numba.njit(cache=True)
def _sample_user(
    u: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    alias_prob: np.ndarray,
    alias_idx: np.ndarray,
    weighted: np.ndarray,
    total: float,
    n_nonzero: int,
    seed: int,
    epoch: int,
    out_indptr: np.ndarray,
    out_indices: np.ndarray,
    tk: np.ndarray,
    dr: np.ndarray,
    key: np.ndarray,
    ids: np.ndarray,
    switch: float,
) -> int:
    """Draw user ``u``'s negatives into its slice of ``out_indices``; 1 if keys were used.

    ``tk``, ``dr`` (bitmaps) must be all zero on entry and are all zero on return.
    """
    out_start = out_indptr[u]
    n_wanted = out_indptr[u + 1] - out_start
    if n_wanted <= 0:
        return 0
    n_items = weights.shape[0]
    n_words = tk.shape[0]
    pos_start = indptr[u]
    pos_end = indptr[u + 1]
    # Mark the positives; sum their weight and count the weighted ones.
    w_pos = 0.0
    n_pos_weighted = 0
    for p in range(pos_start, pos_end):
        i = indices[p]
        tk[i >> 6] |= _bit(i)
        w = weights[i]
        if w > 0.0:
            w_pos += w
            n_pos_weighted += 1
    n_cand = n_nonzero - n_pos_weighted
    if n_wanted >= n_cand:
        # Take every candidate, ascending.
        k = out_start
        for wd in range(n_words):
            x = weighted[wd] & ~tk[wd]
            while x != _ZERO:
                out_indices[k] = (wd << 6) + np.int64(trailing_zeros(x))
                k += 1
                x &= x - _ONE
        for p in range(pos_start, pos_end):
            tk[indices[p] >> 6] = _ZERO
        return 0
    # Read the result back by scanning the bitmap when that is cheaper than sorting.
    scan = n_words < _SCAN_FACTOR * n_wanted * np.log2(n_wanted + 1.0)
    state = stream_seed(seed, epoch, u)
    budget = switch * n_items
    n_f = np.float64(n_items)
    w_left = total - w_pos
    n_drawn = 0
    fails = 0
    keyed = 0
    # Rejection from the global alias table (Fang eq. 2 restricted by rejecting positives
    # and repeats = successive sampling without replacement).
    while n_drawn < n_wanted:
        if (
            fails >= _MAX_CONSECUTIVE_REJECTS
            or w_left <= 0.0
            or (n_wanted - n_drawn) * total > budget * w_left
        ):
            break
        state, f = next_float(state)
        x = f * n_f
        i = np.int64(x)
        if i >= n_items:
            i = n_items - 1
        if x - i >= alias_prob[i]:
            i = alias_idx[i]
        if _has(tk, i):
            fails += 1
            continue
        b = _bit(i)
        tk[i >> 6] |= b
        dr[i >> 6] |= b
        out_indices[out_start + n_drawn] = i
        n_drawn += 1
        fails = 0
        w_left -= weights[i]
    if n_drawn < n_wanted:
        # Efraimidis–Spirakis keys over the candidates still available.
        keyed = 1
        m = 0
        for wd in range(n_words):
            x = weighted[wd] & ~tk[wd]
            while x != _ZERO:
                i = (wd << 6) + np.int64(trailing_zeros(x))
                x &= x - _ONE
                state, f = next_float(state)
                key[m] = -np.log(1.0 - f) / weights[i]
                ids[m] = i
                m += 1
        remaining = n_wanted - n_drawn
        select_smallest(key, ids, m, remaining)
        for t in range(remaining):
            i = ids[t]
            b = _bit(i)
            tk[i >> 6] |= b
            dr[i >> 6] |= b
            out_indices[out_start + n_drawn + t] = i
    if scan:
        k = out_start
        for wd in range(n_words):
            x = dr[wd]
            if x != _ZERO:
                dr[wd] = _ZERO
                while x != _ZERO:
                    out_indices[k] = (wd << 6) + np.int64(trailing_zeros(x))
                    k += 1
                    x &= x - _ONE
    else:
        out_indices[out_start : out_start + n_wanted].sort()
        for t in range(out_start, out_start + n_wanted):
            dr[out_indices[t] >> 6] = _ZERO
    if n_words <= (pos_end - pos_start) + n_wanted:
        for wd in range(n_words):
            tk[wd] = _ZERO
    else:
        for p in range(pos_start, pos_end):
            tk[indices[p] >> 6] = _ZERO
        for t in range(out_start, out_start + n_wanted):
            tk[out_indices[t] >> 6] = _ZERO
    return keyed


@numba.njit(parallel=True, cache=True)
def sample_into(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    alias_prob: np.ndarray,
    alias_idx: np.ndarray,
    seed: int,
    epoch: int,
    out_indptr: np.ndarray,
    out_indices: np.ndarray,
    n_threads: int,
    switch: float = DEFAULT_SWITCH,
) -> int:
    """Fill ``out_indices`` with each user's negatives (sorted), per the counts in ``out_indptr``.

    User ``j`` receives ``out_indptr[j+1] - out_indptr[j]`` distinct items from ``C_j`` by
    successive weighted sampling without replacement (see the module docstring); the count
    must not exceed ``|C_j|`` (use :func:`negative_counts`). Parallel over users
    (``prange``); :func:`sample_into_serial` is the same computation on one thread, with
    identical output.

    Parameters
    ----------
    indptr, indices : the users' positives (CSR, int64 / int32; no duplicates within a row)
    weights : float64 array (n_items), non-negative item weights
    alias_prob, alias_idx : the alias table of ``weights`` (:func:`build_alias`)
    seed, epoch : int, non-negative; user ``j`` uses ``stream_seed(seed, epoch, j)``
    out_indptr : int64 array (n_users + 1), prefix sum of the wanted counts
    out_indices : int32 array (out_indptr[-1]), written
    n_threads : int
        ``numba.get_num_threads()`` at the call (rows of per-thread scratch; thread ids are
        below it). Passed in because calling it inside the kernel defeats Numba's cache.
    switch : float
        Cost ratio steering the per-user choice between rejection and keys: rejection goes
        on while ``remaining · W / W_remaining ≤ switch · n_items`` (expected trials left
        against one pass over the catalogue). ``0`` forces keys, ``inf`` forces rejection
        (exact either way; a knob for tests and tuning).

    Returns
    -------
    int : number of users finished (at least partly) with Efraimidis–Spirakis keys.
    """
    taken, drawn, keys, cand, weighted, total, n_nonzero = _scratch(weights, n_threads)
    n_keyed = 0
    for u in numba.prange(indptr.shape[0] - 1):
        tid = numba.get_thread_id()
        n_keyed += _sample_user(
            u, indptr, indices, weights, alias_prob, alias_idx, weighted, total, n_nonzero,
            seed, epoch, out_indptr, out_indices, taken[tid], drawn[tid], keys[tid], cand[tid],
            switch,
        )
    return n_keyed


@numba.njit(cache=True)
def sample_into_serial(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    alias_prob: np.ndarray,
    alias_idx: np.ndarray,
    seed: int,
    epoch: int,
    out_indptr: np.ndarray,
    out_indices: np.ndarray,
    n_threads: int = 1,
    switch: float = DEFAULT_SWITCH,
) -> int:
    """:func:`sample_into` on the calling thread (no parallel region); same output.

    ``n_threads`` is accepted for a drop-in signature and ignored.
    """
    taken, drawn, keys, cand, weighted, total, n_nonzero = _scratch(weights, 1)
    n_keyed = 0
    for u in range(indptr.shape[0] - 1):
        n_keyed += _sample_user(
            u, indptr, indices, weights, alias_prob, alias_idx, weighted, total, n_nonzero,
            seed, epoch, out_indptr, out_indices, taken[0], drawn[0], keys[0], cand[0], switch,
        )
    return n_keyed
