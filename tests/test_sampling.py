"""Fang et al.'s negative sampler (Algorithm 1) against slow, obviously-correct references.

The reference distribution is successive weighted sampling without replacement over the
user's candidates C_j = {i not a positive of j : w_i > 0}: P(ordered s_1..s_k) =
Π_t w_{s_t} / (W_j − w_{s_1} − … − w_{s_{t−1}}). Both kernel paths (rejection from the alias
table, Efraimidis–Spirakis keys) are forced in turn with ``switch`` and must match it.
"""

from __future__ import annotations

import itertools
import warnings

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from cfcore._kernels.sampling import (
    build_alias,
    negative_counts,
    pack_alias,
    sample_into,
    select_smallest,
)
from cfcore.errors import InputError, ModelFormatError
from cfcore.sampling import (
    WEIGHTINGS,
    NegativeSample,
    NegativeShortfallWarning,
    item_weights,
    sample_negatives,
)
from cfcore.threads import numba_threads

PATHS = {"keys": 0.0, "auto": 4.0, "rejection": np.inf}


# ----------------------------------------------------------------------------- references
def ref_weights(popularity, weighting):
    p = np.asarray(popularity, dtype=np.float64)
    return {"popularity": p, "log-popularity": np.log(1.0 + p), "uniform": np.ones_like(p)}[
        weighting
    ]


def ref_counts(X, weights, ratio):
    """Per user: (requested, candidates) by plain set arithmetic."""
    X = sp.csr_matrix(X)
    weighted = {int(i) for i in np.flatnonzero(weights > 0)}
    out = []
    for u in range(X.shape[0]):
        row = set(X.indices[X.indptr[u] : X.indptr[u + 1]].tolist())
        requested = int(np.floor(ratio * len(row) + 0.5))
        out.append((requested, weighted - row))
    return out


def ref_set_probabilities(weights, candidates, k):
    """Exact P(set) of k successive weighted draws without replacement from candidates."""
    probs = {}
    for perm in itertools.permutations(sorted(candidates), k):
        left = sum(weights[i] for i in candidates)
        p = 1.0
        for i in perm:
            p *= weights[i] / left
            left -= weights[i]
        key = tuple(sorted(perm))
        probs[key] = probs.get(key, 0.0) + p
    return probs


def run_kernel(X, weights, ratio, seed=0, epoch=0, switch=4.0, threads=1):
    """The two kernel passes, as sample_negatives calls them, with a chosen path.

    One thread by default: tiny inputs, and results do not depend on the thread count
    (tested separately), while parallel-region start-up costs dominate on a busy machine.
    """
    X = sp.csr_matrix(X)
    indptr = X.indptr.astype(np.int64)
    indices = X.indices.astype(np.int32)
    weights = np.asarray(weights, dtype=np.float64)
    n_users, n_items = X.shape
    prob = np.empty(n_items, dtype=np.float64)
    alias = np.empty(n_items, dtype=np.int32)
    build_alias(weights, prob, alias)
    table = np.empty(n_items, dtype=np.uint64)
    pack_alias(prob, alias, table)
    counts = np.empty(n_users, dtype=np.int64)
    wanted = np.empty(n_users, dtype=np.int64)
    n_short = negative_counts(indptr, indices, weights, float(ratio), counts, wanted)
    out_indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=out_indptr[1:])
    out = np.empty(out_indptr[-1], dtype=np.int32)
    with numba_threads(threads):
        sample_into(indptr, indices, weights, table, seed, epoch, out_indptr, out, threads, switch)
    return out_indptr, out, n_short, wanted


def one_positive_users(n_items, per_item):
    """per_item users whose single positive is item g, for every g (ratio 1 → one draw)."""
    rows = np.arange(n_items * per_item)
    cols = np.repeat(np.arange(n_items), per_item)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(rows), n_items))


