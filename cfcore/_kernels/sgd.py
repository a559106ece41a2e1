"""Hogwild SGD kernels for matrix factorization of implicit feedback.

Free functions over arrays and scalars only (no Python objects); the model class in
:mod:`cfcore.factorize` owns validation, initialisation, seeding and progress.

Notation: user row ``x = X[u]``, item rows ``y_i = Y[i]``, optional biases ``b_u``, ``b_i``,
score ``s_ui = x·y_i + b_u + b_i``, learning rate ``η``, regularization ``λ`` (factors) and
``λ_b`` (biases). Every step is plain SGD on one term of the objective; the factor 2 of the
squared terms is absorbed into ``η`` (as libmf does). Regularization is applied on every step
to the rows that step touches (Fang et al. 2015, eq. 3: ``λ(‖x_j‖² + ‖y_i‖²)`` per entry).

Losses (``loss`` code):

* ``SQUARED`` (Fang eq. 3): ``(v − s_ui)²``, ``v = 1`` for a positive, ``0`` for a sampled
  negative. Step: ``e = v − s``; ``x += η(e·y_i − λx)``; ``y_i += η(e·x − λy_i)``.
* ``LOGISTIC``: ``−v log σ(s) − (1−v) log(1 − σ(s))``. Step: as squared with ``e = v − σ(s)``.
* ``BPR`` (Rendle et al. 2009): ``−log σ(s_ui − s_uj)`` for a positive i and a sampled
  negative j of the same user. With ``g = σ(−(s_ui − s_uj))``: ``x += η(g(y_i − y_j) − λx)``,
  ``y_i += η(g·x − λy_i)``, ``y_j += η(−g·x − λy_j)``, ``b_i += η(g − λ_b b_i)``,
  ``b_j += η(−g − λ_b b_j)``.
* ``WARP`` (Weston et al. 2011, as LightFM): for a positive i draw negatives j until one
  violates the margin, ``s_uj > s_ui − m``, or ``max_sampled`` draws are spent. After n draws
  the rank estimate is ``⌊(N−1)/n⌋`` and the step is that of ``w·(m − s_ui + s_uj)`` with
  ``w = log(max(1, ⌊(N − 1)/n⌋))`` (N = number of items): the BPR step with ``g = w``.

Work order (the cache): entries are visited *user-grouped*. Each epoch the users are shuffled
(Python side, from ``(seed, epoch)``) and cut into ``n_blocks`` contiguous slices; a block
processes its users one after another, and each user's entries — positives and sampled
negatives — in a freshly shuffled order (Fisher–Yates from the block's stream
``stream_seed(seed, epoch, block)``). The user row is therefore loaded once per epoch and stays
in L1 while all of its entries are processed, and only item rows are gathered at random. The
blocks (not the threads) define the work partition, so the serial driver with one thread is
the bit-reproducible reference and the parallel driver differs from it only through Hogwild
races on item rows (Niu et al. 2011): a user row is only ever written by the block that owns
the user in that epoch. ``*_random`` drivers visit uniformly random entries (with replacement,
as implicit's BPR) — the classical order, kept for comparison.

Pairwise losses (BPR, WARP) visit each positive once per epoch and pair it with a negative
drawn uniformly from the same user's sampled negatives (which were drawn with the sampler's
popularity weighting, Fang Alg. 1); an epoch is ``nnz`` triples. Pointwise losses (squared,
logistic) visit every positive and every sampled negative once per epoch.

Every driver returns ``(loss_sum, n_updates)`` per block in the ``loss_out``/``count_out``
arrays (float64/int64, length ``n_blocks``) so the caller can report the running loss.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from cfcore._kernels.rng import next_below, stream_seed

SQUARED = 0
LOGISTIC = 1
BPR = 2
WARP = 3

LOSS_CODES = {"squared": SQUARED, "logistic": LOGISTIC, "bpr": BPR, "warp": WARP}
PAIRWISE = (BPR, WARP)

_JIT = dict(cache=True, fastmath=True, nogil=True)


@numba.njit(**_JIT)
def _dot(x, y):
    acc = np.float32(0.0)
    for f in range(x.shape[0]):
        acc += x[f] * y[f]
    return acc


@numba.njit(**_JIT)
def _softplus(z):
    """log(1 + exp(z)), stable for both signs."""
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@numba.njit(**_JIT)
def pointwise_step(
    X, Y, user_bias, item_bias, u, i, target, loss, lr, reg, reg_bias, use_bias, learn_items
):
    """One SGD step on entry (u, i) with target ``target`` (1 or 0). Returns the entry's loss."""
    x = X[u]
    y = Y[i]
    s = _dot(x, y)
    if use_bias:
        s += user_bias[u] + item_bias[i]
    if loss == SQUARED:
        e = np.float32(target - s)
        value = np.float64(e) * np.float64(e)
    else:
        z = np.float64(s)
        p = 1.0 / (1.0 + math.exp(-z))
        e = np.float32(target - p)
        value = _softplus(z) - target * z
    ge = lr * e
    decay = np.float32(1.0) - lr * reg
    if learn_items:
        for f in range(x.shape[0]):
            xf = x[f]
            yf = y[f]
            x[f] = decay * xf + ge * yf
            y[f] = decay * yf + ge * xf
    else:
        for f in range(x.shape[0]):
            x[f] = decay * x[f] + ge * y[f]
    if use_bias:
        user_bias[u] += lr * (e - reg_bias * user_bias[u])
        if learn_items:
            item_bias[i] += lr * (e - reg_bias * item_bias[i])
    return value


