"""Factorizer: reproducibility, validation during fit, schedules, divergence, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from test_model_contract import planted

from cfcore.errors import DivergenceError, InputError
from cfcore.factorize import DEFAULT_LEARNING_RATES, FANG_2015, LOSS_DEFAULTS, Factorizer
from cfcore.interactions import Interactions
from cfcore.io import load_artifact, save_artifact
from cfcore.sampling import sample_negatives
from cfcore.threads import ThreadsWarning, available_threads

FAST = dict(factors=8, epochs=4, progress=False)


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def split(data):
    """Planted data with 3 entries of every user held out."""
    rng = np.random.default_rng(1)
    train, test = data.tolil(copy=True), sp.lil_matrix(data.shape, dtype=np.float32)
    for u in range(data.shape[0]):
        for i in rng.choice(data[u].indices, 3, replace=False):
            train[u, i] = 0
            test[u, i] = 1
    train = sp.csr_matrix(train)
    train.eliminate_zeros()
    return train, sp.csr_matrix(test)


@pytest.mark.parametrize("loss", ["squared", "bpr", "warp", "logistic"])
def test_one_thread_is_bit_reproducible(data, loss):
    a = Factorizer(loss=loss, threads=1, seed=3, **FAST).fit(data)
    b = Factorizer(loss=loss, threads=1, seed=3, **FAST).fit(data)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    c = Factorizer(loss=loss, threads=1, seed=4, **FAST).fit(data)
    assert not np.array_equal(a.item_factors_, c.item_factors_)


@pytest.mark.parametrize("resample", [True, False])
@pytest.mark.parametrize("loss", ["squared", "logistic", "bpr"])
def test_negatives_drawn_in_the_kernel_are_the_presampled_ones(ml100k, monkeypatch, loss, resample):
    """The grouped kernel draws each user's negatives as it visits the user, from the user's
    own stream: one thread gives bit for bit the model of the stored draw of
    ``sample_negatives`` (ML-100K at ratio 4 also takes the sampler's keys path)."""
    import cfcore.sampling

    params = dict(loss=loss, factors=16, epochs=3, threads=1, seed=5, progress=False)
    params.update(resample_negatives=resample, use_biases=True, neg_ratio=4)

    def never_stored(*args, **kwargs):
        raise AssertionError("the grouped fit stored a draw of negatives")

    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", cfcore.sampling.NegativeShortfallWarning)
        patch.setattr(cfcore.sampling, "sample_negatives", never_stored)
        drawn = Factorizer(**params).fit(ml100k.user_items)
        patch.undo()
        patch.setattr(Factorizer, "_kernel_draws_negatives", staticmethod(lambda p: False))
        stored = Factorizer(**params).fit(ml100k.user_items)
    for name in ("user_factors_", "item_factors_", "item_bias_"):
        np.testing.assert_array_equal(getattr(drawn, name), getattr(stored, name))
    assert [h["loss"] for h in drawn.history_] == [h["loss"] for h in stored.history_]
    assert [h["updates"] for h in drawn.history_] == [h["updates"] for h in stored.history_]


def test_threads_change_results_only_through_races(data):
    """Same partition of the work: every update is still made once, the loss stays close."""
    one = Factorizer(loss="squared", threads=1, **FAST).fit(data)
    two = Factorizer(loss="squared", threads=2, **FAST).fit(data)
    assert [h["updates"] for h in one.history_] == [h["updates"] for h in two.history_]
    assert two.history_[-1]["loss"] == pytest.approx(one.history_[-1]["loss"], rel=0.05)


def test_fit_on_interactions_keeps_raw_ids(data, tmp_path):
    users = np.array([f"u{k}" for k in range(data.shape[0])])
    items = np.arange(data.shape[1]) * 10 + 7
    model = Factorizer(**FAST).fit(Interactions(data, users, items))
    np.testing.assert_array_equal(model.user_ids_, users)
    np.testing.assert_array_equal(model.item_ids_, items)
    np.testing.assert_array_equal(model.user_rows(["u3", "u0"]), [3, 0])
    np.testing.assert_array_equal(model.item_rows([17, 7]), [1, 0])
    with pytest.raises(InputError, match="unknown id"):
        model.user_rows(["nobody"])
    with pytest.raises(InputError, match="item_ids"):
        model.item_rows([8])
    loaded = Factorizer.load(model.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(loaded.user_ids_, users)
    np.testing.assert_array_equal(loaded.item_ids_, items)
    bare = Factorizer(**FAST).fit(data)
    np.testing.assert_array_equal(bare.item_ids_, np.arange(data.shape[1]))


def test_validation_metrics_per_epoch_and_callback(split):
    train, test = split
    seen = []

    def callback(iteration, elapsed, loss):  # implicit's callback
        seen.append((iteration, elapsed, loss, model.history_[-1]))
        return iteration < 7  # stop after the eighth epoch (a collabfeat addition)

    model = Factorizer(loss="bpr", factors=8, epochs=20, learning_rate=0.1, progress=False)
    model.fit(train, validation=test, callback=callback)
    assert [s[0] for s in seen] == list(range(8))
    for iteration, elapsed, loss, record in seen:
        assert record["epoch"] == iteration + 1 and "auc" in record  # validated by then
        assert (elapsed, loss) == (record["seconds"], record["loss"])
    assert len(model.history_) == 8
    for record in model.history_:
        assert {"epoch", "loss", "lr", "updates", "seconds", "rmse", "sampled_pr", "auc"} <= set(
            record
        )
        assert 0 < record["precision@10"] <= 1 and 0 < record["ndcg@10"] <= 1
        assert "pr" not in record  # "pr" is 1 − AUC vs uniform unobserved items (evaluate)
        assert 0 <= record["sampled_pr"] <= 1 and 0 <= record["auc"] <= 1 and record["rmse"] > 0
        assert record["updates"] == train.nnz
    assert model.history_[-1]["auc"] > 0.85  # planted structure is easy
    assert model.history_[-1]["sampled_pr"] < 0.15  # Fang's PR on sampled negatives


def test_validation_must_match(split):
    train, test = split
    with pytest.raises(InputError, match="validation"):
        Factorizer(**FAST).fit(train, validation=test[:, :-1])
    with pytest.raises(InputError, match="validation"):
        Factorizer(**FAST).fit(train, validation=sp.csr_matrix(test.shape, dtype=np.float32))


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", [0.1] * 4),
        ("linear", [0.1, 0.075, 0.05, 0.025]),
        ("inverse-sqrt", [0.1 / math.sqrt(1 + e) for e in range(4)]),
    ],
)
def test_learning_rate_schedules(data, schedule, expected):
    model = Factorizer(learning_rate=0.1, schedule=schedule, **FAST).fit(data)
    np.testing.assert_allclose([h["lr"] for h in model.history_], expected, rtol=1e-6)