def assert_valid(X, out_indptr, out, weights, ratio, n_short=None):
    """No positive, no duplicate, sorted, counts = min(requested, |C_j|), shortfall counted."""
    ref = ref_counts(X, weights, ratio)
    assert out_indptr[0] == 0 and out_indptr[-1] == len(out)
    short = 0
    for u, (requested, cand) in enumerate(ref):
        got = out[out_indptr[u] : out_indptr[u + 1]]
        assert np.all(np.diff(got) > 0), f"user {u}: not sorted/unique: {got}"
        assert set(got.tolist()) <= cand, f"user {u}: drew a positive or a weight-0 item"
        assert len(got) == min(requested, len(cand))
        short += requested > len(cand)
    if n_short is not None:
        assert n_short == short


# ----------------------------------------------------------------------------- building blocks
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.7, 100.0, 1e-3]), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_alias_table_reproduces_the_weights(w):
    w = np.array(w)
    prob = np.empty(len(w))
    alias = np.empty(len(w), dtype=np.int32)
    total = build_alias(w, prob, alias)
    assert total == pytest.approx(w.sum())
    if w.sum() == 0:
        return
    n = len(w)
    implied = prob / n
    np.add.at(implied, alias, (1.0 - prob) / n)
    np.testing.assert_allclose(implied, w / w.sum(), atol=1e-12)
    assert np.all(prob[w == 0] == 0) and np.all(w[alias[w == 0]] > 0)
    # The packed form the kernel reads: keep slot i when 32 random bits < threshold.
    table = np.empty(n, dtype=np.uint64)
    pack_alias(prob, alias, table)
    thr = (table & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2.0**32
    to = (table >> np.uint64(32)).astype(np.int64)
    packed = thr / n
    np.add.at(packed, to, (1.0 - thr) / n)
    np.testing.assert_allclose(packed, w / w.sum(), atol=1e-9)
    assert np.all(packed[w == 0] == 0)


@given(st.integers(1, 60), st.integers(0, 2**32 - 1), st.data())
@settings(max_examples=60, deadline=None)
def test_select_smallest_puts_the_k_smallest_first(m, seed, data):
    k = data.draw(st.integers(0, m))
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 8, m).astype(np.float64)  # many ties
    ids = np.arange(m, dtype=np.int32)
    orig = keys.copy()
    select_smallest(keys, ids, m, k)
    np.testing.assert_array_equal(np.sort(keys[:k]), np.sort(orig)[:k])
    np.testing.assert_array_equal(orig[ids], keys)  # ids moved alongside


# ----------------------------------------------------------------------------- distribution
@pytest.mark.parametrize("path", ["rejection", "keys", "api"])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_single_draw_frequencies_match_weights_over_non_positives(weighting, path):
    popularity = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 9.0, 20.0])
    w = ref_weights(popularity, weighting)
    per_item = 4000
    X = one_positive_users(len(w), per_item)
    if path == "api":
        neg = sample_negatives(
            X, 1.0, weighting, seed=11, popularity=popularity, threads=1, warn_short=False
        )
        out_indptr, out = neg.indptr, neg.indices
    else:
        out_indptr, out, _, _ = run_kernel(X, w, 1.0, seed=11, switch=PATHS[path])
    assert np.all(np.diff(out_indptr) == 1 if weighting == "uniform" else np.diff(out_indptr) <= 1)
    for g in range(len(w)):
        users = slice(g * per_item, (g + 1) * per_item)
        drawn = out[out_indptr[users.start] : out_indptr[users.stop]]
        target = w.copy()
        target[g] = 0.0
        support = target > 0
        observed = np.bincount(drawn, minlength=len(w))
        assert observed[~support].sum() == 0, "drew a positive or a weight-0 item"
        expected = target[support] / target.sum() * len(drawn)
        assert stats.chisquare(observed[support], expected).pvalue > 1e-4, (g, observed)


@pytest.mark.parametrize("path", ["rejection", "keys", "auto"])
def test_sets_follow_successive_sampling_without_replacement(path):
    # 1 positive, ratio 3 → 3 of the 5 candidates; heavy items make the law far from uniform.
    w = np.array([4.0, 1.0, 0.5, 2.0, 8.0, 0.25])
    n_users = 30_000
    X = sp.csr_matrix(
        (np.ones(n_users, np.float32), (np.arange(n_users), np.zeros(n_users))),
        shape=(n_users, len(w)),
    )
    out_indptr, out, _, _ = run_kernel(X, w, 3.0, seed=5, switch=PATHS[path])
    sets = [tuple(s) for s in out.reshape(n_users, 3).tolist()]
    probs = ref_set_probabilities(w, {1, 2, 3, 4, 5}, 3)
    keys = sorted(probs)
    observed = np.array([sum(1 for s in sets if s == k) for k in keys])
    assert observed.sum() == n_users
    expected = np.array([probs[k] for k in keys]) * n_users
    assert stats.chisquare(observed, expected).pvalue > 1e-4


