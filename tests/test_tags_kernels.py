"""The tag-prediction kernels (cfcore._kernels.tags) against slow NumPy references.

- the three models' gradients of the WARP step loss ``w(m − f(y⁺) + f(y⁻))``, written out in
  float64 NumPy and checked by finite differences;
- one momentum step of the kernel against that reference (touched rows move, others stay);
- WARP sampling: the kernel's draws, trial count, chosen negative and loss against a NumPy
  replay of the same random stream; the rank weights against their formula;
- the norm constraints after steps; bit-reproducible epochs on one thread.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from cfcore._kernels import tags as kt
from cfcore._kernels.rng import next_below, stream_seed

f32 = np.float32
N, M, D, K, H, Y = 5, 4, 3, 2, 3, 7
MODELS = ("bilinear", "user-biased", "3-way")


# ---------------------------------------------------------------------------- reference
def forward(model, T, x, u):
    """Φ(x, u) in float64 and the 3-way intermediates."""
    if model == "3-way":
        z = u @ T["W"] + T["b"][0]
        h = np.maximum(z, 0)
        a = h @ T["alpha"]
        g = x @ T["gamma"]
        return T["beta"] @ (a * g), {"z": z, "h": h, "a": a, "g": g}
    phi = x @ T["P"]
    if model == "user-biased":
        phi = phi + u @ T["Q"]
    return phi, {}


def step_loss(model, T, x, u, yp, yn, w, margin):
    phi, _ = forward(model, T, x, u)
    return w * (margin - phi @ T["V"][yp] + phi @ T["V"][yn])


def gradient(model, T, x, u, yp, yn, w):
    """∂/∂θ of :func:`step_loss`, every table (zeros where a model has no dependence)."""
    phi, c = forward(model, T, x, u)
    G = w * (T["V"][yn] - T["V"][yp])
    out = {k: np.zeros_like(v) for k, v in T.items()}
    out["V"][yp] -= w * phi
    out["V"][yn] += w * phi
    if model == "3-way":
        cc = T["beta"].T @ G
        out["beta"] = np.outer(G, c["a"] * c["g"])
        out["alpha"] = np.outer(c["h"], cc * c["g"])
        out["gamma"] = np.outer(x, cc * c["a"])
        dz = (T["alpha"] @ (cc * c["g"])) * (c["z"] > 0)
        out["W"] = np.outer(u, dz)
        out["b"] = dz[None, :]
    else:
        out["P"] = np.outer(x, G)
        if model == "user-biased":
            out["Q"] = np.outer(u, G)
    return out


def random_tables(rng, scale=1.0):
    shapes = {
        "V": (Y, D),
        "P": (N, D),
        "Q": (M, D),
        "W": (M, H),
        "b": (1, H),
        "alpha": (H, K),
        "beta": (D, K),
        "gamma": (N, K),
    }
    return {k: scale * rng.standard_normal(s) for k, s in shapes.items()}


def kernel_tables(T):
    return kt.Tables(*(np.ascontiguousarray(T[k], dtype=f32) for k in kt.Tables._fields))


def one_example(x, u, tags):
    """Kernel inputs for a single example with dense user vector ``u`` and sorted ``tags``."""
    tags = np.sort(np.asarray(tags, dtype=np.int32))
    return kt.Examples(
        x[None].astype(f32),
        np.array([0, len(u)], np.int64),
        np.arange(len(u), dtype=np.int32),
        u.astype(f32),
        np.zeros(1, np.int32),
        np.zeros(1, np.int32),
        np.array([0, len(tags)], np.int64),
        tags,
        np.zeros(len(tags), np.int32),
        tags,
    )


def scratch_for(t):
    return kt.scratch(t, np.zeros(kt.scratch_size(t), f32))


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("model", MODELS)
def test_reference_gradient_matches_finite_differences(model):
    rng = np.random.default_rng(1)
    T = random_tables(rng)
    x, u = rng.standard_normal(N), rng.standard_normal(M)
    grad = gradient(model, T, x, u, 1, 4, 0.7)
    eps = 1e-6
    for name, table in T.items():
        numeric = np.zeros_like(table)
        for idx in np.ndindex(table.shape):
            old = table[idx]
            table[idx] = old + eps
            up = step_loss(model, T, x, u, 1, 4, 0.7, 0.1)
            table[idx] = old - eps
            down = step_loss(model, T, x, u, 1, 4, 0.7, 0.1)
            table[idx] = old
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad[name], numeric, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("model", MODELS)
def test_kernel_step_is_momentum_sgd_on_the_reference_gradient(model):
    rng = np.random.default_rng(2)
    T = random_tables(rng)
    Mom = {k: 0.1 * rng.standard_normal(v.shape) for k, v in T.items()}
    x, u = rng.standard_normal(N), rng.standard_normal(M)
    lr, mu, w = 0.05, 0.9, 0.7
    t, m = kernel_tables(T), kernel_tables(Mom)
    ex = one_example(x, u, [1])
    st = kt.Steps(kt.MODEL_CODES[model], f32(lr), f32(mu), f32(0.1), f32(1e6), np.zeros(2, f32))
    s = scratch_for(t)
    kt.embed(st.model, ex, t, 0, s)
    np.testing.assert_allclose(s.phi, forward(model, T, x, u)[0], rtol=1e-5, atol=1e-6)
    kt._update(st.model, ex, t, m, st, 0, 1, 4, f32(w), s)
    grad = gradient(model, T, x, u, 1, 4, w)
    h = forward(model, T, x, u)[1].get("h")
    used = {
        "bilinear": ("V", "P"),
        "user-biased": ("V", "P", "Q"),
        "3-way": ("V", "W", "b", "alpha", "beta", "gamma"),
    }[model]
    for name in kt.Tables._fields:
        v_ref = mu * Mom[name] - lr * grad[name]
        new_ref = T[name] + v_ref
        touched = np.ones(T[name].shape[0], dtype=bool)
        if name == "V":
            touched[:] = False
            touched[[1, 4]] = True
        if name == "alpha" and h is not None:
            touched = h > 0  # a unit that is off gets no gradient and is not touched
        if name not in used:
            touched[:] = False
        np.testing.assert_allclose(
            getattr(t, name)[touched], new_ref[touched], rtol=1e-5, atol=1e-6, err_msg=name
        )
        np.testing.assert_allclose(
            getattr(m, name)[touched], v_ref[touched], rtol=1e-5, atol=1e-6, err_msg=name
        )
        np.testing.assert_array_equal(getattr(t, name)[~touched], f32(T[name])[~touched])


# ---------------------------------------------------------------------------- WARP
def test_rank_weights_follow_the_formula():
    for n_tags in (2, 7, 100, 10_000):
        w = kt.warp_weights(n_tags, 50)
        for n in range(1, 51):
            assert w[n] == pytest.approx(math.log(max(1, (n_tags - 1) // n)), rel=1e-6)


@numba.njit
def stream_draws(seed, n_draws, n):
    """The first ``n_draws`` uniform draws below ``n`` of block 0's stream in epoch 0."""
    state = stream_seed(seed, 0, 0)
    out = np.empty(n_draws, np.int64)
    for k in range(n_draws):
        state, j = next_below(state, n)
        out[k] = j
    return out