def test_default_learning_rate_depends_on_loss_and_optimizer(data):
    for (loss, optimizer), lr in DEFAULT_LEARNING_RATES.items():
        model = Factorizer(loss=loss, optimizer=optimizer, **{**FAST, "epochs": 1}).fit(data)
        assert model.history_[0]["lr"] == pytest.approx(lr)
    # unset: the loss's optimizer, and that optimizer's rate
    assert Factorizer(**{**FAST, "epochs": 1}).fit(data).history_[0]["lr"] == pytest.approx(
        DEFAULT_LEARNING_RATES["squared", LOSS_DEFAULTS["squared"]["optimizer"]]
    )


def test_fang_2015_configuration_is_the_papers(data):
    """``Factorizer(**FANG_2015)``: squared loss, 100 factors, λ 0.01, 2 negatives per
    positive drawn once ∝ log-popularity, plain SGD."""
    e = Factorizer(**{**FANG_2015, "epochs": 1, "progress": False}).fit(data).effective_params_
    assert (e.loss, e.factors, e.regularization, e.neg_ratio) == ("squared", 100, 0.01, 2.0)
    assert (e.neg_weighting, e.resample_negatives, e.optimizer) == ("log-popularity", False, "sgd")
    assert e.learning_rate == DEFAULT_LEARNING_RATES["squared", "sgd"]


def test_only_an_explicit_neg_ratio_warns_of_users_short_of_negatives(data):
    from cfcore.sampling import NegativeShortfallWarning

    heavy = data.tolil(copy=True)
    heavy[0, :60] = 1  # 60 of 100 items: 40 unobserved, short of 4 × 60
    heavy = sp.csr_matrix(heavy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NegativeShortfallWarning)
        Factorizer(**FAST).fit(heavy)  # the library's own ratio, 4: no warning
    with pytest.warns(NegativeShortfallWarning, match="1 of 80 users"):
        Factorizer(neg_ratio=4, **FAST).fit(heavy)