# ----------------------------------------------------------------------------- properties
@st.composite
def problems(draw):
    """Small users × items matrices; catalogues up to 700 items cross bitmap-word edges."""
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 12) | st.sampled_from([63, 64, 65, 130, 700]))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 0.9, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dense = rng.random((n_users, n_items)) < density
    popularity = rng.choice([0.0, 1.0, 2.0, 7.0, 50.0], size=n_items)
    ratio = draw(st.sampled_from([0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 10.0]))
    return sp.csr_matrix(dense.astype(np.float32)), popularity, ratio


@given(
    problems(), st.sampled_from(WEIGHTINGS), st.sampled_from(sorted(PATHS)), st.integers(0, 2**40)
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_never_positive_never_duplicate_counts_and_shortfall(problem, weighting, path, seed):
    X, popularity, ratio = problem
    w = ref_weights(popularity, weighting)
    out_indptr, out, n_short, wanted = run_kernel(X, w, ratio, seed=seed, switch=PATHS[path])
    assert_valid(X, out_indptr, out, w, ratio, n_short)
    assert wanted.sum() == sum(r for r, _ in ref_counts(X, w, ratio))


@given(problems(), st.sampled_from(WEIGHTINGS), st.integers(0, 2**40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_public_api_properties(problem, weighting, seed):
    X, popularity, ratio = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NegativeShortfallWarning)
        neg = sample_negatives(X, ratio, weighting, seed=seed, popularity=popularity)
    w = ref_weights(popularity, weighting)
    assert_valid(X, neg.indptr, neg.indices, w, ratio, neg.n_short)
    assert neg.requested == sum(r for r, _ in ref_counts(X, w, ratio))
    assert neg.indptr.dtype == np.int64 and neg.indices.dtype == np.int32
    assert neg.shape == X.shape


# ----------------------------------------------------------------------------- reproducibility
def power_law_matrix(n_users=600, n_items=300, seed=0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    rows, cols = [], []
    for u in range(n_users):
        k = int(min(n_items // 2, 5 + rng.pareto(1.2) * 10))
        rows.append(np.full(k, u))
        cols.append(rng.choice(n_items, k, replace=False, p=p))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_same_seed_same_negatives_on_1_and_2_threads(weighting):
    X = power_law_matrix()
    numba.set_num_threads(1)
    a = sample_negatives(X, 2.0, weighting, seed=3, threads=1, warn_short=False)
    assert numba.get_num_threads() == 1  # restored
    b = sample_negatives(X, 2.0, weighting, seed=3, threads=2, warn_short=False)
    assert numba.get_num_threads() == 1
    c = sample_negatives(X, 2.0, weighting, seed=3, threads=0, warn_short=False)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for other in (b, c):
        np.testing.assert_array_equal(a.indptr, other.indptr)
        np.testing.assert_array_equal(a.indices, other.indices)
    assert_valid(X, a.indptr, a.indices, ref_weights(X.getnnz(axis=0), weighting), 2.0, a.n_short)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_one_and_two_threads_agree_on_every_path(path):
    X = power_law_matrix(n_users=300, n_items=700, seed=1)
    w = np.log1p(X.getnnz(axis=0).astype(float))
    serial = run_kernel(X, w, 2.0, seed=8, switch=PATHS[path], threads=1)
    parallel = run_kernel(X, w, 2.0, seed=8, switch=PATHS[path], threads=2)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
    assert_valid(X, serial[0], serial[1], w, 2.0, serial[2])


def test_epochs_and_seeds_give_fresh_reproducible_draws():
    X = power_law_matrix()
    base = sample_negatives(X, seed=1, epoch=0, warn_short=False)
    again = sample_negatives(X, seed=1, epoch=0, warn_short=False)
    np.testing.assert_array_equal(base.indices, again.indices)
    for other in (
        sample_negatives(X, seed=1, epoch=1, warn_short=False),
        sample_negatives(X, seed=2, epoch=0, warn_short=False),
    ):
        np.testing.assert_array_equal(base.indptr, other.indptr)  # same counts
        differs = [
            not np.array_equal(base.indices[s:e], other.indices[s:e])
            for s, e in zip(base.indptr[:-1], base.indptr[1:], strict=True)
            if e - s >= 3
        ]
        assert np.mean(differs) > 0.9
    assert (base.seed, base.epoch) == (1, 0)


def test_default_popularity_is_column_counts_and_inputs_are_canonicalised():
    X = power_law_matrix()
    a = sample_negatives(X, seed=4, neg_weighting="popularity", warn_short=False)
    b = sample_negatives(
        X, seed=4, neg_weighting="popularity", popularity=X.getnnz(axis=0), warn_short=False
    )
    np.testing.assert_array_equal(a.indices, b.indices)
    # The same positives given as COO with duplicates and an explicit zero elsewhere.
    coo = X.tocoo()
    messy = sp.coo_matrix(
        (
            np.r_[coo.data, coo.data[:50], 0.0],
            (np.r_[coo.row, coo.row[:50], 0], np.r_[coo.col, coo.col[:50], X.shape[1] - 1]),
        ),
        shape=X.shape,
    )
    if X[0, X.shape[1] - 1] == 0:
        c = sample_negatives(messy, seed=4, neg_weighting="popularity", warn_short=False)
        np.testing.assert_array_equal(a.indices, c.indices)


def test_zero_weight_items_are_never_drawn_except_under_uniform():
    X = power_law_matrix(n_users=200, n_items=100)
    popularity = X.getnnz(axis=0).astype(float)
    popularity[:10] = 0.0
    for weighting in ("popularity", "log-popularity"):
        neg = sample_negatives(X, 2.0, weighting, popularity=popularity, warn_short=False)
        assert not np.isin(neg.indices, np.arange(10)).any()
    neg = sample_negatives(X, 2.0, "uniform", popularity=popularity, warn_short=False)
    assert np.isin(neg.indices, np.arange(10)).any()


def test_shortfall_is_reported_and_warned():
    # User 0 has 3 positives among 4 items: asks for 6 negatives, has 1 candidate.
    X = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=np.float32))
    with pytest.warns(NegativeShortfallWarning, match="1 of 2 users"):
        neg = sample_negatives(X, 2.0, "uniform")
    assert neg.n_short == 1 and neg.requested == 8 and neg.nnz == 3
    dense = neg.to_csr().toarray()
    np.testing.assert_array_equal(dense[0], [0, 0, 0, 1])  # all it has
    assert dense[1, 0] == 0 and dense[1].sum() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_negatives(X, 2.0, "uniform", warn_short=False)


# ----------------------------------------------------------------------------- containers, I/O
def test_to_csr_to_coo_and_save_load_round_trip(tmp_path):
    X = power_law_matrix(n_users=50, n_items=40)
    neg = sample_negatives(X, 1.5, "log-popularity", seed=9, epoch=2, warn_short=False)
    csr = neg.to_csr()
    assert csr.dtype == np.float32 and csr.shape == X.shape and csr.has_canonical_format
    assert csr.multiply(X).nnz == 0
    users, items = neg.to_coo()
    np.testing.assert_array_equal(csr.tocoo().row, users)
    np.testing.assert_array_equal(csr.tocoo().col, items)
    path = neg.save(tmp_path / "neg.npz")
    back = NegativeSample.load(path)
    np.testing.assert_array_equal(back.indptr, neg.indptr)
    np.testing.assert_array_equal(back.indices, neg.indices)
    assert (back.shape, back.n_short, back.requested) == (neg.shape, neg.n_short, neg.requested)
    assert (back.weighting, back.ratio, back.seed, back.epoch) == ("log-popularity", 1.5, 9, 2)


def test_load_rejects_other_artifacts_and_corrupt_files(tmp_path):
    from cfcore.interactions import Interactions
    from cfcore.io import save_artifact

    other = Interactions(power_law_matrix(n_users=5, n_items=5)).save(tmp_path / "i.npz")
    with pytest.raises(ModelFormatError, match="negatives"):
        NegativeSample.load(other)
    bad = save_artifact(
        tmp_path / "bad.npz",
        "negatives",
        {"indptr": np.array([0, 2, 1]), "indices": np.array([0, 1])},
        {"shape": [2, 3]},
    )
    with pytest.raises(ModelFormatError, match="CSR"):
        NegativeSample.load(bad)


def test_item_weights():
    p = np.array([0.0, 1.0, 9.0])
    np.testing.assert_allclose(item_weights(p, "popularity"), p)
    np.testing.assert_allclose(item_weights(p, "log-popularity"), np.log([1.0, 2.0, 10.0]))
    np.testing.assert_allclose(item_weights(p, "uniform"), 1.0)


# ----------------------------------------------------------------------------- bad input
X_SMALL = sp.csr_matrix(np.eye(3, dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"neg_ratio": 0.0}, "neg_ratio"),
        ({"neg_ratio": -1.0}, "neg_ratio"),
        ({"neg_ratio": float("nan")}, "neg_ratio"),
        ({"neg_ratio": float("inf")}, "neg_ratio"),
        ({"neg_ratio": "2"}, "neg_ratio"),
        ({"neg_weighting": "log"}, "neg_weighting"),
        ({"neg_weighting": None}, "neg_weighting"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"epoch": -2}, "epoch"),
        ({"threads": -1}, "threads"),
        ({"popularity": np.ones(4)}, "popularity"),
        ({"popularity": np.ones((3, 1))}, "popularity"),
        ({"popularity": np.array([1.0, -1.0, 0.0])}, "popularity"),
        ({"popularity": np.array([1.0, np.nan, 0.0])}, "popularity"),
        ({"popularity": ["a", "b", "c"]}, "popularity"),
        ({"popularity": np.full(3, 1e308), "neg_weighting": "popularity"}, "popularity"),
    ],
)
def test_bad_arguments_raise_input_error_naming_them(kwargs, name):
    with pytest.raises(InputError, match=f"^{name}"):
        sample_negatives(X_SMALL, **kwargs)