@numba.njit
def warp_once(model, ex, t, m, st, positive, seed):
    """:func:`kt.warp_step` for example 0 from block 0's stream (the state stays a uint64,
    which a round trip through Python would not keep)."""
    s = kt.scratch(t, np.zeros(kt.scratch_size(t), np.float32))
    _, loss, tried, j = kt.warp_step(model, ex, t, m, st, 0, positive, stream_seed(seed, 0, 0), s)
    return loss, tried, j


def replay_warp(scores, own, positive, seed, margin, max_sampled):
    """The negative WARP picks, by NumPy, from the kernel's stream: ``(trials, y_neg)``."""
    for trial, j in enumerate(stream_draws(seed, max_sampled, len(scores)), start=1):
        if scores[j] > scores[positive] - margin and j not in own:
            return trial, int(j)
    return max_sampled, -1


@pytest.mark.parametrize("model", MODELS)
def test_warp_draws_match_a_numpy_replay(model):
    rng = np.random.default_rng(3)
    margin, max_sampled = 0.1, 6
    weights = kt.warp_weights(Y, max_sampled)
    seen_no_violation = seen_rejection = 0
    for case in range(200):
        T = random_tables(rng, scale=0.6)
        x, u = rng.standard_normal(N), rng.standard_normal(M)
        own = sorted(rng.choice(Y, size=int(rng.integers(1, 4)), replace=False).tolist())
        positive = own[0]
        phi = forward(model, T, x, u)[0]
        scores = (f32(T["V"]) @ f32(phi)).astype(np.float64)
        trials, y_neg = replay_warp(scores, own, positive, case, margin, max_sampled)
        t, m = kernel_tables(T), kernel_tables({k: np.zeros_like(v) for k, v in T.items()})
        st = kt.Steps(kt.MODEL_CODES[model], f32(0.0), f32(0.0), f32(margin), f32(1e6), weights)
        loss, tried, j = warp_once(st.model, one_example(x, u, own), t, m, st, positive, case)
        assert (tried, j) == (trials, y_neg), case
        if y_neg < 0:
            seen_no_violation += 1
            assert loss == 0
        else:
            expected = weights[trials] * (margin - scores[positive] + scores[y_neg])
            assert loss == pytest.approx(expected, rel=1e-4, abs=1e-6)
        # cases where an own tag that violates was drawn (and rejected) before the choice
        draws = stream_draws(case, trials, Y)[:-1]
        seen_rejection += any(d in own and scores[d] > scores[positive] - margin for d in draws)
    assert seen_no_violation > 0 and seen_rejection > 0  # both branches were exercised


