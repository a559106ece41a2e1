"""Hogwild SGD kernels for matrix factorization of implicit feedback.

Free functions over arrays and scalars only (no Python objects); the model class in
:mod:`cfcore.factorize` owns validation, initialisation, seeding and progress.

Notation: user row ``x = X[u]``, item rows ``y_i = Y[i]``, optional biases ``b_u``, ``b_i``,
score ``s_ui = x·y_i + b_u + b_i``, learning rate ``η``, regularization ``λ`` (factors) and
``λ_b`` (biases). Every step is plain SGD on one term of the objective; the factor 2 of the
squared terms is absorbed into ``η`` (as libmf does). Regularization is applied on every step
to the rows that step touches (Fang et al. 2015, eq. 3: ``λ(‖x_j‖² + ‖y_i‖²)`` per entry).
All arithmetic is float32 (the running loss is summed in float64).

Losses (``loss`` code):

* ``SQUARED`` (Fang eq. 3): ``(v − s_ui)²``, ``v = 1`` for a positive, ``0`` for a sampled
  negative. Step with ``e = v − s``: ``x += η(e·y_i − λx)``; ``y_i += η(e·x − λy_i)``;
  ``b_u += η(e − λ_b b_u)``; ``b_i += η(e − λ_b b_i)``.
* ``LOGISTIC``: ``−v log σ(s) − (1−v) log(1 − σ(s))``; the same step with ``e = v − σ(s)``.
* ``BPR`` (Rendle et al. 2009): ``−log σ(s_ui − s_uj)`` for a positive i and a sampled
  negative j of the same user. With ``g = σ(−(s_ui − s_uj))``: ``x += η(g(y_i − y_j) − λx)``,
  ``y_i += η(g·x − λy_i)``, ``y_j += η(−g·x − λy_j)``, ``b_i += η(g − λ_b b_i)``,
  ``b_j += η(−g − λ_b b_j)`` (a user bias cancels in ``s_ui − s_uj``).
* ``WARP`` (Weston et al. 2011, as LightFM): for a positive i draw candidates j from the
  catalogue until one violates the margin, ``s_uj > s_ui − m``, or ``max_sampled`` draws are
  spent (a draw that is one of the user's positives is rejected and counts, as in LightFM).
  After n draws the rank estimate is ``⌊(N−1)/n⌋`` and the step is that of
  ``w·(m − s_ui + s_uj)`` with ``w = log(max(1, ⌊(N − 1)/n⌋))`` (N = number of items,
  :func:`warp_weights`): the BPR step with ``g = w``. No violation: no step. Candidates come
  from an alias table over the sampler's item weights ``w(p_i)`` (:func:`draw_item`); with
  ``uniform`` weights this is exactly LightFM's draw and the rank estimate is unbiased.

Work order (the cache): entries are visited *user-grouped*. Each epoch the users are shuffled
(Python side, from ``(seed, epoch)``) and cut into ``n_blocks`` contiguous slices; a block
processes its users one after another, and each user's entries — positives and sampled
negatives — in a freshly shuffled order (Fisher–Yates from the block's stream
``stream_seed(seed, epoch, block)``). The user row is loaded once per epoch and stays in L1
while all of its entries are processed; only item rows are gathered at random, and the row
of the entry :data:`PREFETCH_AHEAD` places ahead is prefetched. The blocks (not the threads)
define the work partition, so the serial driver is the bit-reproducible reference and the
parallel driver differs from it only through Hogwild races on item rows (Niu et al. 2011): a
user row is only ever written by the block that owns the user in that epoch. The ``random``
drivers visit uniformly random entries with replacement (the classical order, as implicit's
BPR) and are kept for comparison.

Pairwise losses visit each positive once per epoch; BPR pairs it with a negative drawn
uniformly from the same user's sampled negatives (themselves drawn with the sampler's
popularity weighting, Fang Alg. 1), WARP searches the catalogue table; an epoch is ``nnz``
triples (for WARP: ``nnz`` positives, each costing up to ``max_sampled`` dot products).
Pointwise losses visit every positive and every sampled negative once per epoch.

Specialisation: the loss, the bias switch and whether item rows learn (``False`` for
fold-in) are compile-time constants of each driver (:func:`epoch_kernel` builds and caches
one per combination), so the hot loop carries no branch on them and LLVM vectorises the
loops over factors. Rows are indexed in place (``X[u, f]``): a row *view* would cost an
atomic reference-count update per access on a counter all threads share.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from cfcore._kernels.rng import next_below, next_float, stream_seed
from cfcore._kernels.sgd_prefetch import prefetch_row

SQUARED = 0
LOGISTIC = 1
BPR = 2
WARP = 3

LOSS_CODES = {"squared": SQUARED, "logistic": LOGISTIC, "bpr": BPR, "warp": WARP}
PAIRWISE = (BPR, WARP)

#: Entries ahead whose item row is prefetched.
PREFETCH_AHEAD = 4

# error_model="numpy": a division by zero gives inf/NaN (caught after the epoch as divergence)
# instead of raising ZeroDivisionError from inside the kernel, and costs no branch.
_JIT = dict(cache=True, fastmath=True, nogil=True, error_model="numpy")
_INLINE = dict(inline="always", **_JIT)

_f32 = np.float32


# ----------------------------------------------------------------------------- steps
@numba.njit(**_INLINE)
def _dot(X, u, Y, i):
    """``X[u] · Y[i]``."""
    acc = _f32(0.0)
    for f in range(X.shape[1]):
        acc += X[u, f] * Y[i, f]
    return acc


@numba.njit(**_INLINE)
def _log1p_exp(z):
    """``log(1 + exp(z))`` in float32, stable for both signs."""
    if z > 0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@numba.njit(**_INLINE)
def pointwise_step(
    X, Y, user_bias, item_bias, u, i, target, loss, lr, reg, reg_bias, use_bias, learn_items
):
    """One SGD step on entry (u, i) with target 1 or 0 (squared or logistic loss).

    Returns the entry's loss: ``(v − s)²`` or ``log(1 + e^s) − v s``.
    """
    s = _dot(X, u, Y, i)
    if use_bias:
        s += user_bias[u] + item_bias[i]
    if loss == SQUARED:
        e = target - s
        value = e * e
    else:
        e = target - _f32(1.0) / (_f32(1.0) + math.exp(-s))
        value = _log1p_exp(s) - target * s
    ge = lr * e
    decay = _f32(1.0) - lr * reg
    if learn_items:
        for f in range(X.shape[1]):
            xf = X[u, f]
            yf = Y[i, f]
            X[u, f] = decay * xf + ge * yf
            Y[i, f] = decay * yf + ge * xf
    else:
        for f in range(X.shape[1]):
            X[u, f] = decay * X[u, f] + ge * Y[i, f]
    if use_bias:
        user_bias[u] += lr * (e - reg_bias * user_bias[u])
        if learn_items:
            item_bias[i] += lr * (e - reg_bias * item_bias[i])
    return value


@numba.njit(**_INLINE)
def pairwise_step(X, Y, item_bias, u, i, j, g, lr, reg, reg_bias, use_bias, learn_items):
    """``x += η(g(y_i − y_j) − λx)``, ``y_i += η(g x − λy_i)``, ``y_j += η(−g x − λy_j)``.

    ``g = σ(−(s_ui − s_uj))`` for BPR, the rank weight for WARP.
    """
    gl = lr * g
    decay = _f32(1.0) - lr * reg
    if learn_items:
        for f in range(X.shape[1]):
            xf = X[u, f]
            yif = Y[i, f]
            yjf = Y[j, f]
            X[u, f] = decay * xf + gl * (yif - yjf)
            Y[i, f] = decay * yif + gl * xf
            Y[j, f] = decay * yjf - gl * xf
        if use_bias:
            item_bias[i] += lr * (g - reg_bias * item_bias[i])
            item_bias[j] += lr * (-g - reg_bias * item_bias[j])
    else:
        for f in range(X.shape[1]):
            X[u, f] = decay * X[u, f] + gl * (Y[i, f] - Y[j, f])


@numba.njit(**_INLINE)
def bpr_step(X, Y, item_bias, u, i, j, lr, reg, reg_bias, use_bias, learn_items):
    """One BPR step on triple (u, i, j). Returns ``−log σ(s_ui − s_uj)``."""
    d = _f32(0.0)
    for f in range(X.shape[1]):
        d += X[u, f] * (Y[i, f] - Y[j, f])
    if use_bias:
        d += item_bias[i] - item_bias[j]
    t = math.exp(d)
    g = _f32(1.0) / (_f32(1.0) + t)  # σ(−d)
    pairwise_step(X, Y, item_bias, u, i, j, g, lr, reg, reg_bias, use_bias, learn_items)
    # −log σ(d) = log(1 + e^−d): log1p(t) − d for d ≤ 0, log1p(1/t) otherwise (t = e^d).
    if d <= 0:
        return math.log1p(t) - d
    return math.log1p(_f32(1.0) / t)


@numba.njit(**_JIT)
def warp_weights(n_items, max_sampled):
    """``w[n] = log(max(1, ⌊(n_items − 1)/n⌋))`` for n = 1..max_sampled (``w[0]`` unused)."""
    out = np.zeros(max_sampled + 1, dtype=np.float32)
    for n in range(1, max_sampled + 1):
        rank = (n_items - 1) // n
        out[n] = math.log(max(rank, 1))
    return out


@numba.njit(**_INLINE)
def draw_item(state, alias_prob, alias_idx):
    """One item ``i ∝ w_i`` from a Walker alias table (``cfcore._kernels.sampling.build_alias``
    over the sampler's weights). Returns ``(state, i)``."""
    n = alias_prob.shape[0]
    state, r = next_float(state)
    x = r * n
    i = min(np.int64(x), n - 1)
    if x - i >= alias_prob[i]:
        i = np.int64(alias_idx[i])
    return state, i


@numba.njit(**_INLINE)
def is_positive(pos_indices, p0, n_pos, j):
    """Whether item j is among the user's positives ``pos_indices[p0:p0+n_pos]`` (sorted)."""
    lo = p0
    hi = p0 + n_pos
    while lo < hi:
        mid = (lo + hi) >> 1
        v = pos_indices[mid]
        if v < j:
            lo = mid + 1
        elif v > j:
            hi = mid
        else:
            return True
    return False


@numba.njit(**_INLINE)
def warp_step(
    X,
    Y,
    item_bias,
    u,
    i,
    first_j,
    pos_indices,
    p0,
    n_pos,
    alias_prob,
    alias_idx,
    state,
    weights,
    margin,
    lr,
    reg,
    reg_bias,
    use_bias,
    learn_items,
):
    """One WARP step for positive i. Candidates are drawn from the catalogue by the alias
    table (the sampler's weighting; ``uniform`` is LightFM's choice); a draw that is one of
    the user's positives is rejected and counts as a trial, as in LightFM. ``first_j`` is the
    first draw, made in advance so its row could be prefetched. Returns ``(state, loss)``."""
    si = _dot(X, u, Y, i)
    if use_bias:
        si += item_bias[i]
    j = first_j
    for trial in range(1, weights.shape[0]):
        if trial > 1:
            state, j = draw_item(state, alias_prob, alias_idx)
        if is_positive(pos_indices, p0, n_pos, j):
            continue
        sj = _dot(X, u, Y, j)
        if use_bias:
            sj += item_bias[j]
        if sj > si - margin:
            w = weights[trial]
            pairwise_step(X, Y, item_bias, u, i, j, w, lr, reg, reg_bias, use_bias, learn_items)
            return state, w * (margin - si + sj)
    return state, _f32(0.0)


# ----------------------------------------------------------------------------- drivers
_DRIVERS: dict[tuple, object] = {}


def epoch_kernel(loss: int, use_bias: bool, learn_items: bool, parallel: bool, order: str):
    """The compiled epoch driver for one combination of compile-time constants.

    ``order="grouped"`` drivers have the signature
    ``(users, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y, user_bias, item_bias,
    lr, reg, reg_bias, margin, weights, alias_prob, alias_idx, seed, epoch, loss_out,
    count_out)``; ``order="random"`` drivers
    ``(n_draws, entry_user, entry_item, entry_target, pos_indptr, pos_indices, neg_indptr,
    neg_indices, X, Y, user_bias, item_bias, lr, reg, reg_bias, margin, weights, alias_prob,
    alias_idx, seed, epoch, loss_out, count_out)``.

    Arrays: ``users`` int32 (this epoch's user order), int64 ``*_indptr``, int32 ``*_indices``
    and ``entry_*``, float32 C-contiguous ``X`` (n_users, k) and ``Y`` (n_items, k), float32
    biases (always allocated; read only when ``use_bias``), float32 ``entry_target``,
    float32 ``weights`` (:func:`warp_weights`; any length-2 array for other losses), the
    WARP candidate table ``alias_prob`` (float64) / ``alias_idx`` (int32) from
    ``cfcore._kernels.sampling.build_alias`` (length-1 dummies for other losses). Positives
    must be sorted within each user (WARP rejects candidates by binary search).
    Scalars: float32 ``lr``, ``reg``, ``reg_bias``, ``margin``; int ``seed``, ``epoch``.
    The number of blocks is ``len(loss_out)``; block b writes its loss sum (float64) and its
    number of updates (int64) to ``loss_out[b]``, ``count_out[b]``.
    """
    key = (int(loss), bool(use_bias), bool(learn_items), bool(parallel), order)
    driver = _DRIVERS.get(key)
    if driver is None:
        if order == "grouped":
            driver = _make_grouped(*key[:4])
        elif order == "random":
            driver = _make_random(*key[:4])
        else:
            raise ValueError(f"order: unknown {order!r}")
        _DRIVERS[key] = driver
    return driver


@numba.njit(**_INLINE)
def _user_pointwise(
    u,
    state,
    pos_indptr,
    pos_indices,
    neg_indptr,
    neg_indices,
    X,
    Y,
    user_bias,
    item_bias,
    lr,
    reg,
    reg_bias,
    work,
    loss,
    use_bias,
    learn_items,
):
    """All entries of user u, shuffled; returns ``(state, loss_sum, n_updates)``."""
    p0 = pos_indptr[u]
    n_pos = pos_indptr[u + 1] - p0
    q0 = neg_indptr[u]
    n = n_pos + neg_indptr[u + 1] - q0
    # Positives as item, negatives as -(item + 1); inside-out Fisher-Yates while filling.
    for k in range(n):
        if k < n_pos:
            v = np.int64(pos_indices[p0 + k])
        else:
            v = -np.int64(neg_indices[q0 + k - n_pos]) - 1
        state, r = next_below(state, k + 1)
        work[k] = work[r]
        work[r] = v
    total = 0.0
    for k in range(n):
        if k + PREFETCH_AHEAD < n:
            w = work[k + PREFETCH_AHEAD]
            prefetch_row(Y, w if w >= 0 else -w - 1)
        v = work[k]
        if v >= 0:
            i = v
            target = _f32(1.0)
        else:
            i = -v - 1
            target = _f32(0.0)
        total += pointwise_step(
            X, Y, user_bias, item_bias, u, i, target, loss, lr, reg, reg_bias, use_bias, learn_items
        )
    return state, total, n


@numba.njit(**_INLINE)
def _user_pairwise(
    u,
    state,
    pos_indptr,
    pos_indices,
    neg_indptr,
    neg_indices,
    X,
    Y,
    item_bias,
    lr,
    reg,
    reg_bias,
    margin,
    weights,
    alias_prob,
    alias_idx,
    work,
    loss,
    use_bias,
    learn_items,
):
    """Every positive of user u once, shuffled, each with a drawn negative."""
    p0 = pos_indptr[u]
    n_pos = pos_indptr[u + 1] - p0
    q0 = neg_indptr[u]
    n_neg = neg_indptr[u + 1] - q0
    if n_neg == 0 and loss == BPR:
        return state, 0.0, 0
    # work[:n] = shuffled positives, work[n:2n] = a negative drawn for each (BPR: from the
    # user's sampled negatives; WARP: its first candidate, from the catalogue table).
    for k in range(n_pos):
        state, r = next_below(state, k + 1)
        work[k] = work[r]
        work[r] = pos_indices[p0 + k]
    for k in range(n_pos):
        if loss == BPR:
            state, r = next_below(state, n_neg)
            work[n_pos + k] = neg_indices[q0 + r]
        else:
            state, work[n_pos + k] = draw_item(state, alias_prob, alias_idx)
    total = 0.0
    for k in range(n_pos):
        if k + PREFETCH_AHEAD < n_pos:
            prefetch_row(Y, work[k + PREFETCH_AHEAD])
            prefetch_row(Y, work[n_pos + k + PREFETCH_AHEAD])
        i = work[k]
        j = work[n_pos + k]
        if loss == BPR:
            total += bpr_step(X, Y, item_bias, u, i, j, lr, reg, reg_bias, use_bias, learn_items)
        else:
            state, value = warp_step(
                X,
                Y,
                item_bias,
                u,
                i,
                j,
                pos_indices,
                p0,
                n_pos,
                alias_prob,
                alias_idx,
                state,
                weights,
                margin,
                lr,
                reg,
                reg_bias,
                use_bias,
                learn_items,
            )
            total += value
    return state, total, n_pos


def _make_grouped(loss, use_bias, learn_items, parallel):
    pairwise = loss == BPR or loss == WARP

    @numba.njit(parallel=parallel, **_JIT)
    def run(
        users,
        pos_indptr,
        pos_indices,
        neg_indptr,
        neg_indices,
        X,
        Y,
        user_bias,
        item_bias,
        lr,
        reg,
        reg_bias,
        margin,
        weights,
        alias_prob,
        alias_idx,
        seed,
        epoch,
        loss_out,
        count_out,
    ):
        # Numba's cache key hashes the closure cells but not the jit flags: reading
        # ``parallel`` here makes it a cell, so serial and parallel builds get their own entry.
        n_blocks = loss_out.shape[0] if parallel else loss_out.shape[0]
        n_users = users.shape[0]
        for b in prange(n_blocks):
            lo = (b * n_users) // n_blocks
            hi = ((b + 1) * n_users) // n_blocks
            longest = 0
            for k in range(lo, hi):
                u = users[k]
                n = pos_indptr[u + 1] - pos_indptr[u]
                if pairwise:
                    n *= 2
                else:
                    n += neg_indptr[u + 1] - neg_indptr[u]
                longest = max(longest, n)
            work = np.empty(longest, dtype=np.int64)  # one allocation per block
            state = stream_seed(seed, epoch, b)
            total = 0.0
            count = 0
            for k in range(lo, hi):
                u = users[k]
                if pairwise:
                    state, t, c = _user_pairwise(
                        u,
                        state,
                        pos_indptr,
                        pos_indices,
                        neg_indptr,
                        neg_indices,
                        X,
                        Y,
                        item_bias,
                        lr,
                        reg,
                        reg_bias,
                        margin,
                        weights,
                        alias_prob,
                        alias_idx,
                        work,
                        loss,
                        use_bias,
                        learn_items,
                    )
                else:
                    state, t, c = _user_pointwise(
                        u,
                        state,
                        pos_indptr,
                        pos_indices,
                        neg_indptr,
                        neg_indices,
                        X,
                        Y,
                        user_bias,
                        item_bias,
                        lr,
                        reg,
                        reg_bias,
                        work,
                        loss,
                        use_bias,
                        learn_items,
                    )
                total += t
                count += c
            loss_out[b] = total
            count_out[b] = count

    return run


def _make_random(loss, use_bias, learn_items, parallel):
    pairwise = loss == BPR or loss == WARP

    @numba.njit(parallel=parallel, **_JIT)
    def run(
        n_draws,
        entry_user,
        entry_item,
        entry_target,
        pos_indptr,
        pos_indices,
        neg_indptr,
        neg_indices,
        X,
        Y,
        user_bias,
        item_bias,
        lr,
        reg,
        reg_bias,
        margin,
        weights,
        alias_prob,
        alias_idx,
        seed,
        epoch,
        loss_out,
        count_out,
    ):
        n_blocks = loss_out.shape[0] if parallel else loss_out.shape[0]  # cache key, see above
        n_entries = entry_user.shape[0]
        for b in prange(n_blocks):
            lo = (b * n_draws) // n_blocks
            hi = ((b + 1) * n_draws) // n_blocks
            state = stream_seed(seed, epoch, b)
            total = 0.0
            count = 0
            for _ in range(lo, hi):
                state, e = next_below(state, n_entries)
                u = entry_user[e]
                i = entry_item[e]
                count += 1
                if not pairwise:
                    total += pointwise_step(
                        X,
                        Y,
                        user_bias,
                        item_bias,
                        u,
                        i,
                        entry_target[e],
                        loss,
                        lr,
                        reg,
                        reg_bias,
                        use_bias,
                        learn_items,
                    )
                elif loss == BPR:
                    q0 = neg_indptr[u]
                    n_neg = neg_indptr[u + 1] - q0
                    if n_neg == 0:
                        count -= 1
                        continue
                    state, r = next_below(state, n_neg)
                    j = neg_indices[q0 + r]
                    total += bpr_step(
                        X, Y, item_bias, u, i, j, lr, reg, reg_bias, use_bias, learn_items
                    )
                else:
                    p0 = pos_indptr[u]
                    state, j = draw_item(state, alias_prob, alias_idx)
                    state, value = warp_step(
                        X,
                        Y,
                        item_bias,
                        u,
                        i,
                        j,
                        pos_indices,
                        p0,
                        pos_indptr[u + 1] - p0,
                        alias_prob,
                        alias_idx,
                        state,
                        weights,
                        margin,
                        lr,
                        reg,
                        reg_bias,
                        use_bias,
                        learn_items,
                    )
                    total += value
            loss_out[b] = total
            count_out[b] = count

    return run
