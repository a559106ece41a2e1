"""implicit's recommender contract, kept by every collabfeat loss (the drop-in promise).

Code written for ``implicit.bpr.BayesianPersonalizedRanking`` or
``implicit.als.AlternatingLeastSquares`` must run unchanged on a :class:`cfcore.Factorizer`:
:class:`ImplicitContract` calls every method the way implicit's users (and
``implicit.evaluation``) do, on implicit's own test matrix whose right answers are known — a
checkerboard: user ``u`` has every item of its parity except item ``u``, so once its items
are filtered, ``u`` is the one item of its group left, and must be its top recommendation;
an item's (a user's) neighbours are of its parity. One subclass per loss runs it, on one
thread (Hogwild with several threads races, and these assert exact outcomes).
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from cfcore.errors import ModelFormatError
from cfcore.factorize import LOSSES, Factorizer
from cfcore.model import FactorModel, load_model

implicit_evaluation = pytest.importorskip("implicit.evaluation")

SIZE = 50


def checkerboard(n: int = SIZE) -> sp.csr_matrix:
    """implicit's test matrix: ``(u + i)`` even, minus the diagonal (users × items)."""
    u, i = np.indices((n, n))
    dense = ((u + i) % 2 == 0) & (u != i)
    return sp.csr_matrix(dense.astype(np.float32))


def parity(rows):
    return np.asarray(rows) % 2


@pytest.fixture(scope="module")
def user_items():
    return checkerboard()


@pytest.fixture(scope="class")
def fitted(request, user_items):
    """(model, the callback's calls): fit as implicit code does, positional arguments."""
    calls = []
    model = Factorizer(factors=8, epochs=20, threads=1, seed=0, **request.cls.params)
    returned = model.fit(user_items, False, lambda *args: calls.append(args))
    assert returned is model
    return model, calls


def _neighbours_of_the_same_parity(similar):
    """``similar`` (similar_items or similar_users): itself first, at cosine 1, then rows of
    its parity; one query and a batch, implicit's dtypes."""
    for query in (6, 3):
        ids, scores = similar(query, N=10)
        assert ids[0] == query and scores[0] == pytest.approx(1.0, abs=1e-5)
        assert np.all(parity(ids) == query % 2)
        assert ids.dtype == np.int32 and scores.dtype == np.float32
    batch, _ = similar(np.arange(SIZE), N=5)
    np.testing.assert_array_equal(batch[:, 0], np.arange(SIZE))
    assert np.mean(parity(batch) == parity(np.arange(SIZE))[:, None]) >= 0.95


