"""Fang et al. §4.3 retrieval measures (cfcore.retrieval) against plain-Python references."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from cfcore.errors import InputError
from cfcore.interactions import Interactions
from cfcore.neighbors import NeighborIndex, Neighbors
from cfcore.retrieval import (
    RetrievalReport,
    pair_intersections,
    pair_jaccard,
    pair_member,
    plot_reports,
    retrieval_report,
    shared_viewer_curve,
)


def random_binary(n_rows, n_cols, density, seed):
    m = sp.random(
        n_rows, n_cols, density=density, format="csr", random_state=seed, dtype=np.float32
    )
    m.data[:] = 1
    m.sort_indices()
    return m


def sets_of(m):
    return [set(m.indices[m.indptr[i] : m.indptr[i + 1]].tolist()) for i in range(m.shape[0])]


# --------------------------------------------------------------------------- kernels vs sets
def test_pair_intersections_and_jaccard_match_python_sets():
    m = random_binary(60, 200, 0.05, seed=0)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 60, 500), rng.integers(0, 60, 500)
    s = sets_of(m)
    ref_inter = [len(s[i] & s[j]) for i, j in zip(a, b, strict=True)]
    ref_jac = [
        len(s[i] & s[j]) / len(s[i] | s[j]) if s[i] | s[j] else np.nan
        for i, j in zip(a, b, strict=True)
    ]
    np.testing.assert_array_equal(pair_intersections(m, a, b), ref_inter)
    np.testing.assert_allclose(pair_jaccard(m, a, b), ref_jac, equal_nan=True)


def test_pair_intersections_in_chunks(monkeypatch):
    import cfcore.retrieval as r

    monkeypatch.setattr(r, "_CHUNK_PAIRS", 7)
    m = random_binary(30, 50, 0.2, seed=1)
    a, b = np.arange(30), np.arange(30)[::-1]
    s = sets_of(m)
    np.testing.assert_array_equal(
        r.pair_intersections(m, a, b), [len(s[i] & s[j]) for i, j in zip(a, b, strict=True)]
    )


def test_pair_member_matches_dense_lookup():
    m = random_binary(40, 70, 0.1, seed=2)
    dense = m.toarray() > 0
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 40, 1000), rng.integers(0, 70, 1000)
    np.testing.assert_array_equal(pair_member(m, rows, cols), dense[rows, cols])
    empty = sp.csr_matrix((3, 4), dtype=np.float32)
    assert not pair_member(empty, [0, 2], [1, 3]).any()


def test_shared_viewer_curve_on_a_hand_example():
    # items × users: item0 {0,1,2}, item1 {1,2}, item2 {3}, item3 {0,1,2,3}
    iu = sp.csr_matrix(
        np.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=np.float32)
    )
    curve = shared_viewer_curve(iu, np.array([0, 2]), np.array([[1, 2], [3, 0]]))
    # q0: J(0,1)=2/3, J(0,2)=0; q2: J(2,3)=1/4, J(2,0)=0
    np.testing.assert_allclose(curve, [(2 / 3 + 1 / 4) / 2, 0.0])


# --------------------------------------------------------------------------- the report
@pytest.fixture
def tiny():
    # 5 users × 6 items; item ids are strings, user ids ints
    m = np.array(
        [
            [1, 1, 0, 0, 0, 1],
            [1, 1, 1, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 1, 1, 1],
        ],
        dtype=np.float32,
    )
    return Interactions(m, user_ids=[10, 11, 12, 13, 14], item_ids=list("abcdef"))


def test_report_values_match_a_hand_computation(tiny):
    nn = Neighbors(
        np.array(["a", "d"]), np.array([["b", "c"], ["e", "a"]]), np.ones((2, 2), np.float32)
    )
    owners = {"a": 12, "d": 14}  # user 12 viewed b, c; user 14 viewed d, e, f
    genres = (np.array(list("abcdef")), np.array([[1, 0], [1, 1], [0, 1], [0, 1], [0, 1], [1, 0]]))
    rep = retrieval_report(nn, tiny, R=2, owners=owners, genres=genres, seed=0)
    # viewers: a {10,11}, b {10,11,12}, c {11,12}, d {13,14}, e {13,14}
    np.testing.assert_allclose(rep.shared_viewers, [(2 / 3 + 1) / 2, (1 / 3 + 0) / 2])
    # owner 12 viewed b (rank 1) and c (rank 2); owner 14 viewed e (rank 1), not a
    np.testing.assert_allclose(rep.owner_viewed, [1.0, 1.5])
    # genres: a{0} b{0,1} c{1} d{1} e{1}: a-b share, a-c no, d-e share, d-a no
    np.testing.assert_allclose(rep.genre_agreement, [1.0, 0.0])
    np.testing.assert_allclose(rep.genre_jaccard, [(1 / 2 + 1) / 2, 0.0])
    assert rep.n_queries == 2 and rep.R == 2 and rep.meta["owner_queries"] == 2
    s = rep.summary()
    assert s["shared_viewers@1"] == pytest.approx(5 / 6) and s["owner_viewed@2"] == pytest.approx(
        1.5
    )


def test_random_baseline_is_seeded_and_never_pairs_an_item_with_itself(tiny):
    from cfcore.retrieval import _random_pairs

    q = np.arange(6)
    a = _random_pairs(q, np.arange(6), 50, seed=3)
    assert not (a == q[:, None]).any()
    np.testing.assert_array_equal(a, _random_pairs(q, np.arange(6), 50, seed=3))
    assert set(np.unique(_random_pairs(q, np.array([1, 2]), 20, seed=0))) <= {1, 2}
    nn = Neighbors(np.array(["a"]), np.array([["b"]]), np.ones((1, 1), np.float32))
    r1 = retrieval_report(nn, tiny, R=1, seed=7)
    r2 = retrieval_report(nn, tiny, R=1, seed=7)
    np.testing.assert_array_equal(r1.shared_viewers_random, r2.shared_viewers_random)


def test_bad_input_gets_clear_errors(tiny):
    ok = Neighbors(np.array(["a"]), np.array([["b", "c"]]), np.ones((1, 2), np.float32))
    with pytest.raises(InputError, match="R: must be between 1 and the 2"):
        retrieval_report(ok, tiny, R=3)
    unknown = Neighbors(np.array(["a"]), np.array([["b", "zz"]]), np.ones((1, 2), np.float32))
    with pytest.raises(
        InputError, match=r"1 id\(s\) not among the interactions' items \(first: 'zz'\)"
    ):
        retrieval_report(unknown, tiny, R=2)
    with pytest.raises(InputError, match="owners: no query item has an owner"):
        retrieval_report(ok, tiny, R=2, owners={"a": 999})
    with pytest.raises(InputError, match="on_empty"):
        retrieval_report(ok, tiny, R=2, on_empty="ignore")
    with pytest.raises(InputError, match="genres: none of"):
        retrieval_report(ok, tiny, R=2, genres=(np.array(["x"]), np.array([[1]])))
    with pytest.raises(InputError, match="interactions: expected"):
        retrieval_report(ok, "not interactions", R=2)


def test_query_items_without_viewers_fail_or_are_skipped():
    m = np.array([[1, 1, 0], [1, 1, 0]], dtype=np.float32)  # item 2 has no viewers
    inter = Interactions(sp.csr_matrix(m))
    nn = Neighbors(np.array([2, 0]), np.array([[0], [1]]), np.ones((2, 1), np.float32))
    with pytest.raises(InputError, match=r"1 query item\(s\) have no viewers.*first: 2"):
        retrieval_report(nn, inter, R=1)
    rep = retrieval_report(nn, inter, R=1, on_empty="skip")
    assert rep.n_queries == 1 and rep.meta["skipped_empty_queries"] == 1
    assert rep.shared_viewers[0] == pytest.approx(1.0)
    only_empty = Neighbors(np.array([2]), np.array([[0]]), np.ones((1, 1), np.float32))
    with pytest.raises(InputError, match="no query item has any viewer"):
        retrieval_report(only_empty, inter, R=1, on_empty="skip")


def test_planted_neighbours_beat_random_pairs_on_every_measure():
    from scipy.sparse.linalg import svds

    # 10 groups of 60 items; each of 800 users views 27 items of one group and 3 at random
    rng = np.random.default_rng(1)
    group = np.repeat(np.arange(10), 60)
    n_items, rows, cols = len(group), [], []
    for u in range(800):
        own = rng.choice(np.flatnonzero(group == u % 10), 27, replace=False)
        items = np.unique(np.concatenate([own, rng.choice(n_items, 3, replace=False)]))
        rows += [u] * len(items)
        cols += items.tolist()
    inter = Interactions(sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(800, n_items)))
    _, sv, vt = svds(inter.user_items.astype(np.float64), k=10, random_state=0)
    nn = NeighborIndex((vt.T * np.sqrt(sv)).astype(np.float32)).search(None, k=50)
    # each item's owner is a user of its group
    owners = {
        i: int(rng.choice(np.flatnonzero(np.arange(800) % 10 == group[i]))) for i in range(n_items)
    }
    rep = retrieval_report(
        nn, inter, 50, owners=owners, genres=(np.arange(n_items), np.eye(10)[group])
    )
    assert (rep.shared_viewers > 2 * rep.shared_viewers_random.mean()).all()
    assert rep.owner_viewed[-1] > 3 * rep.owner_viewed_random[-1]
    assert rep.genre_agreement.mean() >= 0.8 and rep.genre_agreement_random.mean() < 0.2


@pytest.mark.realdata
@pytest.mark.slow
def test_ml100k_latent_neighbours_beat_random_pairs_at_every_rank(ml100k, ml100k_path, tmp_path):
    """Fang §4.2–4.3 on MovieLens-100k: cosine neighbours of squared-loss factors (eq. 3)."""
    from cfcore import Factorizer
    from cfcore.labels import read_labels

    model = Factorizer(factors=32, loss="squared", epochs=20, seed=0, threads=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few heavy users get fewer negatives than asked
        model.fit(ml100k)
    nn = NeighborIndex(model).search(None, k=100)
    genres = read_labels("ml-100k", data_dir=ml100k_path.parent)
    rep = retrieval_report(nn, ml100k, 100, genres=genres, seed=0)
    assert rep.n_queries == ml100k.n_items
    # every rank beats random pairs, both the per-rank draw and its mean level
    assert (rep.shared_viewers > rep.shared_viewers_random).all()
    assert rep.shared_viewers.min() > 1.5 * rep.shared_viewers_random.mean()
    s = rep.summary()
    assert s["shared_viewers_lift"] > 2.5
    # genre agreement is reported and latent neighbours agree on genre more than random pairs
    assert s["genre_agreement_mean"] > s["genre_agreement_random_mean"] + 0.05
    path = rep.plot(tmp_path / "fig5.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()})


# --------------------------------------------------------------------------- outputs
def test_json_and_plot_outputs(tiny, tmp_path):
    nn = Neighbors(
        np.array(["a", "d"]), np.array([["b", "c"], ["e", "a"]]), np.ones((2, 2), np.float32)
    )
    rep = retrieval_report(
        nn, tiny, R=2, owners={"a": 12}, genres=(np.array(list("abcdef")), np.eye(6))
    )
    data = json.loads(rep.save_json(tmp_path / "r.json").read_text())
    assert data["summary"]["R"] == 2 and len(data["curves"]["shared_viewers"]) == 2
    assert "owner_viewed" in data["curves"] and "genre_agreement_random" in data["curves"]
    png = plot_reports(tmp_path / "cmp.png", {"learned": rep, "random init": rep})
    assert png.read_bytes()[:4] == b"\x89PNG"
    plain = RetrievalReport(np.arange(1, 3), np.array([0.2, 0.1]), np.array([0.05, 0.05]), 1)
    assert plain.plot(tmp_path / "p.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    with pytest.raises(InputError):
        plot_reports(tmp_path / "none.png", {})


def test_read_owners_csv_and_tsv_with_errors_naming_the_line(tmp_path):
    from cfcore.retrieval import read_owners

    f = tmp_path / "owners.csv"
    f.write_text("item_id,owner\n1,u7\n2, u8\n\n")
    assert read_owners(f) == {"1": "u7", "2": "u8"}
    tsv = tmp_path / "owners.tsv"
    tsv.write_text("a\t3\nb\t4\n")  # no header
    assert read_owners(tsv) == {"a": "3", "b": "4"}
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,owner\n1,u7\n2\n")
    with pytest.raises(InputError, match=r"bad\.csv:3: expected item_id,owner"):
        read_owners(bad)
    two = tmp_path / "two.csv"
    two.write_text("1,u7\n1,u8\n")
    with pytest.raises(InputError, match="two owners"):
        read_owners(two)
    with pytest.raises(InputError, match="no such file"):
        read_owners(tmp_path / "nope.csv")
