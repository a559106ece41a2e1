"""Hogwild WARP kernels for user-conditional tag prediction (Denton et al. 2015).

Free functions over arrays bundled in three NamedTuples (the Python class in
:mod:`cfcore.tags` owns validation, initialisation, seeding, the learning-rate schedule and
progress):

* :class:`Tables` — the learned parameters, float32 and C-contiguous (a table a model does not
  use has zero rows); :class:`Tables` again for their momentum buffers;
* :class:`Examples` — what is learned from: item descriptors ``X`` (one L2-normalised row per
  item), user descriptors as a CSR (a one-hot row per user for learned embeddings, the encoded
  attributes otherwise), the examples (user row, item row, sorted tag rows) and the positives
  (example, tag) to visit;
* :class:`Steps` — the hyper-parameters of an epoch.

Models (``model`` code), with ``x`` the item descriptor, ``u`` the user descriptor and tag
embeddings ``V`` (row ``V_y``), all scoring ``f(x, u, y) = Φ(x, u) · V_y``:

* ``BILINEAR`` (§3.1): ``Φ = Pᵀx`` with ``P`` (n_features, d) — row ``P_i`` embeds feature i;
* ``USER_BIASED`` (§3.2): ``Φ = Pᵀx + Qᵀu`` with ``Q`` (n_user_features, d) — for learned user
  embeddings ``u`` is one-hot and ``Qᵀu`` is the user's row of ``Q``;
* ``THREE_WAY`` (§3.3, appendix A): ``Φ = β diag(αᵀh) γᵀx`` with ``h = ReLU(Wᵀu + b)`` (the
  24-unit layer, learned jointly), ``α`` (H, K), ``β`` (d, K), ``γ`` (n_features, K), ``W``
  (n_user_features, H), ``b`` (1, H). With ``g = γᵀx``, ``a = αᵀh`` and ``Φ = β(a ⊙ g)``.

WARP (§3.4, Weston et al. 2011): for a positive (example e, tag y⁺), tags y⁻ are drawn
uniformly from the vocabulary, up to ``max_sampled`` times, until one violates the margin,
``f(y⁻) > f(y⁺) − m``; a draw that is one of e's own tags is rejected and counts as a trial (as
LightFM and the factorizer's WARP do). After n trials the rank estimate is ``⌊(Y−1)/n⌋`` and
the step is on ``w·(m − f(y⁺) + f(y⁻))`` with ``w = log(max(1, ⌊(Y−1)/n⌋))``
(:func:`cfcore._kernels.sgd.warp_weights`, the formula LightFM uses for WSABIE's
``L(k) = Σ_{j≤k} 1/j``). No violation: no step.

Gradients of that loss, ``G = ∂L/∂Φ = w(V_{y⁻} − V_{y⁺})``:
``∂L/∂V_{y⁺} = −wΦ``, ``∂L/∂V_{y⁻} = wΦ``; bilinear ``∂L/∂P_i = x_i G``; user-biased also
``∂L/∂Q_r = u_r G``; 3-way, with ``c = βᵀG``: ``∂L/∂β_f = G_f (a ⊙ g)``,
``∂L/∂α_j = h_j (c ⊙ g)``, ``∂L/∂γ_i = x_i (c ⊙ a)``, ``∂L/∂h = α(c ⊙ g)``,
``∂L/∂z = ∂L/∂h ⊙ [z > 0]``, ``∂L/∂W_r = u_r ∂L/∂z``, ``∂L/∂b = ∂L/∂z`` — every gradient is
taken at the parameters before the step.

Optimiser (§3.4): SGD with momentum μ, ``v ← μv − η ∂L/∂θ``, ``θ ← θ + v``, applied to the
rows a step touches (the momentum of a row that no step touches is left as it is: "lazy"
momentum, the usual choice for sparse rows). After its update, a row of ``V``, ``P`` or ``Q``
longer than ``max_norm`` (1 in the paper) is scaled back onto the ball, so the constraints
``‖V_y‖ ≤ 1``, ``‖P_i‖ ≤ 1``, ``‖Q_r‖ ≤ 1`` hold after every step.

Work order: the Python side shuffles the positives once per epoch from ``(seed, epoch)`` and
the driver cuts that order into ``len(loss_out)`` contiguous blocks; block b draws its
negatives from the stream ``stream_seed(seed, epoch, b)`` (:mod:`cfcore._kernels.rng`). The
blocks, not the threads, define the work, so one thread reproduces a fit bit for bit and more
threads differ only by Hogwild races (Niu et al. 2011) on shared rows. Feature rows with
``x_i = 0`` (ReLU features are sparse) are skipped.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from cfcore._kernels.rng import next_below, stream_seed
from cfcore._kernels.sgd import is_positive, warp_weights

BILINEAR = 0
USER_BIASED = 1
THREE_WAY = 2

MODEL_CODES = {"bilinear": BILINEAR, "user-biased": USER_BIASED, "3-way": THREE_WAY}

# error_model="numpy": a division by zero gives inf/NaN (caught after the epoch as divergence).
# The helpers are left to LLVM's inliner: Numba's IR inlining (inline="always") of a helper
# that writes through the NamedTuple of work vectors inside a prange loop drops the writes
# (numba 0.68: the 3-way forward pass returned zeros in the parallel driver only).
_JIT = dict(cache=True, fastmath=True, nogil=True, error_model="numpy")
_INLINE = _JIT

_f32 = np.float32

#: Parallel chunks of :func:`score_all`.
N_CHUNKS = 64

__all__ = [
    "BILINEAR",
    "USER_BIASED",
    "THREE_WAY",
    "MODEL_CODES",
    "Tables",
    "Examples",
    "Steps",
    "Scratch",
    "scratch",
    "scratch_size",
    "embed",
    "warp_step",
    "warp_epoch",
    "warp_weights",
    "score_all",
]


class Tables(NamedTuple):
    """Learned parameters (float32, C-contiguous); unused tables have zero rows."""

    V: np.ndarray  # (n_tags, d) tag embeddings
    P: np.ndarray  # (n_features, d) bilinear / user-biased
    Q: np.ndarray  # (n_user_features, d) user-biased
    W: np.ndarray  # (n_user_features, H) 3-way: the user layer
    b: np.ndarray  # (1, H) its bias
    alpha: np.ndarray  # (H, K)
    beta: np.ndarray  # (d, K)
    gamma: np.ndarray  # (n_features, K)


class Examples(NamedTuple):
    """The training data as the kernels read it."""

    X: np.ndarray  # (n_items, n_features) float32 item descriptors
    user_indptr: np.ndarray  # (n_users + 1,) int64: user descriptors as a CSR
    user_indices: np.ndarray  # int32
    user_values: np.ndarray  # float32
    example_item: np.ndarray  # (n_examples,) int32 row of X
    example_user: np.ndarray  # (n_examples,) int32 row of the user CSR
    tag_indptr: np.ndarray  # (n_examples + 1,) int64
    tag_indices: np.ndarray  # int32, sorted within each example
    positive_example: np.ndarray  # (n_positives,) int32
    positive_tag: np.ndarray  # (n_positives,) int32


class Steps(NamedTuple):
    """An epoch's hyper-parameters."""

    model: int  # BILINEAR, USER_BIASED or THREE_WAY
    lr: float  # η (float32)
    momentum: float  # μ (float32)
    margin: float  # m (float32)
    max_norm: float  # bound on the rows of V, P, Q (float32)
    weights: np.ndarray  # float32 rank weights, warp_weights(n_tags, max_sampled)


