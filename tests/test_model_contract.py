"""One contract, every loss (implicit's test-mixin idea).

The data has planted structure whose right answers are known: users and items fall into
``GROUPS`` groups, and each user interacts only with ``LIKED`` random items of its own
group (of ``ITEMS_PER_GROUP``, so at least 13 unseen items of its group remain). A working model must therefore

- recommend every user only unseen items of its own group,
- give every item nearest neighbours from its own group,
- fold a new user with a few items of group g into group g,
- survive a save/load round trip unchanged.

:class:`FactorModelContract` states these once; one subclass per loss (and one
multi-threaded) runs them.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cfcore.errors import InputError, ModelFormatError
from cfcore.factorize import Factorizer
from cfcore.interactions import Interactions

GROUPS, USERS_PER_GROUP, ITEMS_PER_GROUP, LIKED = 4, 20, 25, 12


def planted(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(GROUPS * USERS_PER_GROUP):
        g = u // USERS_PER_GROUP
        liked = g * ITEMS_PER_GROUP + rng.choice(ITEMS_PER_GROUP, LIKED, replace=False)
        rows += [u] * len(liked)
        cols += liked.tolist()
    shape = (GROUPS * USERS_PER_GROUP, GROUPS * ITEMS_PER_GROUP)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)


def user_group(u):
    return np.asarray(u) // USERS_PER_GROUP


def item_group(i):
    return np.asarray(i) // ITEMS_PER_GROUP


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="class")
def model(request, data):
    base = dict(factors=8, epochs=30, seed=0, threads=1, progress=False)
    return Factorizer(**{**base, **request.cls.params}).fit(data)


class FactorModelContract:
    """Shared behaviour; subclasses set ``params`` (Factorizer keyword arguments)."""

    params: dict = {}

    def test_recommends_unseen_items_of_the_users_group(self, model, data):
        users = np.arange(data.shape[0])
        ids, scores = model.recommend(users, data[users], N=5)
        assert ids.shape == scores.shape == (len(users), 5)
        assert np.all(item_group(ids) == user_group(users)[:, None])
        for u in users:
            assert not set(ids[u]) & set(data[u].indices)
        assert np.all(np.diff(scores, axis=1) <= 0)  # best first

    def test_recommend_accepts_the_full_matrix_and_a_scalar_user(self, model, data):
        ids_rows, _ = model.recommend([3, 41], data[[3, 41]], N=4)
        ids_full, _ = model.recommend([3, 41], data, N=4)
        np.testing.assert_array_equal(ids_rows, ids_full)
        one, one_scores = model.recommend(41, data[41], N=4)
        assert one.shape == one_scores.shape == (4,)
        np.testing.assert_array_equal(one, ids_rows[1])

    def test_unfiltered_recommendations_rank_all_items(self, model, data):
        ids, scores = model.recommend(np.arange(5), None, N=LIKED, filter_already_liked_items=False)
        assert np.mean(item_group(ids) == 0) >= 0.9
        seen = sum(len(set(ids[u]) & set(data[u].indices)) for u in range(5))
        assert seen >= 0.5 * 5 * LIKED  # the items a user has are ranked, mostly on top
        expected = model.scorer()(np.arange(5))
        np.testing.assert_allclose(scores, np.take_along_axis(expected, ids, 1), rtol=1e-5)

    def test_similar_items_come_from_the_same_group(self, model):
        items = np.arange(GROUPS * ITEMS_PER_GROUP)
        ids, scores = model.similar_items(items, N=6)
        assert np.all(ids[:, 0] == items)  # an item is its own nearest neighbour
        np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
        assert np.mean(item_group(ids[:, 1:]) == item_group(items)[:, None]) >= 0.95

    def test_fold_in_places_new_users_in_their_group(self, model):
        rng = np.random.default_rng(5)
        rows, cols = [], []
        for new, g in enumerate(range(GROUPS)):
            liked = g * ITEMS_PER_GROUP + rng.choice(ITEMS_PER_GROUP, 8, replace=False)
            rows += [new] * len(liked)
            cols += liked.tolist()
        new_items = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(GROUPS, model.n_items)
        )
        factors = model.fold_in(new_items)
        assert factors.shape == (GROUPS, model.item_factors_.shape[1])
        assert factors.dtype == np.float32
        scores = factors @ model.item_factors_.T
        if model.item_bias_ is not None:
            scores += model.item_bias_
        scores[new_items.nonzero()] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :5]
        assert np.all(item_group(top) == np.arange(GROUPS)[:, None])
        np.testing.assert_array_equal(factors, model.fold_in(new_items))  # deterministic

    def test_save_load_round_trip(self, model, data, tmp_path):
        path = model.save(tmp_path / "model.npz")
        loaded = Factorizer.load(path)
        np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
        np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
        assert loaded.get_params() == model.get_params()
        assert loaded.history_ == model.history_
        users = np.arange(10)
        for a, b in zip(
            loaded.recommend(users, data[users], N=5),
            model.recommend(users, data[users], N=5),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)

    def test_scorer_matches_predict(self, model):
        users, items = np.array([0, 7, 79]), np.array([3, 50, 99])
        dense = model.scorer()(users)
        pred = model.predict(users, items)
        if model.user_bias_ is not None:
            pred = pred - model.user_bias_[users]  # a user bias never changes a ranking
        np.testing.assert_allclose(dense[np.arange(3), items], pred, rtol=1e-5, atol=1e-6)

    def test_bad_arguments_are_named(self, model, data):
        with pytest.raises(InputError, match="N="):
            model.recommend(0, data[0], N=model.n_items + 1)
        with pytest.raises(InputError, match="userids"):
            model.recommend(model.n_users, data[0], N=3)
        with pytest.raises(InputError, match="user_items"):
            model.recommend([0, 1], data[[0, 1, 2]], N=3)
        with pytest.raises(InputError, match="itemids"):
            model.similar_items(-1)
        with pytest.raises(InputError, match="user_items_rows"):
            model.fold_in(sp.csr_matrix((1, model.n_items + 2), dtype=np.float32))


class TestSquared(FactorModelContract):
    params = dict(loss="squared", learning_rate=0.05)


class TestSquaredBiases(FactorModelContract):
    params = dict(loss="squared", use_biases=True)


class TestLogistic(FactorModelContract):
    params = dict(loss="logistic", learning_rate=0.05)


class TestBPR(FactorModelContract):
    params = dict(loss="bpr", learning_rate=0.1)


class TestWARP(FactorModelContract):
    params = dict(loss="warp")


class TestBPRThreaded(FactorModelContract):
    params = dict(loss="bpr", learning_rate=0.1, threads=2)


def test_load_refuses_other_files(tmp_path):
    inter = Interactions(planted())
    inter.save(tmp_path / "interactions.npz")
    with pytest.raises(ModelFormatError, match="factor-model"):
        Factorizer.load(tmp_path / "interactions.npz")
    np.savez(tmp_path / "foreign.npz", user_factors=np.zeros((2, 2)))
    with pytest.raises(ModelFormatError, match="another tool"):
        Factorizer.load(tmp_path / "foreign.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ModelFormatError):
        Factorizer.load(tmp_path / "text.npz")
