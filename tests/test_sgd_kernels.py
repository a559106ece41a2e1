"""The SGD kernels against slow, obviously-correct NumPy references.

Each loss's step is ``θ ← θ − η ∂ℓ/∂θ`` for the per-term objective

- squared:  ``ℓ = ½(v − s)² + (λ/2)(‖x‖² + ‖y‖²) + (λ_b/2)(b_u² + b_i²)`` (Fang eq. 3, halved),
- logistic: ``ℓ = log(1 + e^s) − v s + (same penalty)``,
- bpr:      ``ℓ = −log σ(s_ui − s_uj) + (λ/2)(‖x‖² + ‖y_i‖² + ‖y_j‖²) + (λ_b/2)(b_i² + b_j²)``,
- warp:     ``ℓ = w (m − s_ui + s_uj) + (same penalty)`` when j violates the margin.

The tests drive the real epoch kernel on one user with one entry (or triple), compare the
result with the step computed in float64 NumPy, and check the NumPy gradients themselves by
finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cfcore._kernels import sgd
from cfcore.threads import available_threads, numba_threads

K = 8
LR, REG, REG_B, MARGIN = 0.1, 0.05, 0.02, 1.0


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def _objective(loss, theta, target=1.0, weight=1.0):
    """Per-term objective ℓ in float64. theta = dict of x, y (or yi, yj), bu, bi (, bj)."""
    if loss in ("squared", "logistic"):
        s = theta["x"] @ theta["y"] + theta["bu"] + theta["bi"]
        data = (
            0.5 * (target - s) ** 2 if loss == "squared" else math.log1p(math.exp(s)) - target * s
        )
        penalty = REG / 2 * (theta["x"] @ theta["x"] + theta["y"] @ theta["y"])
        penalty += REG_B / 2 * (theta["bu"] ** 2 + theta["bi"] ** 2)
        return data + penalty
    d = theta["x"] @ (theta["yi"] - theta["yj"]) + theta["bi"] - theta["bj"]
    data = -math.log(_sigmoid(d)) if loss == "bpr" else weight * (MARGIN - d)
    penalty = REG / 2 * sum(theta[k] @ theta[k] for k in ("x", "yi", "yj"))
    penalty += REG_B / 2 * (theta["bi"] ** 2 + theta["bj"] ** 2)
    return data + penalty


def _analytic_gradient(loss, theta, target=1.0, weight=1.0):
    x = theta["x"]
    if loss in ("squared", "logistic"):
        y = theta["y"]
        s = x @ y + theta["bu"] + theta["bi"]
        e = target - s if loss == "squared" else target - _sigmoid(s)
        return {
            "x": -e * y + REG * x,
            "y": -e * x + REG * y,
            "bu": -e + REG_B * theta["bu"],
            "bi": -e + REG_B * theta["bi"],
        }
    yi, yj = theta["yi"], theta["yj"]
    d = x @ (yi - yj) + theta["bi"] - theta["bj"]
    g = _sigmoid(-d) if loss == "bpr" else weight
    return {
        "x": -g * (yi - yj) + REG * x,
        "yi": -g * x + REG * yi,
        "yj": g * x + REG * yj,
        "bi": -g + REG_B * theta["bi"],
        "bj": g + REG_B * theta["bj"],
    }


def _finite_difference(loss, theta, eps=1e-6, **kw):
    """Central differences of :func:`_objective` for every entry of every parameter."""
    grad = {}
    for name, value in theta.items():
        if np.ndim(value) == 0:
            up = _objective(loss, dict(theta, **{name: value + eps}), **kw)
            down = _objective(loss, dict(theta, **{name: value - eps}), **kw)
            grad[name] = (up - down) / (2 * eps)
            continue
        g = np.zeros_like(value)
        for idx in range(value.size):
            step = np.zeros_like(value)
            step[idx] = eps
            up = _objective(loss, dict(theta, **{name: value + step}), **kw)
            down = _objective(loss, dict(theta, **{name: value - step}), **kw)
            g[idx] = (up - down) / (2 * eps)
        grad[name] = g
    return grad


def _tables(n_users=1, n_items=3, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n_users, K)) * scale).astype(np.float32)
    Y = (rng.standard_normal((n_items, K)) * scale).astype(np.float32)
    ub = (rng.standard_normal(n_users) * 0.1).astype(np.float32)
    ib = (rng.standard_normal(n_items) * 0.1).astype(np.float32)
    return X, Y, ub, ib


def _warp_tables(n_items, max_sampled):
    """Rank weights and a uniform candidate table (alias: every slot keeps itself)."""
    prob = np.ones(n_items, dtype=np.float64)
    return sgd.warp_weights(n_items, max_sampled), prob, np.arange(n_items, dtype=np.int32)


def _run_one_user(
    loss,
    pos,
    neg,
    X,
    Y,
    ub,
    ib,
    use_bias=True,
    learn_items=True,
    max_sampled=10,
    candidates=None,
    accumulators=None,
):
    """One grouped epoch over a single user 0 with the given positives/negatives, on one
    thread (the production build).

    ``candidates``: WARP draws only this item (an alias table whose every slot aliases it).
    ``accumulators``: ``(user_acc, item_acc)`` switches row-wise AdaGrad on (updated in place).
    """
    weights, prob, alias = _warp_tables(Y.shape[0], max_sampled)
    if candidates is not None:
        prob, alias = np.zeros(Y.shape[0]), np.full(Y.shape[0], candidates, np.int32)
    adagrad = accumulators is not None
    tables = sgd.Tables.of(X, Y, ub, ib, adagrad=adagrad)
    if adagrad:
        tables = tables._replace(user_acc=accumulators[0], item_acc=accumulators[1])
    entries = sgd.Entries.of([0, len(pos)], np.array(pos, np.int32), [0, len(neg)], np.array(neg))
    hyper = sgd.Hyper.of(
        lr=LR,
        reg=REG,
        reg_bias=REG_B,
        margin=MARGIN,
        warp_weights=weights,
        alias_prob=prob,
        alias_idx=alias,
    )
    epoch = sgd.Epoch.of(seed=7, epoch=0, n_blocks=1, users=np.zeros(1, np.int32))
    run = sgd.epoch_kernel(
        loss=sgd.LOSS_CODES[loss], use_bias=use_bias, learn_items=learn_items, adagrad=adagrad
    )
    with numba_threads(1):
        run(tables, entries, hyper, epoch)
    return float(epoch.loss_out[0]), int(epoch.count_out[0])


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("target", [1.0, 0.0])
def test_pointwise_step_is_the_gradient_step(loss, target):
    X, Y, ub, ib = _tables()
    item = 2
    theta = {
        "x": X[0].astype(np.float64),
        "y": Y[item].astype(np.float64),
        "bu": float(ub[0]),
        "bi": float(ib[item]),
    }
    grad = _analytic_gradient(loss, theta, target)
    numeric = _finite_difference(loss, theta, target=target)
    for name in grad:
        np.testing.assert_allclose(grad[name], numeric[name], rtol=1e-5, atol=1e-7)
    s = theta["x"] @ theta["y"] + theta["bu"] + theta["bi"]
    expected_loss = (target - s) ** 2 if loss == "squared" else math.log1p(math.exp(s)) - target * s
    Y_before = Y.copy()
    pos, neg = ([item], []) if target == 1.0 else ([], [item])
    value, count = _run_one_user(loss, pos, neg, X, Y, ub, ib)
    assert count == 1
    assert value == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(X[0], theta["x"] - LR * grad["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Y[item], theta["y"] - LR * grad["y"], rtol=1e-5, atol=1e-6)
    assert ub[0] == pytest.approx(theta["bu"] - LR * grad["bu"], rel=1e-5)
    assert ib[item] == pytest.approx(theta["bi"] - LR * grad["bi"], rel=1e-5)
    untouched = [r for r in range(Y.shape[0]) if r != item]
    np.testing.assert_array_equal(Y[untouched], Y_before[untouched])


def test_bpr_step_is_the_gradient_step():
    X, Y, ub, ib = _tables()
    i, j = 0, 2
    theta = {
        "x": X[0].astype(np.float64),
        "yi": Y[i].astype(np.float64),
        "yj": Y[j].astype(np.float64),
        "bi": float(ib[i]),
        "bj": float(ib[j]),
    }
    grad = _analytic_gradient("bpr", theta)
    numeric = _finite_difference("bpr", theta)
    for name in grad:
        np.testing.assert_allclose(grad[name], numeric[name], rtol=1e-5, atol=1e-7)
    d = theta["x"] @ (theta["yi"] - theta["yj"]) + theta["bi"] - theta["bj"]
    value, count = _run_one_user("bpr", [i], [j], X, Y, ub, ib)
    assert count == 1
    assert value == pytest.approx(-math.log(_sigmoid(d)), rel=1e-5)
    np.testing.assert_allclose(X[0], theta["x"] - LR * grad["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Y[i], theta["yi"] - LR * grad["yi"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Y[j], theta["yj"] - LR * grad["yj"], rtol=1e-5, atol=1e-6)
    assert ib[i] == pytest.approx(theta["bi"] - LR * grad["bi"], rel=1e-5)
    assert ib[j] == pytest.approx(theta["bj"] - LR * grad["bj"], rel=1e-5)


def test_warp_step_is_the_rank_weighted_gradient_step():
    X, Y, ub, ib = _tables(n_items=50)
    i, j = 0, 1
    Y[j] = Y[i] + 0.1 * X[0]  # s_uj > s_ui - margin: the first draw violates
    theta = {
        "x": X[0].astype(np.float64),
        "yi": Y[i].astype(np.float64),
        "yj": Y[j].astype(np.float64),
        "bi": float(ib[i]),
        "bj": float(ib[j]),
    }
    weight = math.log((50 - 1) // 1)  # rank estimate after one draw: floor((N-1)/1)
    grad = _analytic_gradient("warp", theta, weight=weight)
    numeric = _finite_difference("warp", theta, weight=weight)
    for name in grad:
        np.testing.assert_allclose(grad[name], numeric[name], rtol=1e-5, atol=1e-7)
    d = theta["x"] @ (theta["yi"] - theta["yj"]) + theta["bi"] - theta["bj"]
    value, count = _run_one_user("warp", [i], [], X, Y, ub, ib, candidates=j)
    assert count == 1
    assert value == pytest.approx(weight * (MARGIN - d), rel=1e-5)
    np.testing.assert_allclose(X[0], theta["x"] - LR * grad["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Y[i], theta["yi"] - LR * grad["yi"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Y[j], theta["yj"] - LR * grad["yj"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_adagrad_steps_each_row_with_its_own_accumulated_rate(loss):
    """Row-wise AdaGrad: ``G_r += mean squared loss gradient of row r``, step ``η/√G_r``."""
    X, Y, ub, ib = _tables()
    user_acc = np.array([2.0], np.float32)
    item_acc = np.array([1.0, 3.0, 5.0], np.float32)
    x = X[0].astype(np.float64)
    if loss == "squared":
        i = 2
        theta = {"x": x, "y": Y[i].astype(np.float64), "bu": float(ub[0]), "bi": float(ib[i])}
        grad = _analytic_gradient(loss, theta, 1.0)
        e = 1.0 - (x @ theta["y"] + theta["bu"] + theta["bi"])
        g_user, g_items = e * e * (theta["y"] @ theta["y"]) / K, {i: e * e * (x @ x) / K}
        _run_one_user(loss, [i], [], X, Y, ub, ib, accumulators=(user_acc, item_acc))
        rows = {i: ("y", "bi")}
    else:
        i, j = 0, 2
        theta = {
            "x": x,
            "yi": Y[i].astype(np.float64),
            "yj": Y[j].astype(np.float64),
            "bi": float(ib[i]),
            "bj": float(ib[j]),
        }
        grad = _analytic_gradient(loss, theta)
        g = _sigmoid(-(x @ (theta["yi"] - theta["yj"]) + theta["bi"] - theta["bj"]))
        diff = theta["yi"] - theta["yj"]
        g_user = g * g * (diff @ diff) / K
        g_items = {i: g * g * (x @ x) / K, j: g * g * (x @ x) / K}
        _run_one_user(loss, [i], [j], X, Y, ub, ib, accumulators=(user_acc, item_acc))
        rows = {i: ("yi", "bi"), j: ("yj", "bj")}
    G_user = 2.0 + g_user
    assert user_acc[0] == pytest.approx(G_user, rel=1e-5)
    np.testing.assert_allclose(X[0], x - LR / math.sqrt(G_user) * grad["x"], rtol=1e-5, atol=1e-6)
    start = {0: 1.0, 1: 3.0, 2: 5.0}
    for item, (y, b) in rows.items():
        G = start[item] + g_items[item]
        assert item_acc[item] == pytest.approx(G, rel=1e-5)
        step = LR / math.sqrt(G)
        np.testing.assert_allclose(Y[item], theta[y] - step * grad[y], rtol=1e-5, atol=1e-6)
        assert ib[item] == pytest.approx(theta[b] - step * grad[b], rel=1e-5)
    assert item_acc[1] == 3.0  # untouched rows keep their accumulator


def test_warp_without_violation_makes_no_step():
    X, Y, ub, ib = _tables(n_items=5)
    i, j = 0, 1
    Y[j] = Y[i] - 10.0 * X[0] / (X[0] @ X[0])  # s_uj = s_ui - 10: never within the margin
    before = (X.copy(), Y.copy(), ib.copy())
    value, count = _run_one_user("warp", [i], [], X, Y, ub, ib, max_sampled=5, candidates=j)
    assert value == 0.0 and count == 1
    for a, b in zip((X, Y, ib), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_warp_rejects_the_users_positives():
    """A candidate that is a positive is never stepped against (and counts as a draw)."""
    X, Y, ub, ib = _tables(n_items=5)
    Y[1] = Y[0] + 0.1 * X[0]  # item 1 would violate the margin, but it is a positive
    before = (X.copy(), Y.copy())
    value, count = _run_one_user("warp", [0, 1], [], X, Y, ub, ib, max_sampled=3, candidates=1)
    assert value == 0.0 and count == 2
    np.testing.assert_array_equal(X, before[0])
    np.testing.assert_array_equal(Y, before[1])


def test_warp_weights_match_lightfm_formula():
    w = sgd.warp_weights(1000, 10)
    for n in range(1, 11):
        assert w[n] == pytest.approx(math.log(max(1, (1000 - 1) // n)), rel=1e-6)
    assert sgd.warp_weights(2, 3)[3] == 0.0  # floor(1/3) = 0 → max(1, ·) → log 1


def test_fold_in_kernel_leaves_items_alone():
    X, Y, ub, ib = _tables()
    Y0, ib0 = Y.copy(), ib.copy()
    theta = {
        "x": X[0].astype(np.float64),
        "y": Y[1].astype(np.float64),
        "bu": float(ub[0]),
        "bi": float(ib[1]),
    }
    grad = _analytic_gradient("squared", theta, 1.0)
    _run_one_user("squared", [1], [], X, Y, ub, ib, learn_items=False)
    np.testing.assert_array_equal(Y, Y0)
    np.testing.assert_array_equal(ib, ib0)
    np.testing.assert_allclose(X[0], theta["x"] - LR * grad["x"], rtol=1e-5, atol=1e-6)


def test_one_and_two_threads_agree_on_disjoint_work():
    """Users that share no item: no Hogwild race, so any thread count gives the same tables."""
    n_users, n_items = 16, 32
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((n_users, K)) * 0.3).astype(np.float32)
    Y = (rng.standard_normal((n_items, K)) * 0.3).astype(np.float32)
    pos_indptr = np.arange(0, 2 * n_users + 1, 2)
    pos_indices = np.arange(2 * n_users)  # user u owns items 2u, 2u+1
    entries = sgd.Entries.of(pos_indptr, pos_indices, np.zeros(n_users + 1), [])
    users = rng.permutation(n_users).astype(np.int32)
    hyper = sgd.Hyper.of(lr=0.1, reg=0.01, reg_bias=0.01)
    run = sgd.epoch_kernel(loss=sgd.SQUARED)
    out = []
    for threads in (1, min(2, available_threads())):
        tables = sgd.Tables.of(X.copy(), Y.copy())
        epoch = sgd.Epoch.of(seed=0, epoch=0, n_blocks=8, users=users)
        with numba_threads(threads):
            run(tables, entries, hyper, epoch)
        assert epoch.count_out.sum() == 2 * n_users
        out.append((tables.user_factors, tables.item_factors, epoch.loss_out))
    for a, b in zip(out[0], out[1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_negatives_drawn_per_thread_are_the_stored_ones(loss):
    """Item rows held fixed, so only user rows move (each by one block: no race): drawing each
    user's negatives in the kernel, into a per-thread buffer, gives the tables of the stored
    draw of ``sample_negatives`` on one thread and on two."""
    import scipy.sparse as sp

    from cfcore.sampling import SamplingPlan, sample_negatives

    rng = np.random.default_rng(5)
    n_users, n_items = 300, 120
    positives = sp.random(n_users, n_items, density=0.15, format="csr", random_state=rng)
    positives.data[:] = 1
    plan = SamplingPlan.of(positives, 3.0)
    stored = sample_negatives(positives, 3.0, seed=9, epoch=2, threads=1)
    drawn = sgd.Entries.of(
        plan.indptr,
        plan.indices,
        plan.out_indptr,
        [],
        neg_weights=plan.weights,
        neg_alias=plan.alias_table,
    )
    kept = sgd.Entries.of(plan.indptr, plan.indices, stored.indptr, stored.indices)
    X = (rng.standard_normal((n_users, K)) * 0.3).astype(np.float32)
    Y = (rng.standard_normal((n_items, K)) * 0.3).astype(np.float32)
    users = rng.permutation(n_users).astype(np.int32)
    hyper = sgd.Hyper.of(lr=0.1, reg=0.01, reg_bias=0.01)
    run = sgd.epoch_kernel(loss=sgd.LOSS_CODES[loss], learn_items=False)
    out = []
    for entries, threads in ((kept, 1), (drawn, 1), (drawn, min(2, available_threads()))):
        tables = sgd.Tables.of(X.copy(), Y.copy())
        epoch = sgd.Epoch.of(seed=9, epoch=5, n_blocks=16, users=users, neg_epoch=2)
        with numba_threads(threads):
            run(tables, entries, hyper, epoch)
        out.append((tables.user_factors, epoch.loss_out, epoch.count_out))
    for other in out[1:]:
        for a, b in zip(out[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_bundles_refuse_wrong_arrays():
    """The bundles name the field that does not fit instead of compiling a new variant."""
    X = np.zeros((3, K), np.float32)
    with pytest.raises(ValueError, match="item_factors"):
        sgd.Tables.of(X, np.zeros((4, K)))  # float64
    with pytest.raises(ValueError, match="user_factors"):
        sgd.Tables.of(np.asfortranarray(np.zeros((3, K), np.float32)), X)
    with pytest.raises(ValueError, match="width"):
        sgd.Tables.of(X, np.zeros((4, K + 1), np.float32))
    with pytest.raises(ValueError, match="user_bias"):
        sgd.Tables.of(X, X, user_bias=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="users"):
        sgd.Entries.of([0, 1], [0], [0, 0, 0], [])
    drawn = dict(neg_weights=np.ones(3), neg_alias=np.zeros(3, np.uint64))
    with pytest.raises(ValueError, match="grouped"):  # the random order reads stored ones
        sgd.Entries.of([0, 1], [0], [0, 2], [], order="random", **drawn)
    with pytest.raises(ValueError, match="number of indices"):  # drawn, or stored: not both
        sgd.Entries.of([0, 1], [0], [0, 2], [1, 2], **drawn)
    with pytest.raises(ValueError, match="neg_alias"):
        sgd.Entries.of([0, 1], [0], [0, 2], [], neg_weights=np.ones(3), neg_alias=np.zeros(3))
    with pytest.raises(TypeError):
        sgd.Hyper.of(0.1, 0.01, 0.01)  # keyword-only: lr and reg cannot be swapped
    with pytest.raises(ValueError, match="alias_idx"):
        sgd.Hyper.of(
            lr=0.1, reg=0.0, reg_bias=0.0, alias_prob=np.ones(3), alias_idx=np.zeros(2, np.int32)
        )
    with pytest.raises(ValueError, match="order"):
        sgd.epoch_kernel(loss=sgd.BPR, order="sorted")
    hyper = sgd.Hyper.of(lr=0.1, reg=0.01, reg_bias=0.0)
    assert all(isinstance(v, np.float32) for v in hyper[:4])


def test_one_prefetch_helper_with_a_fallback():
    """The kernels and the benchmark's ceiling share one prefetch helper; where the LLVM
    intrinsic cannot be built it degrades to a no-op instead of breaking every kernel."""
    import numba

    from bench import ceiling
    from cfcore._kernels import prefetch

    assert ceiling.prefetch_row is prefetch.prefetch_row is sgd.prefetch_row
    assert ceiling.PREFETCH_KIND == prefetch.PREFETCH_KIND == "llvm.prefetch"
    fallback, kind = prefetch._select(False)
    assert kind == "none"

    @numba.njit
    def touch(table):
        for r in range(table.shape[0]):
            fallback(table, r)
        return table.sum()

    assert touch(np.ones((3, 20), np.float32)) == 60.0