@numba.njit(**_JIT)
def pairwise_step(X, Y, item_bias, u, i, j, g, lr, reg, reg_bias, use_bias, learn_items):
    """The step ``x += η(g(y_i − y_j) − λx)``, ``y_i += η(g x − λy_i)``, ``y_j += η(−g x − λy_j)``.

    ``g = σ(−(s_ui − s_uj))`` for BPR, the rank weight for WARP.
    """
    x = X[u]
    yi = Y[i]
    yj = Y[j]
    gl = lr * g
    decay = np.float32(1.0) - lr * reg
    if learn_items:
        for f in range(x.shape[0]):
            xf = x[f]
            yif = yi[f]
            yjf = yj[f]
            x[f] = decay * xf + gl * (yif - yjf)
            yi[f] = decay * yif + gl * xf
            yj[f] = decay * yjf - gl * xf
        if use_bias:
            item_bias[i] += lr * (g - reg_bias * item_bias[i])
            item_bias[j] += lr * (-g - reg_bias * item_bias[j])
    else:
        for f in range(x.shape[0]):
            x[f] = decay * x[f] + gl * (yi[f] - yj[f])


@numba.njit(**_JIT)
def _pair_diff(X, Y, item_bias, u, i, j, use_bias):
    x = X[u]
    yi = Y[i]
    yj = Y[j]
    acc = np.float32(0.0)
    for f in range(x.shape[0]):
        acc += x[f] * (yi[f] - yj[f])
    if use_bias:
        acc += item_bias[i] - item_bias[j]
    return acc


@numba.njit(**_JIT)
def bpr_step(X, Y, item_bias, u, i, j, lr, reg, reg_bias, use_bias, learn_items):
    """One BPR step on triple (u, i, j). Returns ``−log σ(s_ui − s_uj)``."""
    d = _pair_diff(X, Y, item_bias, u, i, j, use_bias)
    g = np.float32(1.0 / (1.0 + math.exp(np.float64(d))))
    pairwise_step(X, Y, item_bias, u, i, j, g, lr, reg, reg_bias, use_bias, learn_items)
    return _softplus(-np.float64(d))


@numba.njit(**_JIT)
def warp_weight(n_items, n_trials):
    """LightFM's rank weight ``log(max(1, ⌊(n_items − 1) / n_trials⌋))``."""
    rank = (n_items - 1) // n_trials
    if rank < 1:
        rank = 1
    return np.float32(math.log(rank))


# ----------------------------------------------------------------------------- one user
@numba.njit(**_JIT)
def _user_pointwise(
    u, state, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y, user_bias, item_bias,
    loss, lr, reg, reg_bias, use_bias, learn_items, work,
):
    p0 = pos_indptr[u]
    n_pos = pos_indptr[u + 1] - p0
    q0 = neg_indptr[u]
    n_neg = neg_indptr[u + 1] - q0
    n = n_pos + n_neg
    # Encode positives as item, negatives as -(item + 1); Fisher-Yates shuffle as we fill.
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
        v = work[k]
        if v >= 0:
            total += pointwise_step(X, Y, user_bias, item_bias, u, v, np.float32(1.0), loss,
                                    lr, reg, reg_bias, use_bias, learn_items)
        else:
            total += pointwise_step(X, Y, user_bias, item_bias, u, -v - 1, np.float32(0.0),
                                    loss, lr, reg, reg_bias, use_bias, learn_items)
    return state, total, n