class Scratch(NamedTuple):
    """A block's work vectors (allocated once per block)."""

    phi: np.ndarray  # (d,) Φ(x, u)
    grad: np.ndarray  # (d,) ∂L/∂Φ
    z: np.ndarray  # (H,) pre-activation of the user layer
    h: np.ndarray  # (H,) ReLU(z)
    a: np.ndarray  # (K,) αᵀh
    g: np.ndarray  # (K,) γᵀx
    c: np.ndarray  # (K,) βᵀG
    u1: np.ndarray  # (K,) a ⊙ g, then c ⊙ g ...
    u2: np.ndarray  # (K,) c ⊙ a
    dz: np.ndarray  # (H,) ∂L/∂z


@numba.njit(**_INLINE)
def scratch_size(t):
    """Floats of work space one block needs (see :func:`scratch`)."""
    return 2 * t.V.shape[1] + 3 * t.b.shape[1] + 5 * t.beta.shape[1]


@numba.njit(**_INLINE)
def scratch(t, row):
    """A block's work vectors, as views of ``row`` (``scratch_size(t)`` floats).

    The work space is allocated by the caller, outside the parallel loop: Numba hoists an
    allocation of loop-invariant size out of a ``prange`` loop, and the blocks would then share
    (and race on) one set of vectors.
    """
    d = t.V.shape[1]
    H = t.b.shape[1]
    K = t.beta.shape[1]
    o = 0
    phi = row[o : o + d]
    o += d
    grad = row[o : o + d]
    o += d
    z = row[o : o + H]
    o += H
    h = row[o : o + H]
    o += H
    dz = row[o : o + H]
    o += H
    a = row[o : o + K]
    o += K
    g = row[o : o + K]
    o += K
    c = row[o : o + K]
    o += K
    u1 = row[o : o + K]
    o += K
    u2 = row[o : o + K]
    return Scratch(phi, grad, z, h, a, g, c, u1, u2, dz)


