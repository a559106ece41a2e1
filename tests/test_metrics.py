"""Metrics against slow, obviously-correct references on small inputs."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from cfcore.errors import InputError
from cfcore.metrics import (
    auc_score,
    average_precision,
    bootstrap_ci,
    bootstrap_samples,
    evaluate,
    factor_scorer,
    mean_average_precision,
    paired_bootstrap,
    pairwise_ranking,
    popularity_scorer,
    rmse,
    top_k_metrics,
)


def _random_problem(seed, n_users=12, n_items=30, density=0.2, ties=False):
    rng = np.random.default_rng(seed)
    scores = (
        rng.integers(0, 4, (n_users, n_items)).astype(np.float32)
        if ties
        else rng.random((n_users, n_items), dtype=np.float32)
    )
    cells = rng.random((n_users, n_items))
    train = sp.csr_matrix((cells < density).astype(np.float32))
    test = sp.csr_matrix(((cells >= density) & (cells < 2 * density)).astype(np.float32))
    return scores, train, test


def _table_scorer(table):
    return lambda rows: table[rows]


def _reference_auc(scores, pos, excl=None, neg=None):
    """Per-user pair counting, the definition itself."""
    aucs = []
    for u in range(scores.shape[0]):
        p = set(pos[u].indices)
        if neg is not None:
            n = set(neg[u].indices) - p
        else:
            n = (
                set(range(scores.shape[1]))
                - p
                - (set(excl[u].indices) if excl is not None else set())
            )
        if not p or not n:
            continue
        total = 0.0
        for i in p:
            for j in n:
                total += (
                    1.0
                    if scores[u, i] > scores[u, j]
                    else 0.5
                    if scores[u, i] == scores[u, j]
                    else 0.0
                )
        aucs.append(total / (len(p) * len(n)))
    return np.mean(aucs), len(aucs)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_ranking_matches_pair_counting(seed, ties):
    scores, train, test = _random_problem(seed, ties=ties)
    ref, n = _reference_auc(scores, test, excl=train)
    got = pairwise_ranking(_table_scorer(scores), test, exclude=train, batch_size=5)
    assert got["users"] == n
    assert got["auc"] == pytest.approx(ref, abs=1e-9)
    assert got["pr"] == pytest.approx(1 - ref, abs=1e-9)
    # explicit negatives: compare against the train matrix used as negatives
    ref_n, _ = _reference_auc(scores, test, neg=train)
    assert pairwise_ranking(_table_scorer(scores), test, negatives=train)["auc"] == pytest.approx(
        ref_n
    )


def test_sampled_negatives_approach_full_auc_and_are_seeded():
    scores, train, test = _random_problem(3, n_users=40, n_items=200)
    full = pairwise_ranking(_table_scorer(scores), test, exclude=train)["auc"]
    a = pairwise_ranking(_table_scorer(scores), test, exclude=train, n_negatives=50, seed=1)
    b = pairwise_ranking(_table_scorer(scores), test, exclude=train, n_negatives=50, seed=1)
    assert a == b
    assert abs(a["auc"] - full) < 0.05


def test_perfect_and_reversed_scores():
    test = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    perfect = test.toarray()
    assert pairwise_ranking(_table_scorer(perfect), test)["auc"] == 1.0
    assert pairwise_ranking(_table_scorer(-perfect), test)["pr"] == 1.0


def _reference_topk(scores, test, excl, k):
    rows = []
    for u in range(scores.shape[0]):
        rel = set(test[u].indices)
        if not rel:
            continue
        s = scores[u].astype(np.float64).copy()
        s[list(excl[u].indices)] = -np.inf
        top = sorted(range(len(s)), key=lambda i: (-s[i], i))[:k]
        hits = [1.0 if i in rel else 0.0 for i in top]
        prec = [sum(hits[: r + 1]) / (r + 1) for r in range(k)]
        dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / np.log2(r + 2) for r in range(min(len(rel), k)))
        rows.append(
            [
                sum(hits) / k,
                sum(hits) / len(rel),
                float(sum(hits) > 0),
                sum(p * h for p, h in zip(prec, hits, strict=True)) / min(len(rel), k),
                dcg / idcg,
            ]
        )
    return np.mean(rows, axis=0)


@pytest.mark.parametrize("k", [1, 5, 10])
@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_matches_reference(seed, k):
    scores, train, test = _random_problem(seed)
    ref = _reference_topk(scores, test, train, k)
    got = top_k_metrics(_table_scorer(scores), test, k=k, exclude=train, batch_size=4)
    names = ["precision", "recall", "accuracy", "map", "ndcg"]
    np.testing.assert_allclose([got[f"{n}@{k}"] for n in names], ref, atol=1e-9)


def test_factor_and_popularity_scorers():
    rng = np.random.default_rng(0)
    u, v, b = rng.random((5, 3)), rng.random((7, 3)), rng.random(7)
    np.testing.assert_allclose(
        factor_scorer(u, v, b)(np.array([1, 3])), u[[1, 3]] @ v.T + b, rtol=1e-5
    )
    train = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 1]], dtype=np.float32))
    np.testing.assert_array_equal(
        popularity_scorer(train)(np.array([0, 1])), [[1, 0, 2], [1, 0, 2]]
    )


def test_evaluate_combines_and_beats_popularity_on_planted_data():
    # two user groups, each liking its own half of the items
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 40
    group = np.arange(n_users) % 2
    likes = (np.arange(n_items)[None, :] % 2 == group[:, None]) & (
        rng.random((n_users, n_items)) < 0.5
    )
    m = sp.csr_matrix(likes.astype(np.float32))
    train = sp.csr_matrix(m.multiply(rng.random(m.shape) < 0.7))
    test = m - train
    truth = (np.arange(n_items)[None, :] % 2 == group[:, None]).astype(np.float32)
    good = evaluate(_table_scorer(truth), train, test, k=5)
    pop = evaluate(popularity_scorer(train), train, test, k=5)
    # in-group items the user did not like tie with the positives (credit 1/2): AUC ≈ 0.83
    assert good["auc"] > 0.75 and pop["auc"] < 0.6
    assert good["precision@5"] > pop["precision@5"]
    assert set(good) >= {"auc", "pr", "precision@5", "recall@5", "accuracy@5", "map@5", "ndcg@5"}


def test_rmse_and_auc_score():
    assert rmse([1, 0, 1], [1, 0, 0]) == pytest.approx(np.sqrt(1 / 3))
    assert auc_score([3, 2], [1, 2]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 40), st.integers(1, 5), st.booleans())
def test_average_precision_matches_sklearn(seed, n, c, ties):
    """Also with tied scores (each tie one threshold, as scikit-learn's)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.4).astype(int)
    s = rng.integers(0, 4, (n, c)).astype(float) if ties else rng.random((n, c))
    ap = average_precision(y, s)
    for j in range(c):
        if y[:, j].sum() == 0:
            assert np.isnan(ap[j])
        else:
            assert ap[j] == pytest.approx(average_precision_score(y[:, j], s[:, j]))


def test_average_precision_of_tied_scores_ignores_their_order():
    y = np.array([[1], [0], [0], [1], [0]])
    constant = np.zeros((5, 1))
    assert average_precision(y, constant)[0] == pytest.approx(0.4)  # the prevalence
    assert average_precision(y[::-1], constant)[0] == pytest.approx(0.4)


def test_normal_bootstrap_interval_is_centred_on_the_estimate():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, 400)
    point, lo, hi = bootstrap_ci(np.mean, values, n_boot=500, interval="normal")
    assert point == pytest.approx(values.mean())
    assert (hi - point) == pytest.approx(point - lo)
    assert (hi - lo) / 2 == pytest.approx(1.96 * 2.0 / np.sqrt(400), rel=0.15)  # 1.96 · SE
    with pytest.raises(InputError, match="interval"):
        bootstrap_ci(np.mean, values, interval="bca")
    # paired: a z-test with the bootstrap's standard error
    shifted = values + 0.3 + rng.normal(0, 0.5, 400)
    res = paired_bootstrap(np.mean, shifted, values, n_boot=500, interval="normal")
    sd = (res.high - res.low) / (2 * 1.959964)
    assert res.difference == pytest.approx(shifted.mean() - values.mean())
    assert res.high - res.difference == pytest.approx(res.difference - res.low)
    from statistics import NormalDist

    assert res.p_value == pytest.approx(2 * (1 - NormalDist().cdf(res.difference / sd)))
    assert paired_bootstrap(np.mean, values, values, interval="normal").p_value == 1.0


