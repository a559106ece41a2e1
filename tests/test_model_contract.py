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

import re

import numpy as np
import pytest
import scipy.sparse as sp

from cfcore.errors import InputError, ModelFormatError
from cfcore.factorize import Factorizer
from cfcore.interactions import Interactions
from cfcore.io import load_artifact, save_artifact
from cfcore.model import FactorModel, load_model

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

    def test_recommend_takes_one_row_per_requested_user(self, model, data):
        """implicit's contract: row k of ``user_items`` is the items of ``userids[k]``; any
        other number of rows is a ValueError — also the whole training matrix, which was
        once taken as "all users" whatever the order of ``userids``."""
        ids, _ = model.recommend([41, 3], data[[41, 3]], N=4)
        assert not set(ids[0]) & set(data[41].indices)
        assert not set(ids[1]) & set(data[3].indices)
        for wrong in (data, data[[3, 41, 5]], data[41]):
            with pytest.raises(ValueError, match="one row per requested user"):
                model.recommend([41, 3], wrong, N=4)
        one, one_scores = model.recommend(41, data[41], N=4)
        assert one.shape == one_scores.shape == (4,)
        np.testing.assert_array_equal(one, ids[0])
        everyone = np.arange(data.shape[0])[::-1]  # all users, in another order
        ids_all, _ = model.recommend(everyone, data[everyone], N=4)
        np.testing.assert_array_equal(ids_all[-1 - 41], ids[0])

    def test_recommend_filter_items_and_recalculated_users(self, model, data):
        banned = np.arange(0, model.n_items, 2)
        ids, _ = model.recommend(np.arange(6), data[:6], N=5, filter_items=banned)
        assert not set(ids.ravel()) & set(banned)
        # recalculate_user: scores from factors folded in from user_items (implicit's name)
        rows = data[[0, 45]]
        ids, scores = model.recommend([0, 0], rows, N=5, recalculate_user=True)
        folded = model.fold_in(rows) @ model.item_factors_.T
        if model.item_bias_ is not None:
            folded += model.item_bias_
        folded[rows.nonzero()] = -np.inf
        np.testing.assert_allclose(scores, -np.sort(-folded, axis=1)[:, :5], rtol=1e-5)
        assert np.all(item_group(ids) == user_group([0, 45])[:, None])

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
        assert np.all(ids[:, 0] == items)  # an item is its own nearest neighbour (implicit)
        np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
        assert np.mean(item_group(ids[:, 1:]) == item_group(items)[:, None]) >= 0.95
        others, other_scores = model.similar_items(items, N=5, include_self=False)
        np.testing.assert_array_equal(others, ids[:, 1:])
        np.testing.assert_allclose(other_scores, scores[:, 1:])
        kept, _ = model.similar_items(items[:3], N=5, filter_items=[0, 1, 2])
        assert not set(kept.ravel()) & {0, 1, 2}

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
        with pytest.raises(InputError, match="N must be a positive integer"):
            model.recommend(0, data[0], N=0)
        with pytest.raises(InputError, match="userid: row 80 out of range"):
            model.recommend(model.n_users, data[0], N=3)
        with pytest.raises(InputError, match="user_items"):
            model.recommend([0, 1], data[[0, 1, 2]], N=3)
        with pytest.raises(InputError, match="itemid: row -1 out of range"):
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