class ImplicitContract:
    """Every method of implicit's ``RecommenderBase``/``MatrixFactorizationBase`` as
    implicit's users call it; subclasses set ``params`` (Factorizer keyword arguments)."""

    params: dict = {}

    def test_fit_calls_back_per_epoch_as_implicit(self, fitted):
        model, calls = fitted
        assert [c[0] for c in calls] == list(range(20))  # iteration, 0-based
        for iteration, elapsed, loss in calls:
            assert isinstance(elapsed, float) and elapsed >= 0
            assert loss == model.history_[iteration]["loss"] and np.isfinite(loss)

    def test_user_and_item_factors(self, fitted, user_items):
        model, _ = fitted
        assert model.user_factors.shape == (SIZE, 8) and model.item_factors.shape == (SIZE, 8)
        assert model.user_factors.dtype == model.item_factors.dtype == np.float32
        assert model.user_factors is model.user_factors_
        assert model.item_factors is model.item_factors_

    def test_recommend_one_user(self, fitted, user_items):
        model, _ = fitted
        for u in range(SIZE):
            ids, scores = model.recommend(u, user_items[u], N=1)
            assert ids.tolist() == [u]
            assert ids.dtype == np.int32 and scores.dtype == np.float32
        ids, scores = model.recommend(7, user_items[7], N=10)
        assert ids.shape == scores.shape == (10,) and ids[0] == 7
        assert not set(ids) & set(user_items[7].indices)
        assert np.all(np.diff(scores) <= 0)

    def test_recommend_a_batch_one_row_per_user(self, fitted, user_items):
        model, _ = fitted
        users = np.arange(SIZE)[::-1]
        ids, scores = model.recommend(users, user_items[users], N=3)
        assert ids.shape == scores.shape == (SIZE, 3)
        assert ids.dtype == np.int32 and scores.dtype == np.float32
        np.testing.assert_array_equal(ids[:, 0], users)
        for k, u in enumerate(users[:5]):
            np.testing.assert_array_equal(ids[k], model.recommend(u, user_items[u], N=3)[0])

    def test_recommend_more_than_the_catalogue_returns_what_exists(self, fitted, user_items):
        model, _ = fitted
        unseen = SIZE - user_items[3].nnz
        ids, scores = model.recommend(3, user_items[3], N=1000)
        assert len(ids) == len(scores) == unseen
        assert sorted(ids) == sorted(set(range(SIZE)) - set(user_items[3].indices))
        batch, batch_scores = model.recommend([3, 4], user_items[[3, 4]], N=1000)
        assert batch.shape == (2, SIZE)  # a batch is padded: id -1, score -inf
        np.testing.assert_array_equal(batch[0, :unseen], ids)
        assert np.all(batch[:, unseen:] == -1) and np.all(np.isneginf(batch_scores[:, unseen:]))
        everything, _ = model.recommend(3, None, N=1000, filter_already_liked_items=False)
        assert sorted(everything) == list(range(SIZE))

    def test_recommend_filter_items_and_items(self, fitted, user_items):
        model, _ = fitted
        ids, _ = model.recommend(4, user_items[4], N=5, filter_items=[4, 6, 8])
        assert not set(ids) & {4, 6, 8} and not set(ids) & set(user_items[4].indices)
        chosen = [11, 4, 9, 2, 31]  # rank only these (any order; a liked one, 2, is filtered)
        ids, scores = model.recommend(4, user_items[4], N=10, items=chosen)
        assert ids[0] == 4 and set(ids) == {4, 9, 11, 31}
        assert ids.dtype == np.int32
        unfiltered, _ = model.recommend(
            4, user_items[4], N=10, items=chosen, filter_already_liked_items=False
        )
        assert set(unfiltered) == set(chosen) and set(unfiltered[:2]) == {2, 4}
        with pytest.raises(ValueError, match="items and filter_items"):
            model.recommend(4, user_items[4], items=chosen, filter_items=[1])

    def test_recommend_recalculate_user(self, fitted, user_items):
        model, _ = fitted
        ids, _ = model.recommend(0, user_items[9], N=1, recalculate_user=True)
        assert ids.tolist() == [9]  # folded in from user 9's items
        ids, _ = model.recommend([0, 0], user_items[[9, 12]], N=1, recalculate_user=True)
        assert ids[:, 0].tolist() == [9, 12]

    def test_recommend_bad_shapes_are_value_errors(self, fitted, user_items):
        model, _ = fitted
        with pytest.raises(ValueError, match="one row per requested user"):
            model.recommend([0, 1], user_items[0])
        with pytest.raises(ValueError, match="one row per requested user"):
            model.recommend(0, user_items)  # the whole matrix for one user
        with pytest.raises(ValueError, match="50 columns"):
            model.recommend(0, user_items[0, :10])
        with pytest.raises(ValueError, match="userid: row 50 out of range"):
            model.recommend(SIZE, user_items[0])
        with pytest.raises(ValueError, match="user_items: required"):
            model.recommend(0, None)

    def test_similar_items(self, fitted, user_items):
        model, _ = fitted
        _neighbours_of_the_same_parity(model.similar_items)
        everything, _ = model.similar_items(6, N=1000)
        assert sorted(everything) == list(range(SIZE))
        filtered, _ = model.similar_items(6, N=5, filter_items=[6, 8])
        assert not set(filtered) & {6, 8} and len(filtered) == 5
        chosen, _ = model.similar_items(6, N=10, items=[1, 6, 20, 33])
        assert chosen[0] == 6 and set(chosen) == {1, 6, 20, 33} and set(chosen[:2]) == {6, 20}
        with pytest.raises(ValueError, match="items and filter_items"):
            model.similar_items(6, items=[1, 6], filter_items=[1])

    def test_similar_items_recalculate_item(self, fitted, user_items):
        model, _ = fitted
        item_users = user_items.T.tocsr()
        ids, _ = model.similar_items(0, N=10, recalculate_item=True, item_users=item_users[5])
        assert np.mean(parity(ids) == 1) >= 0.9  # item 5's users are odd: an odd item
        batch, _ = model.similar_items(
            [0, 0], N=10, recalculate_item=True, item_users=item_users[[5, 8]]
        )
        assert np.mean(parity(batch) == np.array([[1], [0]])) >= 0.9
        with pytest.raises(ValueError, match="one row per requested item"):
            model.similar_items(0, recalculate_item=True, item_users=item_users[[5, 8]])

    def test_similar_users(self, fitted):
        model, _ = fitted
        _neighbours_of_the_same_parity(model.similar_users)
        filtered, _ = model.similar_users(3, N=5, filter_users=[3, 5])
        assert not set(filtered) & {3, 5}
        chosen, _ = model.similar_users(3, N=10, users=[0, 3, 7])
        assert chosen.tolist()[:2] == [3, 7] and set(chosen) == {0, 3, 7}
        assert len(model.similar_users(3, N=1000)[0]) == SIZE
        with pytest.raises(ValueError, match="users and filter_users"):
            model.similar_users(3, users=[0], filter_users=[1])

    def test_save_load_path_and_file_objects(self, fitted, user_items, tmp_path):
        model, _ = fitted
        expected = model.recommend(np.arange(SIZE), user_items, N=5)
        model.save(tmp_path / "model.npz")
        buffer = io.BytesIO()
        assert model.save(buffer) is None
        buffer.seek(0)
        with open(tmp_path / "model.npz", "rb") as fh:
            from_file = Factorizer.load(fh)
        for loaded in (Factorizer.load(tmp_path / "model.npz"), Factorizer.load(buffer), from_file):
            assert type(loaded) is Factorizer and loaded.get_params() == model.get_params()
            got = loaded.recommend(np.arange(SIZE), user_items, N=5)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])

    def test_pickle_round_trip(self, fitted, user_items):
        model, _ = fitted
        copy = pickle.loads(pickle.dumps(model))
        assert copy.get_params() == model.get_params() and copy.history_ == model.history_
        for a, b in zip(
            copy.recommend(np.arange(SIZE), user_items, N=5),
            model.recommend(np.arange(SIZE), user_items, N=5),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(copy.similar_items(3)[0], model.similar_items(3)[0])

    def test_implicit_evaluation_runs_on_it(self, fitted, user_items):
        """implicit's Cython evaluation calls ``recommend`` in batches and needs int32 ids:
        each user's held-out item is its diagonal one, its top recommendation."""
        model, _ = fitted
        held_out = sp.identity(SIZE, dtype=np.float32, format="csr")
        p = implicit_evaluation.precision_at_k(
            model, user_items, held_out, K=1, show_progress=False
        )
        assert p == 1.0
        metrics = implicit_evaluation.ranking_metrics_at_k(
            model, user_items, held_out, K=5, show_progress=False
        )
        assert metrics["precision"] == 1.0 and metrics["map"] == 1.0
        assert metrics["ndcg"] == pytest.approx(1.0) and metrics["auc"] > 0.9


class TestSquared(ImplicitContract):
    params = dict(loss="squared")


class TestLogistic(ImplicitContract):
    params = dict(loss="logistic")


class TestBPR(ImplicitContract):
    params = dict(loss="bpr")


class TestWARP(ImplicitContract):
    params = dict(loss="warp")


def test_every_loss_is_covered():
    covered = {cls.params["loss"] for cls in ImplicitContract.__subclasses__()}
    assert covered == set(LOSSES)


# ---------------------------------------------------------------------------- the rest
def test_unfitted_model_saves_pickles_and_loads_unfitted(tmp_path):
    model = Factorizer(factors=5, loss="bpr", epochs=3)
    assert model.user_factors is None and model.item_factors is None
    path = model.save(tmp_path / "unfitted.npz")
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    for loaded in (Factorizer.load(path), FactorModel.load(buffer)):
        assert type(loaded) is Factorizer and not loaded.is_fitted
        assert loaded.get_params() == model.get_params()
    assert not pickle.loads(pickle.dumps(model)).is_fitted
    with pytest.raises(ModelFormatError, match="unfitted.npz: holds an unfitted Factorizer"):
        load_model(path)  # what the CLI and every scoring tool read with
    loaded = Factorizer.load(path).fit(checkerboard(), show_progress=False)
    assert loaded.is_fitted and loaded.item_factors.shape == (SIZE, 5)


def test_show_progress_false_hides_the_bar(capsys):
    Factorizer(factors=4, epochs=2, progress=True).fit(checkerboard(), show_progress=False)
    assert "factorize" not in capsys.readouterr().err
    Factorizer(factors=4, epochs=2, progress=True).fit(checkerboard())
    assert "factorize" in capsys.readouterr().err


def _tied_model() -> FactorModel:
    """Items 1 and 2 (users 0 and 3) point the same way: each ties with the other at cosine 1."""
    model = FactorModel()
    model.item_factors_ = np.array([[1, 0], [1, 1], [2, 2], [0, 1], [-1, 1]], np.float32)
    model.user_factors_ = np.array([[3, 3], [0, 1], [1, -1], [1, 1]], np.float32)
    model.user_ids_, model.item_ids_ = np.arange(4) + 10, np.arange(5) + 100
    model.history_ = []
    return model


def test_self_comes_first_even_when_another_ties_with_it():
    model = _tied_model()
    for item, other in ((1, 2), (2, 1)):
        ids, scores = model.similar_items(item, N=3)
        assert ids[:2].tolist() == [item, other]
        assert scores[0] == pytest.approx(scores[1])
        assert model.similar_items(item, N=2, include_self=False)[0][0] == other
    batch, _ = model.similar_items([2, 1, 2], N=2)
    assert batch.tolist() == [[2, 1], [1, 2], [2, 1]]
    assert model.similar_users(3, N=2)[0].tolist() == [3, 0]
    assert model.similar_users(0, N=2)[0].tolist() == [0, 3]


def test_cli_similar_agrees_with_the_api_on_ties(tmp_path):
    import json

    from click.testing import CliRunner

    from cfcore.cli.main import cli

    model = _tied_model()
    path = model.save(tmp_path / "tied.npz")
    for item in (101, 102):
        for flags, include_self in (([], True), (["--exclude-self"], False)):
            result = CliRunner().invoke(
                cli, ["similar", str(path), str(item), "-k", "3", "--json", *flags]
            )
            assert result.exit_code == 0, result.output
            got = [int(r["similar_id"]) for r in json.loads(result.output)[str(item)]]
            ids, _ = model.similar_items(model.item_rows([item]), N=3, include_self=include_self)
            assert got == model.item_ids_[ids[0]].tolist()
            assert got[0] == (item if include_self else 203 - item)