def test_map_and_bootstrap():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < 0.3).astype(int)
    s = y + rng.normal(0, 0.5, y.shape)
    m = mean_average_precision(y, s)
    assert 0.6 < m <= 1.0
    point, lo, hi = bootstrap_ci(mean_average_precision, y, s, n_boot=200, seed=1)
    assert point == m and lo < m < hi and hi - lo < 0.2
    assert bootstrap_ci(mean_average_precision, y, s, n_boot=50, seed=1) == bootstrap_ci(
        mean_average_precision, y, s, n_boot=50, seed=1
    )


def test_paired_bootstrap_of_two_scorers_on_the_same_items():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 5)) < 0.3).astype(int)
    good = y + rng.normal(0, 0.6, y.shape)
    worse = y + rng.normal(0, 1.2, y.shape)
    res = paired_bootstrap(mean_average_precision, good, worse, y, n_boot=300, seed=2)
    assert res.difference == pytest.approx(
        mean_average_precision(y, good) - mean_average_precision(y, worse)
    )
    assert 0 < res.low < res.difference < res.high and res.p_value < 0.01
    same = paired_bootstrap(mean_average_precision, good, good, y, n_boot=50)
    assert same.difference == 0 and same.low == same.high == 0 and same.p_value == 1
    # per-query values: the paired interval is narrower than the unpaired ones would suggest
    base = rng.normal(0.5, 0.2, 400)
    a, b = base + 0.01, base + rng.normal(0, 0.005, 400)
    diff, low, high, p = paired_bootstrap(np.mean, a, b, n_boot=400)
    assert 0 < low < diff < high and p < 0.01
    _, lo_a, hi_a = bootstrap_ci(np.mean, a, n_boot=400)
    assert high - low < (hi_a - lo_a) / 5
    # undefined resamples are NaN, not a crash: one positive in 300 rows
    rare = np.zeros((300, 1), int)
    rare[7] = 1
    point, samples = bootstrap_samples(mean_average_precision, rare, good[:, :1], n_boot=100)
    assert np.isnan(samples).any() and np.isfinite(samples).any()


def test_bad_inputs_raise_clear_errors():
    scores, train, test = _random_problem(0)
    with pytest.raises(InputError, match="k must lie"):
        top_k_metrics(_table_scorer(scores), test, k=31)
    with pytest.raises(InputError, match="NaN"):
        pairwise_ranking(lambda r: np.full((len(r), 30), np.nan, np.float32), test)
    with pytest.raises(InputError, match="shape"):
        pairwise_ranking(_table_scorer(scores), test, exclude=sp.csr_matrix((3, 3)))
    with pytest.raises(InputError, match="shapes differ"):
        rmse([1, 2], [1])
    with pytest.raises(InputError):
        average_precision(np.ones((3, 2)), np.array([[np.nan, 1], [1, 1], [1, 1]]))