def test_warp_negatives_are_uniform_over_violating_tags():
    """With a fixed score vector, the chosen negative is uniform over the violators and the
    number of draws is geometric with success rate (violators / Y)."""
    scores_v = np.zeros((Y, D), f32)
    scores_v[:, 0] = [1.0, 0.0, 2.0, 0.95, -3.0, 1.5, 0.5]  # phi = e0: scores = column 0
    t = kernel_tables(
        {
            "V": scores_v,
            **{k: np.zeros((0, D if k != "b" else H)) for k in ("P", "Q")},
            "W": np.zeros((0, H)),
            "b": np.zeros((1, H)),
            "alpha": np.zeros((0, K)),
            "beta": np.zeros((0, K)),
            "gamma": np.zeros((0, K)),
        }
    )
    t = t._replace(P=np.array([[1.0, 0.0, 0.0]], f32))
    ex = one_example(np.array([1.0]), np.zeros(0), [0])
    m = kt.Tables(*(np.zeros_like(a) for a in t))
    st = kt.Steps(kt.BILINEAR, f32(0.0), f32(0.0), f32(0.1), f32(1e6), kt.warp_weights(Y, 1000))
    counts = np.zeros(Y)
    draws = []
    for seed in range(6000):
        _, tried, j = warp_once(st.model, ex, t, m, st, 0, seed)
        counts[j] += 1
        draws.append(tried)
    violators = [2, 3, 5]  # scores > 1.0 - 0.1, the positive (tag 0) excluded
    assert counts[[1, 4, 6, 0]].sum() == 0
    np.testing.assert_allclose(counts[violators] / counts.sum(), 1 / 3, atol=0.03)
    assert np.mean(draws) == pytest.approx(Y / 3, rel=0.05)


# ---------------------------------------------------------------------------- epochs
def _epoch_inputs(model, rng, n_examples=40, n_items=12, n_users=6):
    X = rng.standard_normal((n_items, N)).astype(f32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    U = rng.standard_normal((n_users, M)).astype(f32)
    tags = [
        np.sort(rng.choice(Y, size=int(rng.integers(1, 3)), replace=False))
        for _ in range(n_examples)
    ]
    indptr = np.concatenate([[0], np.cumsum([len(t) for t in tags])]).astype(np.int64)
    indices = np.concatenate(tags).astype(np.int32)
    ex = kt.Examples(
        X,
        np.arange(0, n_users * M + 1, M, dtype=np.int64),
        np.tile(np.arange(M, dtype=np.int32), n_users),
        U.ravel(),
        rng.integers(0, n_items, n_examples).astype(np.int32),
        rng.integers(0, n_users, n_examples).astype(np.int32),
        indptr,
        indices,
        np.repeat(np.arange(n_examples, dtype=np.int32), np.diff(indptr)),
        indices,
    )
    return ex


def test_norm_constraints_hold_after_steps():
    rng = np.random.default_rng(4)
    for model in ("bilinear", "user-biased"):
        ex = _epoch_inputs(model, rng)
        T = random_tables(rng, scale=0.3)
        t = kernel_tables(T)
        m = kt.Tables(*(np.zeros_like(a) for a in t))
        # a large step pushes rows far past the bound unless each step projects them back
        st = kt.Steps(
            kt.MODEL_CODES[model], f32(1.0), f32(0.9), f32(0.1), f32(1.0), kt.warp_weights(Y, Y - 1)
        )
        out = [np.zeros(4), np.zeros(4, np.int64), np.zeros(4, np.int64)]
        for epoch in range(3):
            order = rng.permutation(len(ex.positive_tag))
            kt.warp_epoch(order, ex, t, m, st, 0, epoch, *out)
            assert out[1].sum() > 0
            for name in ("V", "P") + (("Q",) if model == "user-biased" else ()):
                norms = np.linalg.norm(getattr(t, name), axis=1)
                assert norms.max() <= 1.0 + 1e-5, name
        assert np.isclose(np.linalg.norm(t.V, axis=1).max(), 1.0, atol=1e-4)  # it did bind


def test_one_thread_epochs_are_bit_reproducible():
    from cfcore.threads import numba_threads

    rng = np.random.default_rng(5)
    ex = _epoch_inputs("3-way", rng)
    T = random_tables(rng, scale=0.5)
    results = []
    with numba_threads(1):
        for _ in range(2):
            t = kernel_tables(T)
            m = kt.Tables(*(np.zeros_like(a) for a in t))
            st = kt.Steps(
                kt.THREE_WAY, f32(0.01), f32(0.9), f32(0.1), f32(1.0), kt.warp_weights(Y, Y - 1)
            )
            out = [np.zeros(8), np.zeros(8, np.int64), np.zeros(8, np.int64)]
            for epoch in range(2):
                kt.warp_epoch(np.arange(len(ex.positive_tag)), ex, t, m, st, 7, epoch, *out)
            results.append(t)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