@numba.njit(**_JIT)
def _user_pairwise(
    u, state, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y, item_bias,
    loss, lr, reg, reg_bias, use_bias, learn_items, margin, max_sampled, n_items, work,
):
    p0 = pos_indptr[u]
    n_pos = pos_indptr[u + 1] - p0
    q0 = neg_indptr[u]
    n_neg = neg_indptr[u + 1] - q0
    if n_neg == 0:
        return state, 0.0, 0
    for k in range(n_pos):
        state, r = next_below(state, k + 1)
        work[k] = work[r]
        work[r] = pos_indices[p0 + k]
    total = 0.0
    x = X[u]
    for k in range(n_pos):
        i = work[k]
        if loss == BPR:
            state, r = next_below(state, n_neg)
            j = neg_indices[q0 + r]
            total += bpr_step(X, Y, item_bias, u, i, j, lr, reg, reg_bias, use_bias, learn_items)
        else:
            si = _dot(x, Y[i])
            if use_bias:
                si += item_bias[i]
            for trial in range(1, max_sampled + 1):
                state, r = next_below(state, n_neg)
                j = neg_indices[q0 + r]
                sj = _dot(x, Y[j])
                if use_bias:
                    sj += item_bias[j]
                if sj > si - margin:
                    w = warp_weight(n_items, trial)
                    total += w * (margin - si + sj)
                    pairwise_step(X, Y, item_bias, u, i, j, w, lr, reg, reg_bias, use_bias,
                                  learn_items)
                    break
    return state, total, n_pos


# ----------------------------------------------------------------------------- one block
@numba.njit(**_JIT)
def _block(
    b, n_blocks, users, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y, user_bias,
    item_bias, loss, lr, reg, reg_bias, use_bias, learn_items, margin, max_sampled, seed, epoch,
    loss_out, count_out,
):
    n_users = users.shape[0]
    lo = (b * n_users) // n_blocks
    hi = ((b + 1) * n_users) // n_blocks
    pairwise = loss == BPR or loss == WARP
    longest = 0
    for k in range(lo, hi):
        u = users[k]
        n = pos_indptr[u + 1] - pos_indptr[u]
        if not pairwise:
            n += neg_indptr[u + 1] - neg_indptr[u]
        if n > longest:
            longest = n
    work = np.empty(longest, dtype=np.int64)  # one allocation per block, reused by its users
    state = stream_seed(seed, epoch, b)
    total = 0.0
    count = 0
    n_items = Y.shape[0]
    for k in range(lo, hi):
        u = users[k]
        if pairwise:
            state, t, c = _user_pairwise(
                u, state, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y, item_bias,
                loss, lr, reg, reg_bias, use_bias, learn_items, margin, max_sampled, n_items,
                work,
            )
        else:
            state, t, c = _user_pointwise(
                u, state, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y, user_bias,
                item_bias, loss, lr, reg, reg_bias, use_bias, learn_items, work,
            )
        total += t
        count += c
    loss_out[b] = total
    count_out[b] = count


@numba.njit(parallel=False, **_JIT)
def epoch_grouped_serial(
    users, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y, user_bias, item_bias, loss,
    lr, reg, reg_bias, use_bias, learn_items, margin, max_sampled, seed, epoch, loss_out,
    count_out,
):
    """One user-grouped epoch, blocks in order: the bit-reproducible reference.

    ``users`` is this epoch's user order; the number of blocks is ``len(loss_out)``.
    Arrays: int64 ``*_indptr``, int32 ``*_indices``, float32 C-contiguous ``X`` (n_users, k),
    ``Y`` (n_items, k), float32 biases. Scalars: float32 ``lr``, ``reg``, ``reg_bias``,
    ``margin``; int ``loss`` code, ``max_sampled``, ``seed``, ``epoch``; bool ``use_bias``,
    ``learn_items``. Per-block loss sums and update counts go to ``loss_out``/``count_out``.
    """
    n_blocks = loss_out.shape[0]
    for b in range(n_blocks):
        _block(
            b, n_blocks, users, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y,
            user_bias, item_bias, loss, lr, reg, reg_bias, use_bias, learn_items, margin,
            max_sampled, seed, epoch, loss_out, count_out,
        )


