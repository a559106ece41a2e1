"""Numba kernels of Fang et al.'s negative sampler (Algorithm 1).

Fang, Jin, Yang, Mech & Wang (2015), *Collaborative Feature Learning from Social Media*,
Algorithm 1 and eq. 1–2: for every user ``j`` draw ``n_j`` items ``j`` has not viewed, with
``P_ij ∝ w(p_i)`` over the non-viewed items (``P_ij = 0`` for viewed ones), without
replacement. The Python API (:mod:`cfcore.sampling`) validates the input, turns the item
weights into a packed alias table (:func:`build_alias`, :func:`pack_alias`) and calls:

1. :func:`negative_counts` — ``n_j = min(round(ratio · |positives_j|), |C_j|)`` per user and
   the number of users that got fewer than requested (the shortfall);
2. :func:`sample_into` — fills a CSR whose ``out_indptr`` is the prefix sum of the counts,
   each user's indices sorted ascending, with no allocation inside the loop over users.

Threads: :func:`sample_into` is built ``parallel=True`` (users under ``prange``), the only
build, as the SGD drivers of :mod:`cfcore._kernels.sgd` — which also call the per-user
routine :func:`sample_user` themselves, drawing each user's negatives when they visit the
user instead of reading a stored draw (the same negatives); the number of Numba threads
(``cfcore.threads.numba_threads``) decides how many users are drawn at once, and the output
does not depend on it (see "Random numbers").

The distribution
----------------
Each user's negatives are drawn by *successive weighted sampling without replacement*: the
first item is drawn with probability ``w_i / W_j`` over the user's candidates ``C_j`` (the
items with ``w_i > 0`` the user has not interacted with, ``W_j = Σ_{i∈C_j} w_i``), the second
∝ ``w`` over ``C_j`` minus the first, and so on. So a single draw is exactly Fang's eq. 2,
and a set ``S`` drawn in order ``s_1, s_2, …`` has probability
``Π_t w_{s_t} / (W_j − w_{s_1} − … − w_{s_{t−1}})``. Items of weight 0 are never drawn.
(Inclusion probabilities are therefore less skewed than ``w`` once ``n_j`` is a sizeable
share of ``|C_j|``: heavy items are taken early and cannot be taken twice.)
Two exact implementations of that one distribution are mixed per user:

* rejection — draw ``i`` ∝ ``w`` over all items from a global alias table (Walker 1977,
  Vose 1991: O(1) per draw) and reject it when it is a positive or already drawn.
  Conditioned on acceptance the draw is ∝ ``w`` over the remaining candidates, i.e. the next
  step of successive sampling. Expected trials per accepted draw: ``W / W_remaining``.
* Efraimidis–Spirakis (2006) keys — every remaining candidate gets ``k_i = E_i / w_i`` with
  ``E_i ~ Exp(1)``; the ``r`` smallest keys are the next ``r`` items of successive sampling
  (as a set). Cost O(n_items); taken over once a user's rejection has failed
  ``switch · n_items`` trials (its positives hold most of the weight, or ``n_j`` is close to
  ``|C_j|``), which bounds every user's cost by O(n_j + n_items). Successive sampling is
  Markov in the remaining set, so switching in the middle of a user keeps the law exact.

When ``n_j ≥ |C_j|`` the user gets all of ``C_j`` (no randomness).

Numerics: alias slots are chosen by Lemire's multiply-shift made exactly uniform by
rejection, the alias coin has 32 bits (probabilities exact to ~2**-32 per slot), the keys
use 53-bit uniforms. Weights are float64 (popularity sums overflow float32's mantissa).

Random numbers: user ``j``'s stream is ``stream_seed(seed, epoch, j)``
(:mod:`cfcore._kernels.rng`) XOR a sampler-specific constant (so it is not the SGD kernel's
stream for block ``j``), so the output depends on ``(seed, epoch)`` and the data only —
never on the number of threads or on which thread served which user. ``j`` is the user's
index in the whole matrix (the ``streams`` argument), so a subset of the users — one
partition of a Spark job — draws exactly the negatives the whole matrix would give them.

Memory: per thread, a bitmap of ``n_items`` bits (the current user's positives ∪ drawn
negatives; a 100k-item catalogue is 12.5 kB, so it stays in L1/L2), plus ``n_items`` float64
keys and int32 candidate ids for the keys path (≈ 12.1 bytes × ``n_items`` × threads), all
allocated once per call (:func:`scratch`; each thread's rows padded to whole cache lines),
outside the loop over users. Reading the bitmap word by word (with
the sorted positives masked out) yields each user's negatives already sorted; users with
few negatives in a large catalogue sort their slice instead.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from cfcore._kernels.rng import next_float, next_u64, stream_seed

_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_S32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
# XORed into every user's stream state so the sampler's streams never coincide with another
# kernel's for the same (seed, epoch, index) — the SGD kernel draws from
# ``stream_seed(seed, epoch, block)`` with the same seed and epoch.
_STREAM_DOMAIN = np.uint64(0x6E65676174697665)  # "negative"

# Read a user's n negatives back in order by scanning its bitmap (O(n_items / 64)) rather than
# sorting them (O(n log n)) when n_items / 64 < _SCAN_FACTOR · n · log2(n + 1).
_SCAN_FACTOR = 2.0

# Default ``switch`` of :func:`sample_into`: a failed rejection trial is a few times cheaper
# than one candidate's key (a log and a division), so a user may fail 4 trials per catalogue
# item before its remaining draws are done with keys.
DEFAULT_SWITCH = 4.0


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


@numba.njit(cache=True)
def pack_alias(prob: np.ndarray, alias: np.ndarray, out_table: np.ndarray) -> None:
    """Pack an alias table into one ``uint64`` per slot: ``alias << 32 | threshold``.

    ``threshold = round(prob · 2**32)`` (at most ``2**32 − 1``); slot ``i`` keeps ``i`` when
    32 random bits are below it and yields the alias otherwise. One load per draw instead of
    two (measured 4× faster than separate float/int arrays); the coin is quantised to
    ``2**-32``. Slots with ``prob = 1`` are their own alias, so the cap does not matter.
    """
    for i in range(prob.shape[0]):
        thr = np.floor(prob[i] * 4294967296.0 + 0.5)
        if thr > 4294967295.0:
            thr = 4294967295.0
        out_table[i] = (np.uint64(alias[i]) << _S32) | np.uint64(thr)


@numba.njit(inline="always", cache=True)
def _draw_alias(state: np.uint64, table: np.ndarray, n: np.uint64, reject_below: np.uint64):
    """One draw ``i ∝ w`` from a packed alias table; returns ``(state, i)``.

    The slot is Lemire's (2019) multiply-shift of the high 32 random bits, made exactly
    uniform by rejecting the ``(2**32 − n) mod n`` biased values (``reject_below``); the low
    32 bits are the coin.
    """
    while True:
        state, z = next_u64(state)
        m = (z >> _S32) * n
        if (m & _LOW32) < reject_below:
            continue
        slot = m >> _S32
        e = table[slot]
        if (z & _LOW32) < (e & _LOW32):
            return state, np.int64(slot)
        return state, np.int64(e >> _S32)


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


@numba.njit(inline="always", cache=True)
def padded(n: int, per_line: int) -> int:
    """``n`` elements rounded up to whole 64-byte lines (``per_line`` elements each), plus a
    line: rows of per-thread scratch that long never share a cache line (no false sharing
    between threads), wherever the array starts."""
    return (n + 2 * per_line - 1) // per_line * per_line


@numba.njit(cache=True)
def scratch(weights: np.ndarray, n_threads: int):
    """Per-thread scratch (rows padded by :func:`padded`) and the shared read-only summary
    of the weights."""
    n_items = weights.shape[0]
    n_words = (n_items + 63) >> 6
    # ``taken``: one bitmap per thread of the current user's positives ∪ drawn negatives.
    taken = np.zeros((n_threads, padded(n_words, 8)), dtype=np.uint64)
    keys = np.empty((n_threads, padded(n_items, 8)), dtype=np.float64)
    cand = np.empty((n_threads, padded(n_items, 16)), dtype=np.int32)
    weighted = np.zeros(n_words, dtype=np.uint64)  # items with weight > 0
    n_nonzero = 0
    for i in range(n_items):
        if weights[i] > 0.0:
            weighted[i >> 6] |= _bit(i)
            n_nonzero += 1
    return taken, keys, cand, weighted, n_nonzero


@numba.njit(cache=True)
def sample_user(
    u: int,
    stream: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    alias_table: np.ndarray,
    weighted: np.ndarray,
    n_nonzero: int,
    seed: int,
    epoch: int,
    out_indices: np.ndarray,
    out_start: int,
    n_wanted: int,
    tk: np.ndarray,
    key: np.ndarray,
    ids: np.ndarray,
    switch: float,
) -> int:
    """Draw user ``u``'s ``n_wanted`` negatives (sorted) into
    ``out_indices[out_start:out_start + n_wanted]``, from random stream ``stream`` (the
    user's index in the whole matrix); 1 if keys were used.

    The one per-user routine: :func:`sample_into` calls it with each user's slice of the
    output CSR, the SGD epoch drivers (:mod:`cfcore._kernels.sgd`) with a per-thread buffer
    (``out_start = 0``), so both give the same negatives. ``tk`` (bitmap) must be all zero on
    entry and is all zero on return.
    """
    if n_wanted <= 0:
        return 0
    n_items = weights.shape[0]
    n_words = (n_items + 63) >> 6
    pos_start = indptr[u]
    pos_end = indptr[u + 1]
    # Mark the positives and count the weighted ones.
    n_pos_weighted = 0
    for p in range(pos_start, pos_end):
        i = indices[p]
        tk[i >> 6] |= _bit(i)
        if weights[i] > 0.0:
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
    state = stream_seed(seed, epoch, stream) ^ _STREAM_DOMAIN
    n_u = np.uint64(n_items)
    reject_below = ((_LOW32 - n_u) + _ONE) % n_u  # (2**32 - n) mod n
    fail_budget = switch * n_items
    n_drawn = 0
    fails = 0
    keyed = 0
    # Rejection from the global alias table (Fang eq. 2 restricted by rejecting positives
    # and repeats = successive sampling without replacement). Failed trials are capped at
    # ``switch · n_items`` — about the cost of the keys pass — so no user costs more than
    # O(n_wanted + n_items) whatever share of the weight its positives hold.
    while n_drawn < n_wanted:
        state, i = _draw_alias(state, alias_table, n_u, reject_below)
        if _has(tk, i):
            fails += 1
            if fails > fail_budget:
                break
            continue
        tk[i >> 6] |= _bit(i)
        out_indices[out_start + n_drawn] = i
        n_drawn += 1
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
            tk[i >> 6] |= _bit(i)
            out_indices[out_start + n_drawn + t] = i
    if n_words < _SCAN_FACTOR * n_wanted * np.log2(n_wanted + 1.0):
        # Read the negatives back in order: scan the bitmap word by word, masking out the
        # positives (rows are sorted, so they are walked alongside), clearing as we go.
        k = out_start
        p = pos_start
        for wd in range(n_words):
            x = tk[wd]
            if x != _ZERO:
                tk[wd] = _ZERO
                while p < pos_end and (indices[p] >> 6) == wd:
                    x &= ~_bit(indices[p])
                    p += 1
                while x != _ZERO:
                    out_indices[k] = (wd << 6) + np.int64(trailing_zeros(x))
                    k += 1
                    x &= x - _ONE
    else:
        out_indices[out_start : out_start + n_wanted].sort()
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
    alias_table: np.ndarray,
    seed: int,
    epoch: int,
    streams: np.ndarray,
    out_indptr: np.ndarray,
    out_indices: np.ndarray,
    n_threads: int,
    switch: float = DEFAULT_SWITCH,
) -> int:
    """Fill ``out_indices`` with each user's negatives (sorted), per the counts in ``out_indptr``.

    User ``j`` receives ``out_indptr[j+1] - out_indptr[j]`` distinct items from ``C_j`` by
    successive weighted sampling without replacement (see the module docstring); the count
    must not exceed ``|C_j|`` (use :func:`negative_counts`). Parallel over users
    (``prange``); the output is the same for any number of threads.

    Parameters
    ----------
    indptr, indices : the users' positives (CSR, int64 / int32; each row sorted ascending
        without duplicates — scipy's canonical format)
    weights : float64 array (n_items), non-negative item weights
    alias_table : uint64 array (n_items), the packed alias table of ``weights``
        (:func:`build_alias` then :func:`pack_alias`)
    seed, epoch : int, non-negative; row ``j`` uses ``stream_seed(seed, epoch, streams[j])``
        (XOR ``_STREAM_DOMAIN``)
    streams : int64 array (n_users), the index of each row's user in the whole matrix
        (``arange`` for a whole matrix; a subset of its users passes their indices and gets
        exactly the negatives the whole matrix would give them)
    out_indptr : int64 array (n_users + 1), prefix sum of the wanted counts
    out_indices : int32 array (out_indptr[-1]), written
    n_threads : int
        ``numba.get_num_threads()`` at the call (rows of per-thread scratch; thread ids are
        below it). Passed in because calling it inside the kernel defeats Numba's cache.
    switch : float
        A user's rejection stops after ``switch · n_items`` failed trials and its remaining
        draws are done with keys (one pass over the catalogue). ``0`` forces keys, ``inf``
        forces rejection (exact either way; a knob for tests and tuning).

    Returns
    -------
    int : number of users finished (at least partly) with Efraimidis–Spirakis keys.
    """
    taken, keys, cand, weighted, n_nonzero = scratch(weights, n_threads)
    n_keyed = 0
    for u in numba.prange(indptr.shape[0] - 1):
        tid = numba.get_thread_id()
        n_keyed += sample_user(
            u,
            streams[u],
            indptr,
            indices,
            weights,
            alias_table,
            weighted,
            n_nonzero,
            seed,
            epoch,
            out_indices,
            out_indptr[u],
            out_indptr[u + 1] - out_indptr[u],
            taken[tid],
            keys[tid],
            cand[tid],
            switch,
        )
    return n_keyed
