"""The Interactions container: binary CSR, raw ids, lookup, Fang's count filter, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cfcore.errors import InputError, ModelFormatError
from cfcore.interactions import Interactions, binarize


def _dense(inter: Interactions) -> np.ndarray:
    return inter.user_items.toarray()


def test_from_pairs_maps_ids_to_sorted_rows_and_keeps_raw_ids():
    inter = Interactions.from_pairs([30, 10, 10, 20], [7, 5, 7, 5])
    assert inter.user_ids.tolist() == [10, 20, 30]
    assert inter.item_ids.tolist() == [5, 7]
    assert inter.user_ids.dtype == np.int64
    np.testing.assert_array_equal(_dense(inter), [[1, 1], [1, 0], [0, 1]])


def test_csr_is_canonical_float32_ones():
    inter = Interactions(np.array([[0, 3.5, 0], [2, 0, -1]]))
    m = inter.user_items
    assert m.dtype == np.float32 and m.indptr.dtype == m.indices.dtype == np.int32
    assert m.has_sorted_indices
    np.testing.assert_array_equal(m.data, 1.0)
    np.testing.assert_array_equal(m.toarray(), [[0, 1, 0], [1, 0, 1]])


def test_duplicates_collapse_to_one_and_are_counted():
    inter = Interactions.from_pairs(["a", "a", "a", "b"], ["x", "x", "y", "x"], [5, 3, 4, 1])
    assert inter.nnz == 3 and inter.n_duplicates == 1
    assert "1 duplicate row counted once" in repr(inter)
    assert Interactions.from_pairs([1, 2], [3, 3]).n_duplicates == 0
    assert "duplicate" not in repr(Interactions.from_pairs([1, 2], [3, 3]))
    np.testing.assert_array_equal(inter.user_items.data, 1.0)
    # binarize also collapses duplicates stored in a COO/CSR built by hand
    coo = sp.coo_matrix(([1.0, 1.0, 1.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    assert binarize(coo).nnz == 2 and binarize(coo).max() == 1


def test_min_rating_threshold_binarises_likes_and_drops_empty_users():
    users = [1, 1, 2, 2, 3]
    items = [10, 11, 10, 12, 11]
    ratings = [5, 2, 4, 3.5, 1]
    likes = Interactions.from_pairs(users, items, ratings, min_rating=4)
    # only (1,10) and (2,10) are >= 4; user 3 and items 11, 12 keep no interaction
    assert likes.user_ids.tolist() == [1, 2]
    assert likes.item_ids.tolist() == [10]
    assert likes.nnz == 2
    views = Interactions.from_pairs(users, items, ratings)
    assert views.nnz == 5  # without a threshold every rating is a view
    with pytest.raises(InputError, match=">= 6"):
        Interactions.from_pairs(users, items, ratings, min_rating=6)


def test_string_ids_and_lookup():
    inter = Interactions.from_pairs(["bob", "alice", "bob"], ["m2", "m1", "m1"])
    assert inter.user_ids.tolist() == ["alice", "bob"]
    assert inter.user_index(["bob", "alice"]).tolist() == [1, 0]
    assert inter.item_index("m2").tolist() == [1]
    with pytest.raises(InputError, match="unknown user id 'carol'"):
        inter.user_index(["carol"])


def test_integer_id_lookup_accepts_strings_from_the_command_line():
    inter = Interactions.from_pairs([5, 9], [100, 200])
    assert inter.user_index(["9", 5]).tolist() == [1, 0]
    assert inter.item_index(np.array([200])).tolist() == [1]
    with pytest.raises(InputError, match="unknown item id 300"):
        inter.item_index([300])
    with pytest.raises(InputError, match="unknown user id 'x'"):
        inter.user_index(["x"])


def test_counts_and_transpose():
    inter = Interactions(np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1]]))
    assert inter.item_popularity().tolist() == [3, 1, 1]
    assert inter.user_activity().tolist() == [2, 1, 2]
    np.testing.assert_array_equal(inter.item_users().toarray(), _dense(inter).T)
    assert inter.shape == (3, 3) and inter.n_users == 3 and inter.n_items == 3
    assert inter.density == pytest.approx(5 / 9)


def test_bad_construction_is_a_clear_error():
    with pytest.raises(InputError, match="NaN"):
        Interactions(np.array([[1.0, np.nan]]))
    with pytest.raises(InputError, match="NaN"):
        Interactions(sp.csr_matrix(np.array([[1.0, np.inf]])))
    with pytest.raises(InputError, match="unique"):
        Interactions(np.eye(2), user_ids=[1, 1])
    with pytest.raises(InputError, match="expected 2 ids"):
        Interactions(np.eye(2), item_ids=[1, 2, 3])
    with pytest.raises(InputError, match="empty"):
        Interactions.from_pairs([], [])
    with pytest.raises(InputError, match="NaN or inf at entry 1"):
        Interactions.from_pairs([1, 2], [1, 2], [4.0, np.nan])


def _reference_filter(dense: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Obviously-correct loop: drop out-of-range items, then users, until nothing changes."""
    rows, cols = np.arange(dense.shape[0]), np.arange(dense.shape[1])
    while True:
        m = dense[np.ix_(rows, cols)]
        keep_c = (m.sum(0) >= lo) & (m.sum(0) <= hi)
        m = m[:, keep_c]
        keep_r = (m.sum(1) >= lo) & (m.sum(1) <= hi)
        new_rows, new_cols = rows[keep_r], cols[keep_c]
        if len(new_rows) == len(rows) and len(new_cols) == len(cols):
            return dense[np.ix_(rows, cols)]
        rows, cols = new_rows, new_cols


