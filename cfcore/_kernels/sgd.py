"""Hogwild SGD kernels for matrix factorization of implicit feedback.

Kernels over arrays and scalars only (no Python objects); the model class in
:mod:`cfcore.factorize` owns validation, defaults, initialisation, seeding and progress.

Entry point
-----------
``driver = epoch_kernel(loss=SQUARED, order="grouped", use_bias=False, learn_items=True,
adagrad=False)`` returns the compiled epoch driver for one combination of compile-time
constants. Every driver has the one signature ``driver(tables, entries, hyper, epoch)``; the
four arguments are typed bundles (NamedTuples, fields by name; build them with their ``of``
constructors, which check dtypes, shapes and contiguity, so two float32 arguments cannot be
swapped silently):

* :class:`Tables` — what an epoch learns, updated in place: the factor tables, the biases
  and the AdaGrad accumulators;
* :class:`Entries` — what it reads: each user's positives and sampled negatives (CSR, or —
  grouped order — their counts and the sampler's tables, the kernel drawing each user's
  negatives when it visits the user), and for ``order="random"`` the flat list of entries;
* :class:`Hyper` — the step: learning rate, regularization, WARP's margin, rank weights and
  candidate table;
* :class:`Epoch` — which epoch: seed and epoch number (the random streams), the user order,
  and the per-block loss and update counters it writes.

One epoch of BPR over a users × items CSR of positives ``pos`` and sampled negatives ``neg``
(what :class:`cfcore.Factorizer` does each epoch)::

    tables = Tables.of(X, Y)                       # float32 (n_users, k), (n_items, k)
    entries = Entries.of(pos.indptr, pos.indices, neg.indptr, neg.indices)
    hyper = Hyper.of(lr=0.05, reg=0.01, reg_bias=0.01)
    epoch = Epoch.of(seed=0, epoch=e, n_blocks=1024, users=order)   # order: int32 permutation
    with cfcore.threads.numba_threads(2):
        epoch_kernel(loss=BPR)(tables, entries, hyper, epoch)
    mean_loss = epoch.loss_out.sum() / epoch.count_out.sum()

Every driver is built with ``parallel=True``; how many blocks run at once is the number of
Numba threads (``cfcore.threads.numba_threads``). One thread runs the blocks in order and is
the bit-reproducible reference (there is no separate serial build: Numba compiles the serial
form of these loops 1.5–2× slower for the pairwise losses).
Inside a driver the step functions (:func:`pointwise_step`, :func:`bpr_step`,
:func:`warp_step`) take the :class:`Tables` arrays in field order and the :class:`Hyper`
whole, for the Numba reasons noted above the drivers.

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

Adaptive steps (``adagrad``, a compile-time switch): row-wise AdaGrad (Duchi et al. 2011, one
accumulator per factor row as in DLRM's "row-wise AdaGrad"; LightFM keeps one per element).
Each row r keeps ``G_r`` (starting at 1, as LightFM's accumulators), adds the mean squared
loss gradient of the step — ``g²‖y_i − y_j‖²/k`` for the user row of a pairwise step,
``g²‖x‖²/k`` for its item rows (``e²‖y‖²/k``, ``e²‖x‖²/k`` pointwise) — and steps with
``η/√G_r``. Rows seen often (popular items, active users) get small steps, rare ones keep
large ones: with WARP's rank weights of up to ``log N`` this is what keeps a large catalogue
stable without hand-tuning η. Biases share their row's rate.

Work order (the cache): entries are visited *user-grouped*. Each epoch the users are shuffled
(Python side, from ``(seed, epoch)``) and cut into ``n_blocks`` contiguous slices; a block
processes its users one after another, and each user's entries — positives and sampled
negatives — in a freshly shuffled order (Fisher–Yates from the block's stream
``stream_seed(seed, epoch, block)``). The user row is loaded once per epoch and stays in L1
while all of its entries are processed; only item rows are gathered at random, and the row
of the entry :data:`PREFETCH_AHEAD` places ahead is prefetched. WARP's catalogue candidates
are i.i.d. draws independent of the positive, so each block keeps a ring of
:data:`CANDIDATES_AHEAD` of them drawn and prefetched ahead of use (:func:`next_candidate`):
every trial's DRAM miss overlaps the trials before it (16M data: 1.6× the throughput of
drawing on demand). The blocks (not the threads)
define the work partition, so a driver on one thread is a bit-reproducible reference and more
threads differ from it only through Hogwild races on item rows (Niu et al. 2011): a user row
is only ever written by the block that owns the user in that epoch. The ``random``
drivers visit uniformly random entries with replacement (the classical order, as implicit's
BPR) and are kept for comparison.

Pairwise losses visit each positive once per epoch; BPR pairs it with a negative drawn
uniformly from the same user's sampled negatives (themselves drawn with the sampler's
popularity weighting, Fang Alg. 1), WARP searches the catalogue table; an epoch is ``nnz``
triples (for WARP: ``nnz`` positives, each costing up to ``max_sampled`` dot products).
Pointwise losses visit every positive and every sampled negative once per epoch.

Negatives drawn in the kernel (grouped order, :class:`Entries` with the sampler's tables):
before its entries, each user's negatives are drawn into a per-thread buffer by
:func:`cfcore._kernels.sampling.sample_user` — the routine
:func:`cfcore._kernels.sampling.sample_into` runs per user — from the user's own stream
``(seed, neg_epoch, u)``, so they are exactly the stored draw's, whichever thread serves the
user, and a one-thread fit is bit for bit the fit over stored negatives. The sampler's
scratch (a bitmap of the catalogue, its key arrays) and the buffer (the largest user's
count) are allocated once per thread per epoch, outside the loop over users. This is what
:class:`cfcore.Factorizer` does: ``neg_ratio × nnz`` int32 (16 bytes per interaction at
the squared loss's ratio 4) are never stored. Stored negatives remain for the random order,
fold-in and the Spark backend (block-local negatives).

Specialisation: the loss, the order, the bias switch, whether item rows learn (``False``
for fold-in) and AdaGrad are compile-time constants of each driver (:func:`epoch_kernel`
builds and caches one per combination), so the hot loop carries no branch on them and LLVM
vectorises the loops over factors. Rows are indexed in place (``X[u, f]``): a row *view*
would cost an atomic reference-count update per access on a counter all threads share.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from cfcore._kernels.prefetch import prefetch_row
from cfcore._kernels.rng import next_below, next_float, stream_seed
from cfcore._kernels.sampling import DEFAULT_SWITCH, padded, sample_user
from cfcore._kernels.sampling import scratch as sampler_scratch

SQUARED = 0
LOGISTIC = 1
BPR = 2
WARP = 3

LOSS_CODES = {"squared": SQUARED, "logistic": LOGISTIC, "bpr": BPR, "warp": WARP}
PAIRWISE = (BPR, WARP)
ORDERS = ("grouped", "random")

#: Entries ahead whose item row is prefetched.
PREFETCH_AHEAD = 4

#: WARP candidates drawn (and prefetched) ahead of use: a ring of ``CANDIDATES_AHEAD`` slots
#: plus its head index (a power of two).
CANDIDATES_AHEAD = 8

# error_model="numpy": a division by zero gives inf/NaN (caught after the epoch as divergence)
# instead of raising ZeroDivisionError from inside the kernel, and costs no branch.
_JIT = dict(cache=True, fastmath=True, nogil=True, error_model="numpy")
_INLINE = dict(inline="always", **_JIT)


_f32 = np.float32


# ----------------------------------------------------------------------------- bundles
def _array(value, name, dtype, ndim, length=None):
    """``value`` unchanged if it is a C-contiguous ``dtype`` array of ``ndim`` dims (and
    ``length`` rows); ``ValueError`` naming the field otherwise (no silent copy)."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.dtype != dtype or value.ndim != ndim or not value.flags.c_contiguous:
        raise ValueError(
            f"{name}: expected a C-contiguous {np.dtype(dtype).name} array with {ndim} "
            f"dimension(s), got {value.dtype} with shape {value.shape}"
        )
    if length is not None and value.shape[0] != length:
        raise ValueError(f"{name}: expected {length} rows, got {value.shape[0]}")
    return value