# ---------------------------------------------------------------------------- one owner
class _OtherModel(FactorModel):
    """Another factor model (registers itself by name, as every subclass does)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha


def _tables(model, seed=0, n_users=5, n_items=7, k=3):
    rng = np.random.default_rng(seed)
    model.user_factors_ = rng.standard_normal((n_users, k)).astype(np.float32)
    model.item_factors_ = rng.standard_normal((n_items, k)).astype(np.float32)
    model.user_ids_, model.item_ids_ = np.arange(n_users) + 10, np.arange(n_items) + 100
    model.history_ = []
    return model


def test_loading_needs_no_knowledge_of_the_class(data, tmp_path):
    fitted = Factorizer(factors=4, epochs=2, progress=False).fit(data)
    path = fitted.save(tmp_path / "f.npz")
    for loaded in (load_model(path), FactorModel.load(path), Factorizer.load(path)):
        assert type(loaded) is Factorizer and loaded.get_params() == fitted.get_params()
        np.testing.assert_array_equal(loaded.item_factors_, fitted.item_factors_)
    other = _tables(_OtherModel(alpha=3.0)).save(tmp_path / "o.npz")
    loaded = load_model(other)
    assert type(loaded) is _OtherModel and loaded.alpha == 3.0
    with pytest.raises(ModelFormatError, match="holds a _OtherModel, not a Factorizer"):
        Factorizer.load(other)
    # a class this process does not know: the tables still score, fold-in says it cannot
    arrays, _ = load_artifact(other, "factor-model")
    save_artifact(tmp_path / "u.npz", "factor-model", arrays, {"model": "FutureModel"})
    unknown = load_model(tmp_path / "u.npz")
    assert type(unknown) is FactorModel
    assert unknown.similar_items(0, N=2)[0][0] == 0
    with pytest.raises(InputError, match="cannot fold in"):
        unknown.recommend([0], sp.csr_matrix((1, 7)), N=3, recalculate_user=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"item_factors": np.full((7, 3), np.nan, np.float32)}, "item_factors contains NaN"),
        ({"user_factors": np.full((5, 3), np.inf, np.float32)}, "user_factors contains NaN"),
        ({"item_bias": np.zeros(6, np.float32)}, r"item_bias has shape \(6,\), expected \(7,\)"),
        ({"item_ids": np.arange(6)}, "item_ids: expected 7 ids"),
        ({"user_ids": np.zeros(5, np.int64)}, "user_ids: ids must be unique"),
        ({"item_factors": np.ones((7, 2), np.float32)}, "factor shapes do not match"),
    ],
)
def test_one_reader_refuses_broken_models_on_every_surface(tmp_path, change, message):
    """FactorModel is the only reader: the library, item vectors (cluster, neighbors) and the
    CLI all refuse a broken model file with the same message."""
    from click.testing import CliRunner

    from cfcore.cli.main import cli
    from cfcore.vectors import load_vectors

    arrays = _tables(FactorModel())._artifact_arrays()
    path = tmp_path / "m.npz"
    save_artifact(path, "factor-model", {**arrays, **change}, {"model": "Factorizer"})
    for read in (load_model, Factorizer.load, load_vectors):
        with pytest.raises(ModelFormatError, match=message):
            read(path)
    for args in (["similar", path, 100], ["cluster", path, "-k", 2, "-o", tmp_path / "l.npz"]):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 1 and re.search(message, result.output), result.output


def test_project_moves_raw_ids_onto_the_model_and_refuses_other_datasets():
    model = _tables(FactorModel())  # users 10..14, items 100..106
    inter = Interactions.from_pairs(
        [10, 10, 11, 99, 99, 12], [100, 101, 555, 102, 103, 106]
    )  # user 99 is new, item 555 unknown
    p = model.project(inter)
    assert (p.total, p.known, p.known_items, p.dropped) == (6, 3, 5, 3)
    assert p.user_items.shape == (5, 7)
    assert sorted(zip(*p.user_items.nonzero(), strict=True)) == [(0, 0), (0, 1), (2, 6)]
    assert p.new_user_ids.tolist() == [99] and p.new_user_items.shape == (1, 7)
    assert p.new_user_items.indices.tolist() == [2, 3]
    assert p.unknown_item_ids.tolist() == [555]
    strange = Interactions.from_pairs([10, 98, 99, 97], [100, 500, 501, 502])
    with pytest.raises(InputError, match=r"only 1 of 4 \(25%\) match.*same dataset"):
        model.project(strange, what="other.csv")
    assert model.project(strange, min_overlap=0).known == 1
    newcomers = Interactions.from_pairs([98, 98, 99], [100, 101, 102])
    with pytest.raises(InputError, match="users and items"):
        model.project(newcomers)
    assert model.project(newcomers, new_users=True).known_items == 3  # to fold in