def test_early_stopping_keeps_the_best_epoch(split):
    """Patience 2 on validation NDCG@10: the fit stops two epochs after the best one and
    holds that epoch's factors (scored again here, they give the recorded NDCG@10)."""
    from cfcore.metrics import top_k_metrics

    train, test = split
    # a large step overfits this small planted problem quickly, so the metric peaks early
    params = dict(loss="warp", factors=16, epochs=60, learning_rate=0.3, seed=0, progress=False)
    model = Factorizer(early_stopping=2, **params).fit(train, validation=test)
    ndcg = [h["ndcg@10"] for h in model.history_]
    best = int(np.argmax(ndcg)) + 1
    assert model.best_epoch_ == best < len(ndcg) == best + 2 < 60
    held = top_k_metrics(model.scorer(), test, k=10, exclude=train)["ndcg@10"]
    assert held == pytest.approx(ndcg[best - 1], abs=1e-6)
    assert model.effective_params_.early_stopping == 2
    # without early stopping the fit runs every epoch and keeps the last
    full = Factorizer(**params).fit(train, validation=test)
    assert full.best_epoch_ == 60 and len(full.history_) == 60
    np.testing.assert_array_equal(full.item_factors_ == model.item_factors_, False)


def test_early_stopping_watches_the_metric_asked_for(split):
    train, test = split
    model = Factorizer(
        loss="bpr", early_stopping=1, early_stopping_metric="auc", **{**FAST, "epochs": 30}
    ).fit(train, validation=test)
    aucs = [h["auc"] for h in model.history_]
    assert aucs[model.best_epoch_ - 1] == max(aucs)
    assert len(aucs) in (model.best_epoch_ + 1, 30)


def test_early_stopping_needs_validation_and_a_known_metric(data):
    with pytest.raises(InputError, match="validation="):
        Factorizer(early_stopping=3, **FAST).fit(data)
    with pytest.raises(InputError, match="early_stopping_metric"):
        Factorizer(early_stopping=3, early_stopping_metric="rmse", **FAST).fit(data, data)
    with pytest.raises(InputError, match="early_stopping"):
        Factorizer(early_stopping=0, **FAST).fit(data, data)


def test_plain_sgd_warp_keeps_its_own_defaults(data):
    """WARP defaults to AdaGrad at η 0.03; with optimizer="sgd" it falls back to the
    annealed, norm-bounded setting plain SGD needs (cfcore.factorize.PLAIN_SGD_WARP)."""
    adagrad = Factorizer(loss="warp", **FAST).fit(data)
    assert [h["lr"] for h in adagrad.history_] == pytest.approx([0.03] * 4)
    sgd = Factorizer(loss="warp", optimizer="sgd", **FAST).fit(data)
    assert [h["lr"] for h in sgd.history_] == pytest.approx([0.02, 0.015, 0.01, 0.005])
    norms = np.linalg.norm(sgd.item_factors_, axis=1)
    assert norms.max() <= 1.0 + 1e-5