# ----------------------------------------------------------------------------- forward
@numba.njit(**_INLINE)
def embed(model, ex, t, e, s):
    """``s.phi ← Φ(x, u)`` of example e (3-way: also ``s.z``, ``s.h``, ``s.a``, ``s.g``)."""
    item = ex.example_item[e]
    user = ex.example_user[e]
    r0 = ex.user_indptr[user]
    r1 = ex.user_indptr[user + 1]
    if model == THREE_WAY:
        _embed_three_way(ex, t, item, r0, r1, s)
    else:
        _embed_linear(model, ex, t, item, r0, r1, s.phi)


@numba.njit(**_INLINE)
def _embed_three_way(ex, t, item, r0, r1, s):
    """``z = Wᵀu + b``, ``h = ReLU(z)``, ``a = αᵀh``, ``g = γᵀx``, ``Φ = β(a ⊙ g)``."""
    phi = s.phi
    d = phi.shape[0]
    n = ex.X.shape[1]
    H = s.z.shape[0]
    K = s.g.shape[0]
    for j in range(H):
        s.z[j] = t.b[0, j]
    for r in range(r0, r1):
        ur = ex.user_values[r]
        row = ex.user_indices[r]
        for j in range(H):
            s.z[j] += ur * t.W[row, j]
    for j in range(H):
        s.h[j] = max(s.z[j], _f32(0.0))
    for k in range(K):
        s.a[k] = 0.0
        s.g[k] = 0.0
    for j in range(H):
        hj = s.h[j]
        if hj != 0:
            for k in range(K):
                s.a[k] += hj * t.alpha[j, k]
    for i in range(n):
        xi = ex.X[item, i]
        if xi != 0:
            for k in range(K):
                s.g[k] += xi * t.gamma[i, k]
    for k in range(K):
        s.u1[k] = s.a[k] * s.g[k]
    for f in range(d):
        acc = _f32(0.0)
        for k in range(K):
            acc += t.beta[f, k] * s.u1[k]
        phi[f] = acc