@pytest.mark.parametrize(
    "matrix",
    [np.eye(3), [[1, 0]], "file.csv", None, sp.csr_matrix(np.array([[1.0, np.nan]]))],
)
def test_bad_user_items_raise_input_error(matrix):
    with pytest.raises(InputError, match="^user_items"):
        sample_negatives(matrix)


def test_underscore_alias_and_edge_shapes():
    a = sample_negatives(X_SMALL, 1.0, "log_popularity", seed=0)
    b = sample_negatives(X_SMALL, 1.0, "log-popularity", seed=0)
    np.testing.assert_array_equal(a.indices, b.indices)
    empty = sample_negatives(sp.csr_matrix((4, 0), dtype=np.float32), warn_short=False)
    assert empty.nnz == 0 and empty.indptr.tolist() == [0, 0, 0, 0, 0]
    nobody = sample_negatives(sp.csr_matrix((0, 5), dtype=np.float32))
    assert nobody.nnz == 0 and nobody.shape == (0, 5)


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_ml100k_weightings_order_the_popularity_of_negatives(ml100k):
    X = ml100k.user_items
    pop = ml100k.item_popularity().astype(float)
    mean_pop = {}
    for weighting in WEIGHTINGS:
        neg = sample_negatives(ml100k, 2.0, weighting, seed=0, warn_short=False)
        assert neg.to_csr().multiply(X).nnz == 0
        counts = np.diff(neg.indptr)
        requested = np.floor(2.0 * np.diff(X.indptr) + 0.5)
        assert np.all(counts <= requested) and neg.nnz > 0.99 * neg.requested
        assert neg.n_short == int(np.sum(counts < requested))
        mean_pop[weighting] = pop[neg.indices].mean()
    # popularity ∝ p favours popular items most, log(1+p) less, uniform least.
    assert mean_pop["popularity"] > mean_pop["log-popularity"] > mean_pop["uniform"]
