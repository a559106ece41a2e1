"""Pseudo-classes (cfcore.cluster): faiss k-means of item factors, its traps, its file format."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from cfcore.cluster import (
    ClusterWarning,
    PseudoLabels,
    cluster_items,
    gini,
    imbalance_stats,
    normalized_mutual_info,
    stability,
    suggest_k,
)
from cfcore.errors import InputError, ModelFormatError
from cfcore.io import save_artifact


def planted(n_groups=8, items_per_group=40, n_users=600, per_user=25, purity=0.9, seed=0):
    """Items in known groups; each user views mostly (``purity``) items of one group.

    Returns the users × items CSR, the group of each item, and SVD item factors.
    """
    rng = np.random.default_rng(seed)
    n_items = n_groups * items_per_group
    group = np.repeat(np.arange(n_groups), items_per_group)
    rows, cols = [], []
    for u in range(n_users):
        g = u % n_groups
        own = rng.choice(np.flatnonzero(group == g), int(per_user * purity), replace=False)
        other = rng.choice(n_items, per_user - len(own), replace=False)
        items = np.unique(np.concatenate([own, other]))
        rows += [u] * len(items)
        cols += items.tolist()
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    _, s, vt = svds(m.astype(np.float64), k=n_groups, random_state=seed)
    factors = (vt.T * np.sqrt(s)).astype(np.float32)
    return m, group, factors


@pytest.fixture(scope="module")
def planted_data():
    return planted()


# --------------------------------------------------------------------------- NMI, Gini
def test_nmi_matches_sklearn_on_random_labelings():
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(1)
    for n, ka, kb in [(50, 3, 4), (500, 20, 7), (1000, 2, 2), (30, 30, 5)]:
        a, b = rng.integers(0, ka, n), rng.integers(0, kb, n)
        assert normalized_mutual_info(a, b) == pytest.approx(
            normalized_mutual_info_score(a, b), abs=1e-10
        )


def test_nmi_is_one_for_the_same_partition_under_renumbering_and_handles_trivial_cases():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 10, 300)
    perm = rng.permutation(10)
    assert normalized_mutual_info(a, perm[a]) == pytest.approx(1.0)
    assert normalized_mutual_info(np.zeros(5), np.zeros(5)) == 1.0
    assert normalized_mutual_info(np.zeros(6), np.arange(6)) == 0.0
    assert normalized_mutual_info(["x", "y", "x"], [1, 2, 1]) == pytest.approx(1.0)
    with pytest.raises(InputError):
        normalized_mutual_info([1, 2], [1, 2, 3])


def test_gini_matches_the_double_sum_definition():
    rng = np.random.default_rng(3)
    for sizes in [
        rng.integers(0, 50, 17),
        np.array([5, 5, 5, 5]),
        np.array([0, 0, 10]),
        rng.integers(1, 3, 100),
    ]:
        s = sizes.astype(float)
        ref = np.abs(s[:, None] - s[None, :]).sum() / (2 * len(s) ** 2 * s.mean())
        assert gini(sizes) == pytest.approx(ref, abs=1e-12)
    st = imbalance_stats(np.array([10, 0, 3, 7]))
    assert (st["largest"], st["smallest"], st["smallest_nonempty"], st["empty"], st["items"]) == (
        10,
        0,
        3,
        1,
        20,
    )
    assert st["imbalance_factor"] == pytest.approx(4 * (100 + 9 + 49) / 400)


# --------------------------------------------------------------------------- planted structure
def test_spherical_kmeans_recovers_planted_groups(planted_data):
    _, group, factors = planted_data
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClusterWarning)  # 320 items, k=8: no warning expected
        result = cluster_items(factors, 8, seed=0, threads=1)
    assert normalized_mutual_info(result.labels, group) >= 0.9
    assert result.sizes.sum() == len(group) and result.k == 8
    assert result.labels.dtype == np.int64 and result.centroids.shape == (8, factors.shape[1])
    # spherical: centroids have unit norm
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, atol=1e-4)


def test_pca_whitening_still_recovers_groups_and_assign_reproduces_labels(planted_data):
    _, group, factors = planted_data
    result = cluster_items(factors, 8, pca=True, seed=0, nredo=2)
    assert result.transform is not None
    assert normalized_mutual_info(result.labels, group) >= 0.9
    assert (result.assign(factors) == result.labels).mean() >= 0.99


def test_stability_is_high_on_planted_groups_and_needs_two_seeds(planted_data):
    _, _, factors = planted_data
    assert stability(factors, 8, seeds=(0, 1)) >= 0.9
    with pytest.raises(InputError, match="seeds"):
        stability(factors, 8, seeds=(3, 3))


def test_labels_are_numbered_by_first_occurrence_so_runs_compare_directly(planted_data):
    _, _, factors = planted_data
    labels = cluster_items(factors, 8, seed=5).labels
    _, first = np.unique(labels, return_index=True)
    assert list(labels[np.sort(first)]) == list(range(8))
    assert labels[0] == 0


def test_every_item_is_used_for_training_unless_subsampling_is_asked(monkeypatch):
    import faiss

    seen = {}
    real = faiss.Kmeans

    class Spy(real):
        def __init__(self, d, k, **kw):
            seen.update(kw)
            super().__init__(d, k, **kw)

    monkeypatch.setattr(faiss, "Kmeans", Spy)
    x = np.random.default_rng(0).standard_normal((3000, 4)).astype(np.float32)
    cluster_items(x, 2, niter=2)
    # faiss subsamples to k × max_points_per_centroid points: must cover all 3000
    assert 2 * seen["max_points_per_centroid"] >= 3000
    cluster_items(x, 2, niter=2, max_points_per_centroid=100)
    assert seen["max_points_per_centroid"] == 100


# --------------------------------------------------------------------------- traps and bad input
def test_too_few_points_per_centroid_warns_with_a_suggested_k():
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    with pytest.warns(ClusterWarning, match=r"suggested k <= 5"):
        cluster_items(x, 20)
    assert suggest_k(200) == 5 and suggest_k(10) == 1


@pytest.mark.filterwarnings("ignore:k=4 leaves")
def test_empty_clusters_are_reported():
    # 60 copies of one point and 3 of another: at most 2 distinct assignments for k=4
    x = np.vstack([np.tile([[1.0, 0.0]], (60, 1)), np.tile([[0.0, 1.0]], (3, 1))]).astype(
        np.float32
    )
    with pytest.warns(ClusterWarning, match="empty"):
        result = cluster_items(x, 4, niter=5)
    st = result.imbalance()
    assert st["empty"] >= 2 and st["largest"] >= 30
    assert (result.sizes[result.k - st["empty"] :] == 0).all()  # empties get the last labels


@pytest.mark.parametrize(
    ("vectors", "k", "match"),
    [
        (np.ones((10, 3)), 11, "must not exceed the number of items"),
        (np.ones((10, 3)), 0, "k: must be >= 1"),
        (np.ones((10, 3)), 2.5, "k: expected an integer"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), 1, "NaN or inf"),
        (np.array([[0.0, 0.0], [1.0, 2.0]]), 1, "all-zero"),
        (np.ones(5), 1, "2-D"),
    ],
)
def test_bad_input_gets_a_clear_error(vectors, k, match):
    with pytest.raises(InputError, match=match):
        cluster_items(vectors, k)


@pytest.mark.filterwarnings("ignore::cfcore.cluster.ClusterWarning")
def test_bad_parameters_and_mismatched_ids():
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    with pytest.raises(InputError, match="niter"):
        cluster_items(x, 2, niter=0)
    with pytest.raises(InputError, match="ids"):
        cluster_items(x, 2, ids=np.arange(49))
    with pytest.raises(InputError, match="unique"):
        cluster_items(x, 2, ids=np.zeros(50, dtype=int))
    with pytest.raises(InputError, match="pca_dim"):
        cluster_items(x, 2, pca=True, pca_dim=9)


# --------------------------------------------------------------------------- files
def test_save_writes_npz_and_csv_that_load_back(tmp_path, planted_data):
    _, _, factors = planted_data
    ids = np.array([f"item{i}" for i in range(len(factors))])
    result = cluster_items(factors, 8, ids=ids, seed=3)
    path = result.save(tmp_path / "labels.npz")
    back = PseudoLabels.load(path)
    np.testing.assert_array_equal(back.item_ids, ids)
    np.testing.assert_array_equal(back.labels, result.labels)
    np.testing.assert_array_equal(back.sizes, result.sizes)
    np.testing.assert_allclose(back.centroids, result.centroids)
    assert back.params["k"] == 8 and back.params["seed"] == 3 and back.params["spherical"] is True
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines[0] == "item_id,label" and len(lines) == len(ids) + 1
    assert lines[1] == f"item0,{result.labels[0]}"
    # the header carries the imbalance stats for readers that only look at metadata
    from cfcore.io import load_artifact

    arrays, header = load_artifact(path, "pseudo-labels")
    assert header["imbalance"]["items"] == len(ids) and arrays["labels"].dtype == np.int64


def test_load_refuses_other_files(tmp_path):
    p = tmp_path / "m.npz"
    save_artifact(p, "factor-model", {"item_factors": np.ones((2, 2), np.float32)})
    with pytest.raises(ModelFormatError, match="pseudo-labels"):
        PseudoLabels.load(p)


def test_cluster_accepts_a_factor_model_file_and_keeps_its_ids(tmp_path, planted_data):
    _, group, factors = planted_data
    p = tmp_path / "model.npz"
    ids = np.arange(100, 100 + len(factors))
    save_artifact(
        p,
        "factor-model",
        {
            "item_factors": factors,
            "item_ids": ids,
            "user_factors": np.ones((3, factors.shape[1]), np.float32),
            "user_ids": np.arange(3),
        },
    )
    result = cluster_items(p, 8)
    np.testing.assert_array_equal(result.item_ids, ids)
    assert result.params["source"] == str(p)
    assert normalized_mutual_info(result.labels, group) >= 0.9


def test_same_seed_gives_the_same_labels_with_one_or_two_threads():
    x = np.random.default_rng(0).standard_normal((8000, 8)).astype(np.float32)
    one = cluster_items(x, 40, seed=4, threads=1, niter=5)
    two = cluster_items(x, 40, seed=4, threads=2, niter=5)
    np.testing.assert_array_equal(one.labels, two.labels)
    np.testing.assert_array_equal(one.centroids, two.centroids)
    assert (cluster_items(x, 40, seed=5, threads=1, niter=5).labels != one.labels).any()