@numba.njit(**_INLINE)
def _embed_linear(model, ex, t, item, r0, r1, phi):
    """``phi ← Pᵀx (+ Qᵀu)``."""
    d = phi.shape[0]
    n = ex.X.shape[1]
    for f in range(d):
        phi[f] = 0.0
    for i in range(n):
        xi = ex.X[item, i]
        if xi != 0:
            for f in range(d):
                phi[f] += xi * t.P[i, f]
    if model == USER_BIASED:
        for r in range(r0, r1):
            ur = ex.user_values[r]
            row = ex.user_indices[r]
            for f in range(d):
                phi[f] += ur * t.Q[row, f]


@numba.njit(**_INLINE)
def _score(phi, V, y):
    """``Φ · V_y``."""
    acc = _f32(0.0)
    for f in range(phi.shape[0]):
        acc += phi[f] * V[y, f]
    return acc


# ----------------------------------------------------------------------------- updates
@numba.njit(**_INLINE)
def _step_row(T, M, r, coef, vec, lr, mu, max_norm):
    """Momentum step of row r for the gradient ``coef · vec``; then ``‖T_r‖ ≤ max_norm``
    (``max_norm <= 0``: unconstrained)."""
    sq = _f32(0.0)
    for f in range(T.shape[1]):
        m = mu * M[r, f] - lr * coef * vec[f]
        M[r, f] = m
        v = T[r, f] + m
        T[r, f] = v
        sq += v * v
    if max_norm > 0 and sq > max_norm * max_norm:
        scale = max_norm / math.sqrt(sq)
        for f in range(T.shape[1]):
            T[r, f] *= scale


@numba.njit(**_INLINE)
def _update(model, ex, t, m, st, e, y_pos, y_neg, w, s):
    """One momentum step on ``w·(margin − f(y⁺) + f(y⁻))`` (gradients in the module docstring);
    ``s`` holds the forward pass of example e (:func:`embed`)."""
    d = s.phi.shape[0]
    lr = st.lr
    mu = st.momentum
    bound = st.max_norm
    grad = s.grad
    for f in range(d):
        grad[f] = w * (t.V[y_neg, f] - t.V[y_pos, f])
    item = ex.example_item[e]
    user = ex.example_user[e]
    r0 = ex.user_indptr[user]
    r1 = ex.user_indptr[user + 1]
    n = ex.X.shape[1]
    if model == THREE_WAY:
        H = s.z.shape[0]
        K = s.g.shape[0]
        # c = βᵀG, then the three K-vectors the factor gradients need (old parameters).
        for k in range(K):
            acc = _f32(0.0)
            for f in range(d):
                acc += t.beta[f, k] * grad[f]
            s.c[k] = acc
        for j in range(H):
            if s.z[j] > 0:
                acc = _f32(0.0)
                for k in range(K):
                    acc += t.alpha[j, k] * s.c[k] * s.g[k]
                s.dz[j] = acc
            else:
                s.dz[j] = 0.0
        for k in range(K):
            s.u2[k] = s.c[k] * s.a[k]  # ∂L/∂γ_i = x_i (c ⊙ a)
        # β_f: G_f (a ⊙ g); s.u1 = a ⊙ g from the forward pass.
        for f in range(d):
            _step_row(t.beta, m.beta, f, grad[f], s.u1, lr, mu, _f32(0.0))
        for k in range(K):
            s.u1[k] = s.c[k] * s.g[k]  # ∂L/∂α_j = h_j (c ⊙ g)
        for j in range(H):
            if s.h[j] != 0:
                _step_row(t.alpha, m.alpha, j, s.h[j], s.u1, lr, mu, _f32(0.0))
        for i in range(n):
            xi = ex.X[item, i]
            if xi != 0:
                _step_row(t.gamma, m.gamma, i, xi, s.u2, lr, mu, _f32(0.0))
        for r in range(r0, r1):
            _step_row(t.W, m.W, ex.user_indices[r], ex.user_values[r], s.dz, lr, mu, _f32(0.0))
        _step_row(t.b, m.b, 0, _f32(1.0), s.dz, lr, mu, _f32(0.0))
    else:
        for i in range(n):
            xi = ex.X[item, i]
            if xi != 0:
                _step_row(t.P, m.P, i, xi, grad, lr, mu, bound)
        if model == USER_BIASED:
            for r in range(r0, r1):
                _step_row(t.Q, m.Q, ex.user_indices[r], ex.user_values[r], grad, lr, mu, bound)
    # Tag rows last: G above used the old V.
    _step_row(t.V, m.V, y_pos, -w, s.phi, lr, mu, bound)
    _step_row(t.V, m.V, y_neg, w, s.phi, lr, mu, bound)