@pytest.mark.parametrize("loss", ["squared", "bpr", "warp"])
def test_adagrad_recovers_the_planted_structure(data, loss):
    # One thread: the assertion is exact, and Hogwild threads race (a flake on busy machines).
    params = {**FAST, "epochs": 20, "threads": 1}
    model = Factorizer(loss=loss, optimizer="adagrad", learning_rate=0.1, **params)
    ids, _ = model.fit(data).recommend(np.arange(0, 80, 20), data[::20], N=3)
    assert np.all(ids // 25 == np.arange(4)[:, None])


def test_random_order_also_learns(data):
    params = {**FAST, "epochs": 20, "threads": 1}  # exact assertion: no Hogwild race
    model = Factorizer(loss="bpr", order="random", learning_rate=0.1, **params).fit(data)
    ids, _ = model.recommend(np.arange(0, 80, 20), data[::20], N=3)
    assert np.all(ids // 25 == np.arange(4)[:, None])


def test_divergence_is_reported_with_advice(data):
    with pytest.raises(DivergenceError, match=r"lower learning_rate \(now 1000\)"):
        Factorizer(learning_rate=1000.0, optimizer="sgd", **FAST).fit(data)


@pytest.mark.parametrize("loss", ["bpr", "warp", "logistic", "squared"])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_loss_reports_divergence_not_a_kernel_error(data, loss, threads):
    # NaN scores once reached a float division in the serial BPR kernel, which raised
    # ZeroDivisionError from inside Numba instead of the named error.
    with pytest.raises(DivergenceError, match="lower learning_rate"):
        Factorizer(loss=loss, learning_rate=1e4, regularization=0.0, threads=threads, **FAST).fit(
            data
        )


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"factors": 0}, "factors"),
        ({"factors": 2.5}, "factors"),
        ({"loss": "hinge"}, "loss"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"regularization": -1}, "regularization"),
        ({"epochs": -1}, "epochs"),
        ({"neg_ratio": 0}, "neg_ratio"),
        ({"neg_weighting": "log"}, "neg_weighting"),
        ({"neg_ratio": float("inf")}, "neg_ratio"),
        ({"resample_negatives": "yes"}, "resample_negatives"),
        ({"max_norm": 0}, "max_norm"),
        ({"schedule": "cosine"}, "schedule"),
        ({"order": "blocked"}, "order"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"threads": -2}, "threads"),
        ({"seed": -1}, "seed"),
        ({"max_sampled": 0}, "max_sampled"),
        ({"init_scale": 0}, "init_scale"),
    ],
)
def test_bad_parameters_are_named_at_fit(data, params, name):
    model = Factorizer(**{**FAST, **params})  # the constructor only stores them
    with pytest.raises(InputError, match=name):
        model.fit(data)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([[1, 0], [0, 1]], "scipy.sparse"),
        (sp.csr_matrix((3, 4), dtype=np.float32), "no interactions"),
        (sp.csr_matrix(np.array([[np.nan, 1.0]])), "NaN"),
    ],
)
def test_bad_inputs_are_named(bad, message):
    with pytest.raises(InputError, match=message):
        Factorizer(**FAST).fit(bad)


def test_unfitted_model_says_so():
    with pytest.raises(InputError, match="not fitted"):
        Factorizer().recommend(0, None, filter_already_liked_items=False)


def test_sklearn_params_contract():
    model = Factorizer(factors=16, loss="bpr")
    params = model.get_params()
    assert params["factors"] == 16 and params["loss"] == "bpr"
    assert Factorizer(**params).get_params() == params
    assert model.set_params(factors=32, epochs=3) is model
    assert model.factors == 32 and model.epochs == 3
    with pytest.raises(InputError, match="learningrate"):
        model.set_params(learningrate=0.1)
    assert "factors=32" in repr(model)


def test_fold_in_recovers_a_training_users_preferences(data):
    model = Factorizer(
        loss="squared", factors=8, epochs=30, learning_rate=0.05, progress=False
    ).fit(data)
    folded = model.fold_in(data[[5, 45]])
    scores = folded @ model.item_factors_.T
    trained = model.user_factors_[[5, 45]] @ model.item_factors_.T
    for row in range(2):  # the same items rank on top as for the trained rows
        top_f = set(np.argsort(-scores[row])[:10])
        top_t = set(np.argsort(-trained[row])[:10])
        assert len(top_f & top_t) >= 7


def test_fold_in_does_not_depend_on_the_thread_count(data):
    import numba

    model = Factorizer(loss="bpr", factors=8, epochs=5, progress=False).fit(data)
    rows = data[::3]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = model.fold_in(rows)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = model.fold_in(rows)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_progress_bar_shows_running_loss(data, capsys):
    Factorizer(factors=4, epochs=2, progress=True).fit(data)
    err = capsys.readouterr().err
    assert "loss" in err