def test_filter_counts_matches_reference_and_keeps_ids():
    rng = np.random.default_rng(3)
    dense = (rng.random((60, 40)) < rng.random(40) * 0.5).astype(np.float32)
    inter = Interactions(dense, user_ids=np.arange(60) * 10, item_ids=np.arange(40) + 1000)
    out = inter.filter_counts(3, 20)
    expected = _reference_filter(dense, 3, 20)
    np.testing.assert_array_equal(_dense(out), expected)
    pop, act = out.item_popularity(), out.user_activity()
    assert pop.min() >= 3 and pop.max() <= 20 and act.min() >= 3 and act.max() <= 20
    # the raw ids travel with the rows and columns that survive
    for r, uid in enumerate(out.user_ids):
        for c, iid in enumerate(out.item_ids):
            assert dense[uid // 10, iid - 1000] == _dense(out)[r, c]


def test_filter_counts_once_and_separate_user_bounds():
    # item 0 seen by 3 users, item 1 by 1: min_count=2 drops item 1, then user 2 has 1 item
    dense = np.array([[1, 0], [1, 0], [1, 1]])
    inter = Interactions(dense)
    once = inter.filter_counts(2, 10, min_user_count=1, iterate=False)
    assert once.shape == (3, 1)
    both = inter.filter_counts(2, 10, min_user_count=1, max_user_count=1)
    assert both.shape == (3, 1)
    with pytest.raises(InputError, match="left no interactions"):
        inter.filter_counts(5, 10)
    with pytest.raises(InputError, match="min must not exceed max"):
        inter.filter_counts(10, 5)


def test_subset_and_with_matrix():
    inter = Interactions.from_pairs(["a", "b", "c"], ["x", "y", "x"])
    sub = inter.subset(users=np.array([True, False, True]), items=np.array([0]))
    assert sub.user_ids.tolist() == ["a", "c"] and sub.item_ids.tolist() == ["x"]
    assert sub.nnz == 2
    with pytest.raises(InputError, match="shape"):
        inter.with_matrix(sp.csr_matrix((2, 2)))


def test_save_load_roundtrip_int_and_str_ids(tmp_path):
    for users in ([3, 1, 2], ["u3", "u1", "u2"]):
        inter = Interactions.from_pairs(users, ["i", "j", "i"])
        path = inter.save(tmp_path / "x.npz")
        back = Interactions.load(path)
        assert back.user_ids.tolist() == inter.user_ids.tolist()
        assert back.item_ids.tolist() == inter.item_ids.tolist()
        assert (back.user_items != inter.user_items).nnz == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_load_refuses_other_files(tmp_path):
    np.savez(tmp_path / "plain.npz", indptr=np.zeros(2))
    with pytest.raises(ModelFormatError, match="not a collabfeat artifact"):
        Interactions.load(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ModelFormatError, match="not an .npz file") as err:
        Interactions.load(tmp_path / "junk.npz")
    assert "pickle" not in str(err.value)  # never advise unsafe loading


def test_matrix_works_with_every_scipy_operation():
    # mixed index dtypes (int64 indptr, int32 indices) break scipy's tocoo()/nonzero()
    m = Interactions.from_pairs([1, 1, 2], [5, 6, 5]).user_items
    assert m.indptr.dtype == m.indices.dtype
    rows, cols = m.nonzero()
    assert rows.tolist() == [0, 0, 1] and cols.tolist() == [0, 1, 0]
    assert m.tocoo().nnz == 3


# ---------------------------------------------------------------------------- numbering ids
@pytest.mark.parametrize(
    "values",
    [
        np.array([5, 3, 5, 9, 3, 4]),  # dense range: presence table
        np.array([10**12, -7, 10**12, 3]),  # sparse range: sort
        np.array([7], dtype=np.uint16),
        np.array(["b", "a", "b", "c"]),
        np.array(["10", "9", "100"]),  # strings sort as strings
    ],
)
def test_encode_ids_numbers_ids_in_sorted_order(values):
    from cfcore.ids import encode_ids

    uniq, codes = encode_ids(values)
    np.testing.assert_array_equal(uniq, np.unique(values))
    np.testing.assert_array_equal(uniq[codes], values)
    assert codes.dtype == np.int32
    assert uniq.dtype == (np.int64 if values.dtype.kind in "iu" else values.dtype)


def test_encode_ids_chunks_and_bad_types():
    from cfcore.ids import encode_ids

    rng = np.random.default_rng(1)
    chunks = [
        rng.integers(-50, 50, n).astype(dt)
        for n, dt in ((7, np.int32), (0, np.int64), (30, np.int64))
    ]
    uniq, codes = encode_ids(chunks)
    whole = np.concatenate(chunks)
    np.testing.assert_array_equal(uniq, np.unique(whole))
    np.testing.assert_array_equal(uniq[codes], whole)
    with pytest.raises(InputError, match="items: ids must be integers or strings"):
        encode_ids(np.array([1.5, 2.0]), "items")


def test_from_pairs_builds_the_same_matrix_as_scipy():
    from cfcore.interactions import csr_from_codes

    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, 40, 3000), rng.integers(0, 25, 3000)
    csr, repeats = csr_from_codes(rows.astype(np.int32), cols.astype(np.int32), (40, 25))
    expected = binarize(sp.coo_matrix((np.ones(3000), (rows, cols)), shape=(40, 25)))
    assert (csr != expected).nnz == 0 and csr.has_canonical_format
    assert csr.indices.dtype == csr.indptr.dtype == np.int32 and csr.dtype == np.float32
    np.testing.assert_array_equal(csr.indptr, expected.indptr)
    np.testing.assert_array_equal(csr.indices, expected.indices)
    assert repeats == 3000 - expected.nnz
