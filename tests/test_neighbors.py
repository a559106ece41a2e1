"""Cosine k-NN (cfcore.neighbors) and (ids, vectors) files (cfcore.vectors)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from cfcore.errors import InputError, ModelFormatError
from cfcore.io import save_artifact
from cfcore.neighbors import NeighborIndex, Neighbors
from cfcore.vectors import ItemVectors, load_vectors, save_vectors


def planted_factors(n_groups=10, items_per_group=60, n_users=800, per_user=30, purity=0.9, seed=0):
    """SVD item factors of views where each user views mostly one group of items."""
    rng = np.random.default_rng(seed)
    n_items = n_groups * items_per_group
    group = np.repeat(np.arange(n_groups), items_per_group)
    rows, cols = [], []
    for u in range(n_users):
        own = rng.choice(
            np.flatnonzero(group == u % n_groups), int(per_user * purity), replace=False
        )
        items = np.unique(
            np.concatenate([own, rng.choice(n_items, per_user - len(own), replace=False)])
        )
        rows += [u] * len(items)
        cols += items.tolist()
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    _, s, vt = svds(m.astype(np.float64), k=n_groups, random_state=seed)
    return (vt.T * np.sqrt(s)).astype(np.float32), group


def brute_force(base, queries, k):
    """Obviously-correct cosine top-k: full similarity matrix, stable argsort."""
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ b.T.astype(np.float64)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


@pytest.fixture(scope="module")
def random_vectors():
    rng = np.random.default_rng(0)
    return rng.standard_normal((300, 16)).astype(np.float32)


def test_exact_search_matches_brute_force_cosine(random_vectors):
    x = random_vectors
    ids = np.array([f"i{j}" for j in range(len(x))])
    index = NeighborIndex(x, ids)
    queries = np.random.default_rng(1).standard_normal((20, 16)).astype(np.float32)
    nn = index.search(queries, k=7)
    ref_pos, ref_sim = brute_force(x, queries, 7)
    np.testing.assert_array_equal(nn.neighbor_ids, ids[ref_pos])
    np.testing.assert_allclose(nn.scores, ref_sim, atol=1e-5)
    assert (np.diff(nn.scores, axis=1) <= 1e-6).all()  # best first
    np.testing.assert_array_equal(nn.query_ids, np.arange(20))  # vector queries default to 0..Q-1


def test_id_queries_exclude_the_item_itself(random_vectors):
    x = random_vectors
    index = NeighborIndex(x)  # ids default to 0..n-1
    nn = index.search([5, 17, 42], k=10)
    ref_pos, ref_sim = brute_force(x, x[[5, 17, 42]], 11)
    np.testing.assert_array_equal(nn.neighbor_ids, ref_pos[:, 1:])  # the first hit is the query
    np.testing.assert_allclose(nn.scores, ref_sim[:, 1:], atol=1e-5)
    assert not (nn.neighbor_ids == np.array([[5], [17], [42]])).any()
    kept = index.search([5], k=3, exclude_self=False)
    assert kept.neighbor_ids[0, 0] == 5 and kept.scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_all_items_query_each_other_and_ids_may_be_strings_given_as_ints():
    x = np.random.default_rng(2).standard_normal((40, 5)).astype(np.float32)
    ids = np.array([str(i * 3) for i in range(40)])
    index = NeighborIndex(x, ids)
    nn = index.search(None, k=39)
    assert nn.neighbor_ids.shape == (40, 39)
    for row, q in zip(nn.neighbor_ids, nn.query_ids, strict=True):
        assert q not in row and len(set(row)) == 39  # every other item exactly once
    assert index.search([3], k=1).query_ids[0] == "3"  # int given, string id found


def test_duplicate_vectors_still_exclude_self_even_when_not_ranked_first():
    x = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    nn = NeighborIndex(x).search([0, 1, 2], k=2)
    for q, row in zip([0, 1, 2], nn.neighbor_ids, strict=True):
        assert q not in row and set(row) <= {0, 1, 2}


def test_vector_queries_with_ids_exclude_matching_items_only():
    x = np.random.default_rng(3).standard_normal((30, 4)).astype(np.float32)
    index = NeighborIndex(x, np.arange(100, 130))
    nn = index.search(x[:3], k=29, query_ids=np.array([100, 101, 999]))
    assert 100 not in nn.neighbor_ids[0] and 101 not in nn.neighbor_ids[1]
    assert nn.neighbor_ids[2, 0] == 102  # 999 is not indexed: nothing excluded
    # test items querying train items (no overlap): every indexed item may be returned
    other = NeighborIndex(x[3:], np.arange(103, 130))
    assert other.search(x[:3], k=27, query_ids=np.array([100, 101, 102])).k == 27


def test_planted_neighbours_share_a_group_far_above_chance():
    factors, group = planted_factors()
    nn = NeighborIndex(factors).search(None, k=20)
    same = (group[nn.neighbor_ids] == group[:, None]).mean()
    assert same >= 0.8  # chance is 1/10


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_indexes_find_most_exact_neighbours(method):
    factors, group = planted_factors()
    exact = NeighborIndex(factors).search(None, k=10)
    approx = NeighborIndex(factors, method=method, seed=0).search(None, k=10)
    recall = np.mean(
        [
            len(set(a) & set(b)) / 10
            for a, b in zip(exact.neighbor_ids, approx.neighbor_ids, strict=True)
        ]
    )
    assert recall >= 0.8
    assert (approx.neighbor_ids >= 0).all()  # short IVF lists are completed exactly
    assert (group[approx.neighbor_ids] == group[:, None]).mean() >= 0.75


def test_ivf_with_one_probe_still_returns_k_neighbours():
    x = np.random.default_rng(4).standard_normal((400, 8)).astype(np.float32)
    nn = NeighborIndex(x, method="ivf", nlist=10, nprobe=1).search(None, k=100)
    assert nn.neighbor_ids.shape == (400, 100)
    for q, row in zip(nn.query_ids, nn.neighbor_ids, strict=True):
        assert q not in row and len(set(row)) == 100


def test_bad_input_gets_clear_errors(random_vectors):
    x = random_vectors
    index = NeighborIndex(x)
    with pytest.raises(InputError, match="unknown item id 'nope'"):
        index.search(["nope"], k=3)
    with pytest.raises(InputError, match="only 299 items"):
        index.search([0], k=300)
    with pytest.raises(InputError, match="k: expected a positive integer"):
        index.search([0], k=0)
    with pytest.raises(InputError, match="dimension 3 does not match"):
        index.search(np.ones((2, 3), np.float32), k=1)
    with pytest.raises(InputError, match="NaN"):
        index.search(np.full((1, 16), np.nan, np.float32), k=1)
    bad = x.copy()
    bad[7] = np.nan
    with pytest.raises(InputError, match="row 7"):
        NeighborIndex(bad)
    zero = x.copy()
    zero[3] = 0
    with pytest.raises(InputError, match="all-zero.*item 3"):
        NeighborIndex(zero)
    with pytest.raises(InputError, match="method"):
        NeighborIndex(x, method="lsh")
    with pytest.raises(InputError, match="expected 300 ids"):
        NeighborIndex(x, np.arange(10))


# --------------------------------------------------------------------------- files
def test_neighbors_file_round_trip(tmp_path, random_vectors):
    nn = NeighborIndex(random_vectors, np.arange(300) + 1).search([1, 2], k=5)
    path = nn.save(tmp_path / "nn.npz")
    back = Neighbors.load(path)
    np.testing.assert_array_equal(back.query_ids, [1, 2])
    np.testing.assert_array_equal(back.neighbor_ids, nn.neighbor_ids)
    np.testing.assert_allclose(back.scores, nn.scores)
    assert back.meta["method"] == "exact" and back.k == 5


def test_vectors_files_item_vectors_and_factor_models(tmp_path):
    rng = np.random.default_rng(5)
    v = rng.standard_normal((6, 3)).astype(np.float32)
    save_vectors(tmp_path / "v.npz", ["a", "b", "c", "d", "e", "f"], v, {"source": "test"})
    iv = load_vectors(tmp_path / "v.npz")
    assert iv.ids.tolist() == list("abcdef") and iv.meta["kind"] == "item-vectors"
    np.testing.assert_array_equal(iv.vectors, v)
    save_artifact(
        tmp_path / "m.npz",
        "factor-model",
        {
            "user_factors": v[:2],
            "item_factors": v,
            "user_ids": np.arange(2),
            "item_ids": np.arange(10, 16),
        },
        {"params": {"factors": 3}, "history": []},
    )
    mv = load_vectors(tmp_path / "m.npz")
    assert mv.ids.tolist() == list(range(10, 16)) and mv.meta["kind"] == "factor-model"
    index = NeighborIndex(tmp_path / "m.npz")
    assert index.search([10], k=1).query_ids[0] == 10
    # a fitted-model-like object with item_factors_/item_ids_
    model = type("M", (), {"item_factors_": v, "item_ids_": np.arange(6) * 2})()
    assert NeighborIndex(model).ids.tolist() == [0, 2, 4, 6, 8, 10]


def test_vectors_files_bad_content(tmp_path):
    save_artifact(tmp_path / "i.npz", "interactions", {"indptr": np.zeros(1)})
    with pytest.raises(ModelFormatError, match="item-vectors or factor-model"):
        load_vectors(tmp_path / "i.npz")
    save_artifact(
        tmp_path / "m.npz",
        "item-vectors",
        {"item_ids": np.arange(3), "vectors": np.ones((4, 2), np.float32)},
    )
    with pytest.raises(InputError, match="expected 4 ids"):
        load_vectors(tmp_path / "m.npz")
    save_artifact(
        tmp_path / "n.npz",
        "item-vectors",
        {"item_ids": np.arange(2), "vectors": np.array([[1, np.inf], [1, 1]], np.float32)},
    )
    with pytest.raises(InputError, match="NaN or inf"):
        load_vectors(tmp_path / "n.npz")
    save_artifact(tmp_path / "x.npz", "item-vectors", {"item_ids": np.arange(2)})
    with pytest.raises(ModelFormatError, match="missing array"):
        load_vectors(tmp_path / "x.npz")
    with pytest.raises(InputError, match="unique"):
        ItemVectors(np.array([1, 1]), np.ones((2, 2)))


def test_batched_search_equals_one_batch(monkeypatch, random_vectors):
    import cfcore.neighbors as nb

    whole = NeighborIndex(random_vectors).search(None, k=8)
    monkeypatch.setattr(nb, "_QUERY_BATCH", 7)
    batched = NeighborIndex(random_vectors).search(None, k=8, progress=False)
    np.testing.assert_array_equal(batched.neighbor_ids, whole.neighbor_ids)
    np.testing.assert_allclose(batched.scores, whole.scores)