class Tables(NamedTuple):
    """What an epoch learns, updated in place.

    Fields: ``user_factors`` X (n_users, k) and ``item_factors`` Y (n_items, k), float32
    C-contiguous; ``user_bias`` (n_users,) and ``item_bias`` (n_items,), float32 (always
    allocated, read only by ``use_bias`` drivers); ``user_acc`` (n_users,) and ``item_acc``
    (n_items,), float32 row-wise AdaGrad accumulators (read only by ``adagrad`` drivers;
    length-1 dummies otherwise).
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_acc: np.ndarray
    item_acc: np.ndarray

    @classmethod
    def of(
        cls,
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        user_bias: np.ndarray | None = None,
        item_bias: np.ndarray | None = None,
        adagrad: bool = False,
    ) -> Tables:
        """Check the tables; missing biases become zeros, the accumulators start at 1
        (one per row with ``adagrad``, length-1 dummies without)."""
        X = _array(user_factors, "user_factors", np.float32, 2)
        Y = _array(item_factors, "item_factors", np.float32, 2)
        if X.shape[1] != Y.shape[1]:
            raise ValueError(f"factor tables differ in width: {X.shape[1]} vs {Y.shape[1]}")
        n_users, n_items = X.shape[0], Y.shape[0]
        ub = np.zeros(n_users, np.float32) if user_bias is None else user_bias
        ib = np.zeros(n_items, np.float32) if item_bias is None else item_bias
        return cls(
            X,
            Y,
            _array(ub, "user_bias", np.float32, 1, n_users),
            _array(ib, "item_bias", np.float32, 1, n_items),
            np.ones(n_users if adagrad else 1, np.float32),
            np.ones(n_items if adagrad else 1, np.float32),
        )


class Entries(NamedTuple):
    """What an epoch reads: users' positives and sampled negatives.

    Fields: ``pos_indptr``/``pos_indices`` and ``neg_indptr``/``neg_indices`` (CSR over
    users; int64 indptr, int32 indices; positives sorted within each user, without
    duplicates — WARP rejects candidates by binary search, the sampler marks them); for
    ``order="random"`` the flat entries ``entry_user``, ``entry_item`` (int32) and
    ``entry_target`` (float32: 1 positive, 0 negative; pairwise losses list positives only),
    empty for ``"grouped"``.

    Negatives drawn in the kernel (grouped order only): ``neg_weights`` (float64, the
    sampler's item weights) and ``neg_alias`` (uint64, their packed alias table,
    :func:`cfcore._kernels.sampling.pack_alias`), with ``neg_indptr`` holding the counts
    (:func:`cfcore._kernels.sampling.negative_counts`) and ``neg_indices`` empty. Each block
    then draws user ``u``'s negatives just before its entries, into a per-thread buffer, with
    :func:`cfcore._kernels.sampling.sample_user` from the stream ``(seed, neg_epoch, u)`` of
    :class:`Epoch` — exactly what :func:`cfcore._kernels.sampling.sample_into` would have
    stored — so the negatives never take ``4 × nnz`` int32 of memory. Both are empty (length
    0) when ``neg_indices`` holds the negatives.
    """

    pos_indptr: np.ndarray
    pos_indices: np.ndarray
    neg_indptr: np.ndarray
    neg_indices: np.ndarray
    entry_user: np.ndarray
    entry_item: np.ndarray
    entry_target: np.ndarray
    neg_weights: np.ndarray
    neg_alias: np.ndarray

    @classmethod
    def of(
        cls,
        pos_indptr: np.ndarray,
        pos_indices: np.ndarray,
        neg_indptr: np.ndarray,
        neg_indices: np.ndarray,
        order: str = "grouped",
        pairwise: bool = False,
        *,
        neg_weights: np.ndarray | None = None,
        neg_alias: np.ndarray | None = None,
    ) -> Entries:
        """Check the CSR arrays (converted to int64/int32 if needed); for ``order="random"``
        also build the flat entries (positives only when ``pairwise``). With ``neg_weights``
        and ``neg_alias`` the kernel draws the negatives (``neg_indptr`` gives their counts,
        ``neg_indices`` must be empty; grouped order only)."""
        pos_indptr = np.ascontiguousarray(pos_indptr, dtype=np.int64)
        pos_indices = np.ascontiguousarray(pos_indices, dtype=np.int32)
        neg_indptr = np.ascontiguousarray(neg_indptr, dtype=np.int64)
        neg_indices = np.ascontiguousarray(neg_indices, dtype=np.int32)
        if len(pos_indptr) != len(neg_indptr):
            raise ValueError(
                f"pos_indptr and neg_indptr differ in users: {len(pos_indptr) - 1} vs "
                f"{len(neg_indptr) - 1}"
            )
        drawn = neg_weights is not None or neg_alias is not None
        n_stored = 0 if drawn else neg_indptr[-1]
        if pos_indptr[-1] != len(pos_indices) or n_stored != len(neg_indices):
            raise ValueError("indptr does not end at the number of indices")
        empty_i, empty_f = np.zeros(0, np.int32), np.zeros(0, np.float32)
        weights, alias = np.zeros(0, np.float64), np.zeros(0, np.uint64)
        if drawn:
            if order != "grouped":
                raise ValueError("negatives drawn in the kernel need order='grouped'")
            weights = _array(neg_weights, "neg_weights", np.float64, 1)
            alias = _array(neg_alias, "neg_alias", np.uint64, 1, len(weights))
            if len(weights) == 0:
                raise ValueError("neg_weights: empty (no catalogue to draw negatives from)")
        if order == "grouped":
            flat = (empty_i, empty_i, empty_f)
            return cls(pos_indptr, pos_indices, neg_indptr, neg_indices, *flat, weights, alias)
        if order != "random":
            raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
        users = np.arange(len(pos_indptr) - 1, dtype=np.int32)
        pu = np.repeat(users, np.diff(pos_indptr))
        if pairwise:
            flat = (pu, pos_indices, np.ones(len(pu), np.float32))
        else:
            nu = np.repeat(users, np.diff(neg_indptr))
            flat = (
                np.concatenate([pu, nu]).astype(np.int32),
                np.concatenate([pos_indices, neg_indices]).astype(np.int32),
                np.concatenate([np.ones(len(pu), np.float32), np.zeros(len(nu), np.float32)]),
            )
        return cls(pos_indptr, pos_indices, neg_indptr, neg_indices, *flat, weights, alias)


class Hyper(NamedTuple):
    """The step's hyper-parameters.

    Fields: float32 ``lr`` (this epoch's η), ``reg`` (λ), ``reg_bias`` (λ_b), ``margin``
    (WARP's m); ``warp_weights`` float32 (:func:`warp_weights`), the WARP candidate table
    ``alias_prob`` (float64) / ``alias_idx`` (int32) from
    ``cfcore._kernels.sampling.build_alias`` (a length-1 table draws uniformly from the
    catalogue). Other losses ignore the last three.
    """

    lr: np.float32
    reg: np.float32
    reg_bias: np.float32
    margin: np.float32
    warp_weights: np.ndarray
    alias_prob: np.ndarray
    alias_idx: np.ndarray

    @classmethod
    def of(
        cls,
        *,
        lr: float,
        reg: float,
        reg_bias: float,
        margin: float = 1.0,
        warp_weights: np.ndarray | None = None,
        alias_prob: np.ndarray | None = None,
        alias_idx: np.ndarray | None = None,
    ) -> Hyper:
        """Keyword-only; scalars become float32; no WARP arrays = a uniform one-slot table."""
        weights = np.zeros(2, np.float32) if warp_weights is None else warp_weights
        prob = np.ones(1, np.float64) if alias_prob is None else alias_prob
        idx = np.zeros(1, np.int32) if alias_idx is None else alias_idx
        return cls(
            _f32(lr),
            _f32(reg),
            _f32(reg_bias),
            _f32(margin),
            _array(weights, "warp_weights", np.float32, 1),
            _array(prob, "alias_prob", np.float64, 1),
            _array(idx, "alias_idx", np.int32, 1, len(prob)),
        )


class Epoch(NamedTuple):
    """Which epoch, and where its counters go.

    Fields: ``seed`` and ``epoch`` (block b draws from ``stream_seed(seed, epoch, b)``);
    ``users`` int32 — the grouped order's user sequence for this epoch (the blocks are
    contiguous slices of it); ``n_draws`` — the random order's number of entries drawn;
    ``loss_out`` float64 and ``count_out`` int64, one slot per block: the number of blocks is
    their length, and block b writes its loss sum and its number of updates there;
    ``neg_epoch`` — the epoch whose negatives are drawn when :class:`Entries` has the
    sampler's tables (``epoch`` when they are resampled every epoch, 0 when drawn once).
    """

    seed: int
    epoch: int
    users: np.ndarray
    n_draws: int
    loss_out: np.ndarray
    count_out: np.ndarray
    neg_epoch: int

    @classmethod
    def of(
        cls,
        *,
        seed: int,
        epoch: int,
        n_blocks: int,
        users: np.ndarray | None = None,
        n_draws: int = 0,
        neg_epoch: int | None = None,
    ) -> Epoch:
        """Keyword-only; fresh zeroed counters for ``n_blocks`` blocks; ``neg_epoch``
        defaults to ``epoch``."""
        order = np.zeros(0, np.int32) if users is None else users
        return cls(
            np.int64(seed),
            np.int64(epoch),
            _array(order, "users", np.int32, 1),
            np.int64(n_draws),
            np.zeros(n_blocks, np.float64),
            np.zeros(n_blocks, np.int64),
            np.int64(epoch if neg_epoch is None else neg_epoch),
        )


# ----------------------------------------------------------------------------- steps
@numba.njit(**_INLINE)
def _dot(X, u, Y, i):
    """``X[u] · Y[i]``."""
    acc = _f32(0.0)
    for f in range(X.shape[1]):
        acc += X[u, f] * Y[i, f]
    return acc


@numba.njit(**_INLINE)
def _adagrad_rate(acc, r, lr, g2):
    """Row-wise AdaGrad: ``acc[r] += g2``; returns ``η / √acc[r]``."""
    a = acc[r] + g2
    acc[r] = a
    return lr / math.sqrt(a)


@numba.njit(**_INLINE)
def _sq_norm(T, r):
    """``‖T[r]‖²``."""
    acc = _f32(0.0)
    for f in range(T.shape[1]):
        acc += T[r, f] * T[r, f]
    return acc


@numba.njit(**_INLINE)
def _log1p_exp(z):
    """``log(1 + exp(z))`` in float32, stable for both signs."""
    if z > 0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@numba.njit(**_INLINE)
def pointwise_step(X, Y, ub, ib, uacc, iacc, h, u, i, target, loss, use_bias, learn_items, adagrad):
    """One SGD step on entry (u, i) with target 1 or 0 (squared or logistic loss), with the
    :class:`Hyper` ``h``, on the tables of :class:`Tables` (``X`` … ``iacc``, its fields in
    order).

    Returns the entry's loss: ``(v − s)²`` or ``log(1 + e^s) − v s``.
    """
    s = _dot(X, u, Y, i)
    if use_bias:
        s += ub[u] + ib[i]
    if loss == SQUARED:
        e = target - s
        value = e * e
    else:
        e = target - _f32(1.0) / (_f32(1.0) + math.exp(-s))
        value = _log1p_exp(s) - target * s
    lr_u = h.lr
    lr_i = h.lr
    if adagrad:
        g2 = e * e / X.shape[1]
        lr_u = _adagrad_rate(uacc, u, h.lr, g2 * _sq_norm(Y, i))
        if learn_items:
            lr_i = _adagrad_rate(iacc, i, h.lr, g2 * _sq_norm(X, u))
    ge_u = lr_u * e
    decay_u = _f32(1.0) - lr_u * h.reg
    if learn_items:
        ge_i = lr_i * e
        decay_i = _f32(1.0) - lr_i * h.reg
        for f in range(X.shape[1]):
            xf = X[u, f]
            yf = Y[i, f]
            X[u, f] = decay_u * xf + ge_u * yf
            Y[i, f] = decay_i * yf + ge_i * xf
    else:
        for f in range(X.shape[1]):
            X[u, f] = decay_u * X[u, f] + ge_u * Y[i, f]
    if use_bias:
        ub[u] += lr_u * (e - h.reg_bias * ub[u])
        if learn_items:
            ib[i] += lr_i * (e - h.reg_bias * ib[i])
    return value


@numba.njit(**_INLINE)
def pairwise_step(X, Y, ib, uacc, iacc, h, u, i, j, g, use_bias, learn_items, adagrad):
    """``x += η(g(y_i − y_j) − λx)``, ``y_i += η(g x − λy_i)``, ``y_j += η(−g x − λy_j)``.

    ``g = σ(−(s_ui − s_uj))`` for BPR, the rank weight for WARP; with ``adagrad`` each row
    steps with its own ``η/√G``.
    """
    lr_u = h.lr
    lr_i = h.lr
    lr_j = h.lr
    if adagrad:
        g2 = g * g / X.shape[1]
        diff = _f32(0.0)
        for f in range(X.shape[1]):
            d = Y[i, f] - Y[j, f]
            diff += d * d
        lr_u = _adagrad_rate(uacc, u, h.lr, g2 * diff)
        if learn_items:
            xx = g2 * _sq_norm(X, u)
            lr_i = _adagrad_rate(iacc, i, h.lr, xx)
            lr_j = _adagrad_rate(iacc, j, h.lr, xx)
    gl_u = lr_u * g
    decay_u = _f32(1.0) - lr_u * h.reg
    if learn_items:
        gl_i = lr_i * g
        gl_j = lr_j * g
        decay_i = _f32(1.0) - lr_i * h.reg
        decay_j = _f32(1.0) - lr_j * h.reg
        for f in range(X.shape[1]):
            xf = X[u, f]
            yif = Y[i, f]
            yjf = Y[j, f]
            X[u, f] = decay_u * xf + gl_u * (yif - yjf)
            Y[i, f] = decay_i * yif + gl_i * xf
            Y[j, f] = decay_j * yjf - gl_j * xf
        if use_bias:
            ib[i] += lr_i * (g - h.reg_bias * ib[i])
            ib[j] += lr_j * (-g - h.reg_bias * ib[j])
    else:
        for f in range(X.shape[1]):
            X[u, f] = decay_u * X[u, f] + gl_u * (Y[i, f] - Y[j, f])


@numba.njit(**_INLINE)
def bpr_step(X, Y, ib, uacc, iacc, h, u, i, j, use_bias, learn_items, adagrad):
    """One BPR step on triple (u, i, j). Returns ``−log σ(s_ui − s_uj)``."""
    d = _f32(0.0)
    for f in range(X.shape[1]):
        d += X[u, f] * (Y[i, f] - Y[j, f])
    if use_bias:
        d += ib[i] - ib[j]
    t = math.exp(d)
    g = _f32(1.0) / (_f32(1.0) + t)  # σ(−d)
    pairwise_step(X, Y, ib, uacc, iacc, h, u, i, j, g, use_bias, learn_items, adagrad)
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
def draw_item(state, alias_prob, alias_idx, n_items):
    """One item ``i ∝ w_i`` from a Walker alias table (``cfcore._kernels.sampling.build_alias``
    over the sampler's weights), or uniformly from ``n_items`` when the table has a single
    slot (uniform weights need no table, and no cache miss on it). Returns ``(state, i)``."""
    n = alias_prob.shape[0]
    if n == 1:
        return next_below(state, n_items)
    state, r = next_float(state)
    x = r * n
    i = min(np.int64(x), n - 1)
    if x - i >= alias_prob[i]:
        i = np.int64(alias_idx[i])
    return state, i


@numba.njit(**_INLINE)
def candidate_ring(state, Y, alias_prob, alias_idx, warp):
    """A block's WARP candidate ring: :data:`CANDIDATES_AHEAD` slots and the head index,
    filled with fresh draws whose rows are prefetched (left unfilled unless ``warp``).
    Returns ``(state, ring)``."""
    ring = np.zeros(CANDIDATES_AHEAD + 1, dtype=np.int64)
    if warp:
        for r in range(CANDIDATES_AHEAD):
            state, j = draw_item(state, alias_prob, alias_idx, Y.shape[0])
            ring[r] = j
            prefetch_row(Y, j)
    return state, ring


@numba.njit(**_INLINE)
def next_candidate(ring, state, Y, alias_prob, alias_idx):
    """The oldest candidate in the ring; a fresh draw takes its slot and is prefetched.

    Candidates are i.i.d. draws that do not depend on the positive or the user, so drawing
    them ``CANDIDATES_AHEAD`` trials early (and carrying them over to the next positive)
    changes nothing in distribution, while each row's DRAM miss overlaps the trials before
    it. Returns ``(state, j)``."""
    head = ring[CANDIDATES_AHEAD]
    j = ring[head]
    state, fresh = draw_item(state, alias_prob, alias_idx, Y.shape[0])
    ring[head] = fresh
    prefetch_row(Y, fresh)
    ring[CANDIDATES_AHEAD] = (head + 1) & (CANDIDATES_AHEAD - 1)
    return state, j


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
    ib,
    uacc,
    iacc,
    h,
    u,
    i,
    ring,
    weights,
    alias_prob,
    alias_idx,
    pos_indices,
    p0,
    n_pos,
    state,
    use_bias,
    learn_items,
    adagrad,
):
    """One WARP step for positive i. Candidates are drawn from the catalogue by the alias
    table (the sampler's weighting; ``uniform`` is LightFM's choice); a draw that is one of
    the user's positives is rejected and counts as a trial, as in LightFM. Candidates come
    from ``ring`` (:func:`next_candidate`: drawn and prefetched ahead). Returns
    ``(state, loss)``."""
    si = _dot(X, u, Y, i)
    if use_bias:
        si += ib[i]
    for trial in range(1, weights.shape[0]):
        state, j = next_candidate(ring, state, Y, alias_prob, alias_idx)
        sj = _dot(X, u, Y, j)
        if use_bias:
            sj += ib[j]
        # Only a violating candidate needs the positive check (a positive that does not
        # violate is a failed trial either way), as in LightFM.
        if sj > si - h.margin and not is_positive(pos_indices, p0, n_pos, j):
            w = weights[trial]
            pairwise_step(X, Y, ib, uacc, iacc, h, u, i, j, w, use_bias, learn_items, adagrad)
            return state, w * (h.margin - si + sj)
    return state, _f32(0.0)


# ----------------------------------------------------------------------------- drivers
_DRIVERS: dict[tuple, object] = {}


def epoch_kernel(
    *,
    loss: int,
    order: str = "grouped",
    use_bias: bool = False,
    learn_items: bool = True,
    adagrad: bool = False,
):
    """The compiled epoch driver ``driver(tables, entries, hyper, epoch)`` for one
    combination of compile-time constants (built once per process, cached on disk).

    Parameters
    ----------
    loss : int
        :data:`SQUARED`, :data:`LOGISTIC`, :data:`BPR` or :data:`WARP`.
    order : {"grouped", "random"}
        User-grouped blocks over ``epoch.users``, or ``epoch.n_draws`` uniformly random
        entries of ``entries.entry_*`` with replacement.
    use_bias : bool
        Score with (and learn) the biases.
    learn_items : bool
        ``False`` holds the item rows (and biases) fixed: fold-in of new users.
    adagrad : bool
        Row-wise AdaGrad steps (``tables`` then needs one accumulator per row).

    The driver returns nothing; it updates ``tables`` in place and writes each block's loss
    sum and update count to ``epoch.loss_out`` / ``epoch.count_out``.
    """
    if loss not in LOSS_CODES.values():
        raise ValueError(f"loss: expected one of the codes {sorted(LOSS_CODES.values())}")
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    key = (int(loss), order, bool(use_bias), bool(learn_items), bool(adagrad))
    driver = _DRIVERS.get(key)
    if driver is None:
        make = _make_grouped if order == "grouped" else _make_random
        driver = _DRIVERS[key] = make(*key[:1], *key[2:])
    return driver


@numba.njit(**_INLINE)
def _user_pointwise(
    u,
    state,
    X,
    Y,
    ub,
    ib,
    uacc,
    iacc,
    pos_indptr,
    pos_indices,
    negs,
    q0,
    n_neg,
    h,
    work,
    loss,
    use_bias,
    learn_items,
    adagrad,
):
    """All entries of user u — its positives and its negatives ``negs[q0:q0+n_neg]`` —
    shuffled; returns ``(state, loss_sum, n_updates)``."""
    p0 = pos_indptr[u]
    n_pos = pos_indptr[u + 1] - p0
    n = n_pos + n_neg
    # Positives as item, negatives as -(item + 1); inside-out Fisher-Yates while filling.
    for k in range(n):
        if k < n_pos:
            v = np.int64(pos_indices[p0 + k])
        else:
            v = -np.int64(negs[q0 + k - n_pos]) - 1
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
            X, Y, ub, ib, uacc, iacc, h, u, i, target, loss, use_bias, learn_items, adagrad
        )
    return state, total, n


@numba.njit(**_INLINE)
def _user_pairwise(
    u,
    state,
    X,
    Y,
    ib,
    uacc,
    iacc,
    pos_indptr,
    pos_indices,
    negs,
    q0,
    n_neg,
    h,
    weights,
    alias_prob,
    alias_idx,
    work,
    ring,
    loss,
    use_bias,
    learn_items,
    adagrad,
):
    """Every positive of user u once, shuffled, each with a negative drawn from
    ``negs[q0:q0+n_neg]`` (BPR) or WARP candidates from ``ring``."""
    p0 = pos_indptr[u]
    n_pos = pos_indptr[u + 1] - p0
    if n_neg == 0 and loss == BPR:
        return state, 0.0, 0
    # work[:n] = shuffled positives; BPR: work[n:2n] = a sampled negative of the user for each.
    for k in range(n_pos):
        state, r = next_below(state, k + 1)
        work[k] = work[r]
        work[r] = pos_indices[p0 + k]
    if loss == BPR:
        for k in range(n_pos):
            state, r = next_below(state, n_neg)
            work[n_pos + k] = negs[q0 + r]
    total = 0.0
    for k in range(n_pos):
        if k + PREFETCH_AHEAD < n_pos:
            prefetch_row(Y, work[k + PREFETCH_AHEAD])
            if loss == BPR:
                prefetch_row(Y, work[n_pos + k + PREFETCH_AHEAD])
        i = work[k]
        if loss == BPR:
            j = work[n_pos + k]
            total += bpr_step(X, Y, ib, uacc, iacc, h, u, i, j, use_bias, learn_items, adagrad)
        else:
            state, value = warp_step(
                X,
                Y,
                ib,
                uacc,
                iacc,
                h,
                u,
                i,
                ring,
                weights,
                alias_prob,
                alias_idx,
                pos_indices,
                p0,
                n_pos,
                state,
                use_bias,
                learn_items,
                adagrad,
            )
            total += value
    return state, total, n_pos


# The drivers unpack the bundles before their parallel loop and hand the steps arrays; only
# the Hyper's float32 scalars travel as a bundle (``h.lr``, ``h.reg``...). Two reasons, both
# Numba 0.68's: inside a ``prange`` body a write through a NamedTuple field
# (``bundle.array[i] = v``) is silently lost, and reading an array out of a tuple there costs
# a reference-count call each time (WARP reads its tables per positive: 9% of its speed). The
# blocks stay in the loop body, whose arrays Numba marks ``noalias``: moved into a function of
# their own they run 1.5× slower (WARP, one thread).


def _make_grouped(loss, use_bias, learn_items, adagrad):
    pairwise = loss == BPR or loss == WARP

    @numba.njit(parallel=True, **_JIT)
    def run(tables, entries, hyper, epoch, n_threads):
        X, Y, ub, ib, uacc, iacc = tables
        pos_indptr, pos_indices, neg_indptr, neg_indices = entries[:4]
        neg_weights, neg_alias = entries.neg_weights, entries.neg_alias
        weights, alias_prob, alias_idx = hyper.warp_weights, hyper.alias_prob, hyper.alias_idx
        users, seed, number = epoch.users, epoch.seed, epoch.epoch
        neg_epoch = epoch.neg_epoch
        loss_out, count_out = epoch.loss_out, epoch.count_out
        n_blocks = loss_out.shape[0]
        n_users = users.shape[0]
        # Negatives drawn here (Entries carries the sampler's tables): per-thread scratch of
        # the sampler and a buffer for the largest user's negatives, once per epoch.
        draw = neg_alias.shape[0] > 0 and not (loss == WARP)
        most = 0
        if draw:
            for u in range(neg_indptr.shape[0] - 1):
                most = max(most, neg_indptr[u + 1] - neg_indptr[u])
        taken, keys, cand, weighted, n_nonzero = sampler_scratch(neg_weights, n_threads)
        drawn = np.empty((n_threads, padded(most, 16)), dtype=np.int32)
        for b in prange(n_blocks):
            lo = (b * n_users) // n_blocks
            hi = ((b + 1) * n_users) // n_blocks
            longest = 0
            for k in range(lo, hi):
                u = users[k]
                n = pos_indptr[u + 1] - pos_indptr[u]
                if loss == BPR:
                    n *= 2  # positives, then a negative for each
                elif not pairwise:
                    n += neg_indptr[u + 1] - neg_indptr[u]
                longest = max(longest, n)
            work = np.empty(longest, dtype=np.int64)  # one allocation per block
            state, ring = candidate_ring(
                stream_seed(seed, number, b), Y, alias_prob, alias_idx, loss == WARP
            )
            total = 0.0
            count = 0
            for k in range(lo, hi):
                u = users[k]
                q0 = neg_indptr[u]
                n_neg = neg_indptr[u + 1] - q0
                negs = neg_indices
                if draw:
                    tid = numba.get_thread_id()
                    negs = drawn[tid]
                    q0 = 0
                    sample_user(
                        u,
                        u,
                        pos_indptr,
                        pos_indices,
                        neg_weights,
                        neg_alias,
                        weighted,
                        n_nonzero,
                        seed,
                        neg_epoch,
                        negs,
                        0,
                        n_neg,
                        taken[tid],
                        keys[tid],
                        cand[tid],
                        DEFAULT_SWITCH,
                    )
                if pairwise:
                    state, part, c = _user_pairwise(
                        u,
                        state,
                        X,
                        Y,
                        ib,
                        uacc,
                        iacc,
                        pos_indptr,
                        pos_indices,
                        negs,
                        q0,
                        n_neg,
                        hyper,
                        weights,
                        alias_prob,
                        alias_idx,
                        work,
                        ring,
                        loss,
                        use_bias,
                        learn_items,
                        adagrad,
                    )
                else:
                    state, part, c = _user_pointwise(
                        u,
                        state,
                        X,
                        Y,
                        ub,
                        ib,
                        uacc,
                        iacc,
                        pos_indptr,
                        pos_indices,
                        negs,
                        q0,
                        n_neg,
                        hyper,
                        work,
                        loss,
                        use_bias,
                        learn_items,
                        adagrad,
                    )
                total += part
                count += c
            loss_out[b] = total
            count_out[b] = count

    def driver(tables, entries, hyper, epoch):
        # The thread count sizes the per-thread scratch; read here, not inside the kernel
        # (there it would defeat Numba's cache).
        run(tables, entries, hyper, epoch, numba.get_num_threads())

    driver.kernel = run
    return driver


def _make_random(loss, use_bias, learn_items, adagrad):
    pairwise = loss == BPR or loss == WARP

    @numba.njit(parallel=True, **_JIT)
    def run(tables, entries, hyper, epoch):
        X, Y, ub, ib, uacc, iacc = tables
        pos_indptr, pos_indices, neg_indptr, neg_indices = entries[:4]
        entry_user, entry_item, entry_target = (
            entries.entry_user,
            entries.entry_item,
            entries.entry_target,
        )
        weights, alias_prob, alias_idx = hyper.warp_weights, hyper.alias_prob, hyper.alias_idx
        n_draws, seed, number = epoch.n_draws, epoch.seed, epoch.epoch
        loss_out, count_out = epoch.loss_out, epoch.count_out
        n_blocks = loss_out.shape[0]
        n_entries = entry_user.shape[0]
        for b in prange(n_blocks):
            lo = (b * n_draws) // n_blocks
            hi = ((b + 1) * n_draws) // n_blocks
            state, ring = candidate_ring(
                stream_seed(seed, number, b), Y, alias_prob, alias_idx, loss == WARP
            )
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
                        ub,
                        ib,
                        uacc,
                        iacc,
                        hyper,
                        u,
                        i,
                        entry_target[e],
                        loss,
                        use_bias,
                        learn_items,
                        adagrad,
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
                        X, Y, ib, uacc, iacc, hyper, u, i, j, use_bias, learn_items, adagrad
                    )
                else:
                    p0 = pos_indptr[u]
                    state, value = warp_step(
                        X,
                        Y,
                        ib,
                        uacc,
                        iacc,
                        hyper,
                        u,
                        i,
                        ring,
                        weights,
                        alias_prob,
                        alias_idx,
                        pos_indices,
                        p0,
                        pos_indptr[u + 1] - p0,
                        state,
                        use_bias,
                        learn_items,
                        adagrad,
                    )
                    total += value
            loss_out[b] = total
            count_out[b] = count

    return run