def test_defaults_are_resolved_once_into_the_effective_params(data, tmp_path):
    """The loss-specific defaults are resolved at fit into ``effective_params_``; the model
    file keeps the constructor's parameters as given and adds what ran."""
    warp = Factorizer(loss="warp", **FAST).fit(data)
    e = warp.effective_params_
    assert (e.optimizer, e.neg_weighting, e.learning_rate, e.schedule, e.max_norm) == (
        "adagrad",
        "uniform",
        0.03,
        "constant",
        None,
    )
    assert e.max_sampled == 50 and warp.max_sampled is None
    assert warp.optimizer is None and warp.get_params()["neg_weighting"] is None
    plain = Factorizer(loss="warp", optimizer="sgd", **FAST).fit(data).effective_params_
    assert (plain.learning_rate, plain.schedule, plain.max_norm) == (0.02, "linear", 1.0)
    squared = Factorizer(**FAST).fit(data).effective_params_
    assert (squared.optimizer, squared.neg_weighting, squared.resample_negatives) == (
        "adagrad",
        "log-popularity",
        True,
    )
    assert (squared.regularization, squared.neg_ratio, squared.learning_rate) == (0.02, 4.0, 0.1)
    assert Factorizer(loss="bpr", **FAST).fit(data).effective_params_.resample_negatives
    path = warp.save(tmp_path / "m.npz")
    _, header = load_artifact(path, "factor-model")
    assert header["params"]["optimizer"] is None
    assert header["effective_params"]["optimizer"] == "adagrad"
    assert header["effective_params"]["threads"] == warp.effective_params_.threads
    loaded = Factorizer.load(path)
    assert loaded.effective_params_ == e
    assert loaded.get_params() == warp.get_params()


def test_threads_above_the_cores_are_clamped_with_one_warning(data):
    n = available_threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = Factorizer(loss="bpr", threads=n + 3, **FAST).fit(data)
    clamped = [w for w in caught if issubclass(w.category, ThreadsWarning)]
    assert len(clamped) == 1  # once per fit, not once per epoch's resampling
    assert f"threads={n + 3}" in str(clamped[0].message) and f"using {n}" in str(clamped[0].message)
    assert model.effective_params_.threads == n


def test_negative_sampling_has_one_vocabulary_and_one_validator(data):
    """``neg_ratio``/``neg_weighting`` everywhere; the same spellings pass everywhere; the
    old names still work with a DeprecationWarning."""
    for spelling in ("log_popularity", "Log-Popularity"):
        model = Factorizer(neg_weighting=spelling, **FAST).fit(data)
        assert model.effective_params_.neg_weighting == "log-popularity"
        assert sample_negatives(data, neg_weighting=spelling).weighting == "log-popularity"
    for bad in ("log", None, 3):
        with pytest.raises(InputError, match="neg_weighting"):
            sample_negatives(data, neg_weighting=bad)
    with pytest.warns(DeprecationWarning, match="'neg_weight' is deprecated, use 'neg_weighting'"):
        old = Factorizer(neg_weight="uniform", **FAST)
    assert old.neg_weighting == "uniform" and "neg_weight" not in old.get_params()
    with pytest.warns(DeprecationWarning) as old_names:
        a = sample_negatives(data, ratio=1.0, weighting="uniform", seed=2)
    assert {str(w.message) for w in old_names} == {
        "sample_negatives: 'ratio' is deprecated, use 'neg_ratio'",
        "sample_negatives: 'weighting' is deprecated, use 'neg_weighting'",
    }
    b = sample_negatives(data, neg_ratio=1.0, neg_weighting="uniform", seed=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    with pytest.raises(TypeError, match="neg_wieght"):
        Factorizer(neg_wieght="uniform")


def test_models_saved_under_the_old_parameter_name_load(data, tmp_path):
    model = Factorizer(neg_weighting="uniform", **FAST).fit(data)
    arrays = model._artifact_arrays()
    params = {
        ("neg_weight" if k == "neg_weighting" else k): v for k, v in model.get_params().items()
    }
    save_artifact(
        tmp_path / "old.npz", "factor-model", arrays, {"model": "Factorizer", "params": params}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the user's old file is not their mistake: no warning
        loaded = Factorizer.load(tmp_path / "old.npz")
    assert loaded.neg_weighting == "uniform"
    assert loaded.effective_params_ is None  # written before effective parameters were saved
    np.testing.assert_array_equal(loaded.fold_in(data[:3]), model.fold_in(data[:3]))


def test_divergence_advice_names_the_callers_parameters():
    err = DivergenceError("training diverged in epoch 2", learning_rate=0.5, regularization=0.01)
    assert str(err) == (
        "training diverged in epoch 2: lower learning_rate (now 0.5) or raise "
        "regularization (now 0.01)"
    )
    assert err.advice({"learning_rate": "--lr", "regularization": "--reg"}).endswith(
        "lower --lr (now 0.5) or raise --reg (now 0.01)"
    )
