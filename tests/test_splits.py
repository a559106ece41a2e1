"""Splits: seeded, reproducible, disjoint, and together equal to the original."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cfcore.errors import InputError
from cfcore.interactions import Interactions
from cfcore.splits import holdout_split, item_split, leave_k_out


@pytest.fixture
def views() -> Interactions:
    rng = np.random.default_rng(0)
    dense = rng.random((50, 80)) < 0.15
    dense[0] = False
    dense[0, 3] = True  # a user with a single entry
    dense[1, :] = False
    dense[1, :5] = True  # a user with exactly 5
    return Interactions(dense, user_ids=np.arange(50) + 100, item_ids=[f"i{k}" for k in range(80)])


def _same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return a.shape == b.shape and (a != b).nnz == 0


def _check_partition(whole: Interactions, train: Interactions, test: Interactions) -> None:
    assert train.shape == test.shape == whole.shape
    assert train.user_ids.tolist() == whole.user_ids.tolist()
    assert train.item_ids.tolist() == whole.item_ids.tolist()
    assert train.user_items.multiply(test.user_items).nnz == 0  # disjoint
    assert _same(train.user_items + test.user_items, whole.user_items)  # union = original


def test_holdout_fraction_per_user(views):
    train, test = holdout_split(views, 0.2, seed=1)
    _check_partition(views, train, test)
    counts = views.user_activity()
    expected = np.minimum(np.rint(counts * 0.2), counts - 1)
    np.testing.assert_array_equal(test.user_activity(), expected)
    assert train.user_activity().min() >= 1  # every user keeps something to learn from
    assert test.user_activity()[0] == 0  # the single-entry user stays whole in train
    assert test.user_activity()[1] == 1  # 5 entries * 0.2


def test_holdout_is_reproducible_and_seed_dependent(views):
    a_train, a_test = holdout_split(views, 0.3, seed=7)
    b_train, b_test = holdout_split(views, 0.3, seed=7)
    assert _same(a_train.user_items, b_train.user_items)
    assert _same(a_test.user_items, b_test.user_items)
    _, c_test = holdout_split(views, 0.3, seed=8)
    assert not _same(a_test.user_items, c_test.user_items)


def test_holdout_draws_uniformly_within_users():
    # one user with 10 items, 30% held out: over many seeds each item is held out ~30% of the time
    inter = Interactions(np.ones((1, 10)))
    hits = np.zeros(10)
    for seed in range(400):
        _, test = holdout_split(inter, 0.3, seed=seed)
        hits += test.user_items.toarray()[0]
    freq = hits / 400
    assert np.all(np.abs(freq - 0.3) < 0.1), freq


def test_holdout_min_train(views):
    train, test = holdout_split(views, 0.9, seed=0, min_train=3)
    _check_partition(views, train, test)
    counts = views.user_activity()
    assert np.all(train.user_activity() >= np.minimum(counts, 3))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fractions(views, fraction):
    with pytest.raises(InputError, match="test_fraction"):
        holdout_split(views, fraction)
    with pytest.raises(InputError, match="test_fraction"):
        item_split(views, fraction)


def test_leave_k_out(views):
    train, test = leave_k_out(views, k=2, seed=3)
    _check_partition(views, train, test)
    counts = views.user_activity()
    np.testing.assert_array_equal(test.user_activity(), np.where(counts > 2, 2, 0))
    again = leave_k_out(views, k=2, seed=3)[1]
    assert _same(test.user_items, again.user_items)
    with pytest.raises(InputError, match="k must be >= 1"):
        leave_k_out(views, k=0)


def test_item_split_holds_out_whole_items(views):
    split = item_split(views, 0.25, seed=5)
    assert len(split.test_items) == 20 and len(split.train_items) == 60
    assert set(split.train_items.tolist()).isdisjoint(split.test_items.tolist())
    assert sorted([*split.train_items, *split.test_items]) == list(range(80))
    assert split.train.item_ids.tolist() == views.item_ids[split.train_items].tolist()
    assert split.test.item_ids.tolist() == views.item_ids[split.test_items].tolist()
    # every interaction lands in exactly one part, with its item's column
    assert split.train.nnz + split.test.nnz == views.nnz
    full = views.user_items.toarray()
    np.testing.assert_array_equal(split.train.user_items.toarray(), full[:, split.train_items])
    np.testing.assert_array_equal(split.test.user_items.toarray(), full[:, split.test_items])
    same = item_split(views, 0.25, seed=5)
    np.testing.assert_array_equal(same.test_items, split.test_items)
    assert not np.array_equal(item_split(views, 0.25, seed=6).test_items, split.test_items)


def test_item_split_paper_fractions(views):
    assert len(item_split(views, 0.05, seed=0).test_items) == 4  # Fang §4.1: 95/5
    assert len(item_split(views, 0.3, seed=0).test_items) == 24  # Bibas: 30% new items


@pytest.mark.realdata
def test_ml100k_split(ml100k, ml100k_split):
    train, test = ml100k_split
    _check_partition(ml100k, train, test)
    assert test.nnz == pytest.approx(20000, rel=0.01)
    assert test.user_activity().min() >= 4  # ml-100k users have >= 20 ratings