@numba.njit(parallel=True, **_JIT)
def epoch_grouped_parallel(
    users, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y, user_bias, item_bias, loss,
    lr, reg, reg_bias, use_bias, learn_items, margin, max_sampled, seed, epoch, loss_out,
    count_out,
):
    """:func:`epoch_grouped_serial` with the blocks spread over threads (Hogwild).

    The same block kernel on the same partition; only the interleaving of item-row updates
    between threads differs.
    """
    n_blocks = loss_out.shape[0]
    for b in prange(n_blocks):
        _block(
            b, n_blocks, users, pos_indptr, pos_indices, neg_indptr, neg_indices, X, Y,
            user_bias, item_bias, loss, lr, reg, reg_bias, use_bias, learn_items, margin,
            max_sampled, seed, epoch, loss_out, count_out,
        )


# ----------------------------------------------------------------------------- random order
@numba.njit(**_JIT)
def _random_block(
    b, n_blocks, n_draws, entry_user, entry_item, entry_target, pos_indptr, neg_indptr,
    neg_indices, X, Y, user_bias, item_bias, loss, lr, reg, reg_bias, use_bias, margin,
    max_sampled, seed, epoch, loss_out, count_out,
):
    lo = (b * n_draws) // n_blocks
    hi = ((b + 1) * n_draws) // n_blocks
    n_entries = entry_user.shape[0]
    n_items = Y.shape[0]
    state = stream_seed(seed, epoch, b)
    total = 0.0
    count = 0
    for _ in range(lo, hi):
        state, e = next_below(state, n_entries)
        u = entry_user[e]
        i = entry_item[e]
        if loss == SQUARED or loss == LOGISTIC:
            total += pointwise_step(X, Y, user_bias, item_bias, u, i, entry_target[e], loss, lr,
                                    reg, reg_bias, use_bias, True)
            count += 1
            continue
        q0 = neg_indptr[u]
        n_neg = neg_indptr[u + 1] - q0
        if n_neg == 0:
            continue
        if loss == BPR:
            state, r = next_below(state, n_neg)
            total += bpr_step(X, Y, item_bias, u, i, neg_indices[q0 + r], lr, reg, reg_bias,
                              use_bias, True)
        else:
            x = X[u]
            si = _dot(x, Y[i])
            if use_bias:
                si += item_bias[i]
            for trial in range(1, max_sampled + 1):
                state, r = next_below(state, n_neg)
                j = neg_indices[q0 + r]
                sj = _dot(x, Y[j])
                if use_bias:
                    sj += item_bias[j]
                if sj > si - margin:
                    w = warp_weight(n_items, trial)
                    total += w * (margin - si + sj)
                    pairwise_step(X, Y, item_bias, u, i, j, w, lr, reg, reg_bias, use_bias, True)
                    break
        count += 1
    loss_out[b] = total
    count_out[b] = count


@numba.njit(parallel=False, **_JIT)
def epoch_random_serial(
    n_draws, entry_user, entry_item, entry_target, pos_indptr, neg_indptr, neg_indices, X, Y,
    user_bias, item_bias, loss, lr, reg, reg_bias, use_bias, margin, max_sampled, seed, epoch,
    loss_out, count_out,
):
    """``n_draws`` uniformly random entries (with replacement), split over the blocks.

    Pointwise losses draw from all entries (positives and negatives, ``entry_target`` 1/0);
    pairwise losses draw from the positives and pair each with one of the user's negatives.
    """
    n_blocks = loss_out.shape[0]
    for b in range(n_blocks):
        _random_block(
            b, n_blocks, n_draws, entry_user, entry_item, entry_target, pos_indptr, neg_indptr,
            neg_indices, X, Y, user_bias, item_bias, loss, lr, reg, reg_bias, use_bias, margin,
            max_sampled, seed, epoch, loss_out, count_out,
        )


@numba.njit(parallel=True, **_JIT)
def epoch_random_parallel(
    n_draws, entry_user, entry_item, entry_target, pos_indptr, neg_indptr, neg_indices, X, Y,
    user_bias, item_bias, loss, lr, reg, reg_bias, use_bias, margin, max_sampled, seed, epoch,
    loss_out, count_out,
):
    """:func:`epoch_random_serial` with the blocks spread over threads (Hogwild)."""
    n_blocks = loss_out.shape[0]
    for b in prange(n_blocks):
        _random_block(
            b, n_blocks, n_draws, entry_user, entry_item, entry_target, pos_indptr, neg_indptr,
            neg_indices, X, Y, user_bias, item_bias, loss, lr, reg, reg_bias, use_bias, margin,
            max_sampled, seed, epoch, loss_out, count_out,
        )