@numba.njit(**_INLINE)
def warp_step(model, ex, t, m, st, e, y_pos, state, s):
    """WARP for the positive (example e, tag ``y_pos``): draw tags until one violates the
    margin (own tags rejected, counting as trials), then :func:`_update`.

    Returns ``(state, loss, trials, y_neg)``: the weighted hinge loss of the step (0 without
    a violation), the number of draws, and the violating tag (-1 without one).
    """
    embed(model, ex, t, e, s)
    n_tags = t.V.shape[0]
    t0 = ex.tag_indptr[e]
    nt = ex.tag_indptr[e + 1] - t0
    s_pos = _score(s.phi, t.V, y_pos)
    margin = st.margin
    for trial in range(1, st.weights.shape[0]):
        state, j = next_below(state, n_tags)
        s_neg = _score(s.phi, t.V, j)
        # Only a violating draw needs the own-tag check (one that does not violate is a
        # failed trial either way).
        if s_neg > s_pos - margin and not is_positive(ex.tag_indices, t0, nt, j):
            w = st.weights[trial]
            if w > 0:
                _update(model, ex, t, m, st, e, y_pos, j, w, s)
            return state, w * (margin - s_pos + s_neg), trial, j
    return state, _f32(0.0), st.weights.shape[0] - 1, -1


# ----------------------------------------------------------------------------- driver
@numba.njit(parallel=True, **_JIT)
def warp_epoch(order, ex, t, m, st, seed, epoch, loss_out, count_out, trials_out):
    """One epoch of Hogwild WARP over the positives ``order`` (a permutation of the rows of
    ``ex.positive_*``), cut into ``len(loss_out)`` blocks.

    Block b writes its summed loss (float64), its number of steps taken (int64) and its
    number of draws (int64) to ``loss_out[b]``, ``count_out[b]``, ``trials_out[b]``.
    """
    n_blocks = loss_out.shape[0]
    n = order.shape[0]
    work = np.zeros((n_blocks, scratch_size(t)), _f32)
    for b in prange(n_blocks):
        lo = (b * n) // n_blocks
        hi = ((b + 1) * n) // n_blocks
        s = scratch(t, work[b])
        state = stream_seed(seed, epoch, b)
        total = 0.0
        steps = 0
        trials = 0
        for k in range(lo, hi):
            p = order[k]
            state, loss, tried, j = warp_step(
                st.model, ex, t, m, st, ex.positive_example[p], ex.positive_tag[p], state, s
            )
            total += loss
            trials += tried
            if j >= 0:
                steps += 1
        loss_out[b] = total
        count_out[b] = steps
        trials_out[b] = trials


@numba.njit(parallel=True, **_JIT)
def score_all(model, ex, t, examples, out):
    """``out[k, y] ← f(x, u, y)`` for example ``examples[k]`` and every tag y (the forward
    pass of training), in :data:`N_CHUNKS` parallel chunks. Scoring stays in Numba so that a
    fit's per-epoch validation starts no BLAS threads, whose spinning would slow the next
    epoch's Hogwild threads."""
    n = examples.shape[0]
    n_chunks = min(n, N_CHUNKS)
    work = np.zeros((n_chunks, scratch_size(t)), _f32)
    for c in prange(n_chunks):
        s = scratch(t, work[c])
        for k in range((c * n) // n_chunks, ((c + 1) * n) // n_chunks):
            embed(model, ex, t, examples[k], s)
            for y in range(t.V.shape[0]):
                out[k, y] = _score(s.phi, t.V, y)
