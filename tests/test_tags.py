"""TagModel (cfcore.tags): Denton et al.'s four models on data where the answer is known.

The synthetic set (cfcore.tagdata.synthetic_tags) puts on each example a tag that depends on
the item's topic *and* the user's group (gender × country): only the user-conditioned models
can get it right, the bilinear model can rank the item's topic first, and the frequency
baseline knows only the popular tags.
"""

from __future__ import annotations

import numpy as np
import pytest

from cfcore.errors import DivergenceError, InputError, ModelFormatError
from cfcore.tagdata import TagData, synthetic_tags
from cfcore.tags import TagModel, compare_models, evaluate_tags, per_tag_metrics, prepare_tags

FAST = dict(threads=1, progress=False, seed=0)


@pytest.fixture(scope="module")
def syn():
    return synthetic_tags(seed=0)


@pytest.fixture(scope="module")
def attrs(syn):
    return syn.user_attributes()


def _scores(results):
    return {r["model"]: r for r in results}


def test_user_conditioned_models_win_on_disjoint_users(syn, attrs):
    train, test = syn.data.split("users", 0.2, seed=0)
    r = _scores(compare_models(train, test, syn.item_vectors, attrs, **FAST))
    p1 = {m: r[m]["P@1"] for m in r}
    assert p1["frequency"] < 0.2 < p1["bilinear"] < 0.45  # the item's topic, not the group
    assert p1["user-biased"] > p1["bilinear"] + 0.2
    assert p1["3-way"] > p1["bilinear"] + 0.3
    for m in ("bilinear", "user-biased", "3-way"):
        assert r[m]["R@10"] > r["frequency"]["R@10"] + 0.4
        assert r[m]["A@10"] > r["frequency"]["A@10"] + 0.4
        assert r[m]["examples_per_s"] > 0 and r[m]["best_epoch"] >= 1
    assert r["3-way"]["examples"] == test.n_examples


def test_learned_user_embeddings_on_the_items_split(syn):
    train, test = syn.data.split("items", 0.2, seed=0)
    r = _scores(compare_models(train, test, syn.item_vectors, None, **FAST))
    p1 = {m: r[m]["P@1"] for m in r}
    assert p1["frequency"] < 0.2 < p1["bilinear"] < 0.45
    assert p1["user-biased"] > p1["bilinear"] + 0.3
    assert p1["3-way"] > p1["bilinear"] + 0.3


def test_balanced_distribution_flattens_the_baseline(syn, attrs):
    data = prepare_tags(syn.data, distribution="balanced", balance_top=10)
    train, test = data.split("users", 0.2, seed=0)
    r = _scores(
        compare_models(train, test, syn.item_vectors, attrs, ("frequency", "3-way"), **FAST)
    )
    assert r["frequency"]["P@1"] < 0.05  # popular tags are no longer a safe bet
    assert r["3-way"]["P@1"] > 0.7


def test_fit_is_reproducible_on_one_thread_and_records_its_schedule(syn, attrs):
    train = syn.data.split("users", 0.2, seed=0)[0]
    a = TagModel("user-biased", epochs=8, patience=1, **FAST).fit(train, syn.item_vectors, attrs)
    b = TagModel("user-biased", epochs=8, patience=1, **FAST).fit(train, syn.item_vectors, attrs)
    for x, y in zip(a.tables_, b.tables_, strict=True):
        np.testing.assert_array_equal(x, y)
    lrs = [h["lr"] for h in a.history_]
    assert lrs[0] == 0.01 and all(x >= y for x, y in zip(lrs, lrs[1:], strict=False))
    assert {"loss", "steps", "draws", "seconds", "examples_per_s", "P@1", "R@10"} <= set(
        a.history_[0]
    )
    assert 1 <= a.best_epoch_ <= len(a.history_)
    assert np.linalg.norm(a.tables_.V, axis=1).max() <= 1 + 1e-5
    assert np.linalg.norm(a.tables_.Q, axis=1).max() <= 1 + 1e-5


def test_predict_save_and_load(syn, attrs, tmp_path):
    model = TagModel("3-way", epochs=3, **FAST).fit(syn.data, syn.item_vectors, attrs)
    items, users = syn.data.items[:5], syn.data.users[:5]
    tags, scores = model.predict(
        items, users, item_vectors=syn.item_vectors, user_attributes=attrs, k=4
    )
    assert (
        tags.shape == (5, 4)
        and tags.dtype.kind == "U"
        and set(tags.ravel()) <= set(syn.data.tag_names)
    )
    assert np.all(np.diff(scores, axis=1) <= 0)
    full = model.score(items, users, item_vectors=syn.item_vectors, user_attributes=attrs)
    np.testing.assert_allclose(np.sort(full, axis=1)[:, ::-1][:, :4], scores, rtol=1e-6)
    path = model.save(tmp_path / "tags.npz")
    again = TagModel.load(path)
    assert again.get_params() == model.get_params()
    t2, s2 = again.predict(items, users, item_vectors=syn.item_vectors, user_attributes=attrs, k=4)
    np.testing.assert_array_equal(t2, tags)
    np.testing.assert_allclose(s2, scores, rtol=1e-6)
    with pytest.raises(ModelFormatError, match="tag-model"):
        TagModel.load(syn.item_vectors.save(tmp_path / "items.npz"))


def test_learned_embeddings_know_only_training_users(syn):
    train = syn.data.only(users=np.arange(1, 301))[0]
    model = TagModel("user-biased", epochs=2, **FAST).fit(train, syn.item_vectors)
    assert len(model.user_ids_) == 300
    with pytest.raises(InputError, match="user 301 has no learned embedding"):
        model.predict([1], [301], item_vectors=syn.item_vectors)
    with pytest.raises(InputError, match="needs a user per item"):
        model.predict([1], item_vectors=syn.item_vectors)
    bilinear = TagModel("bilinear", epochs=2, **FAST).fit(train, syn.item_vectors)
    assert bilinear.predict([1, 2], item_vectors=syn.item_vectors, k=3)[0].shape == (2, 3)


def test_per_tag_precision_and_recall(syn, attrs):
    train, test = syn.data.split("users", 0.2, seed=0)
    model = TagModel("frequency").fit(train)
    pt = per_tag_metrics(model, test, k=10)
    top = np.argsort(-model.tag_counts_)[:10]  # the baseline predicts exactly these
    assert np.all(pt["predicted"][top] == evaluate_tags(model, test)["examples"])
    assert np.all(pt["predicted"][np.setdiff1d(np.arange(model.n_tags), top)] == 0)
    np.testing.assert_allclose(pt["recall"][top], 1.0)
    counts = test.with_vocabulary(model.tag_names_).tag_counts()
    np.testing.assert_array_equal(pt["support"], counts)
    np.testing.assert_allclose(pt["precision"][top], counts[top] / pt["predicted"][top])


# ---------------------------------------------------------------------------- bad input
def test_an_item_without_a_descriptor_is_named(syn):
    vectors = syn.item_vectors
    few = type(vectors)(vectors.ids[:-3], vectors.vectors[:-3], vectors.meta)
    with pytest.raises(InputError, match=r"3 item\(s\) have no descriptor in synthetic"):
        TagModel("bilinear", **FAST).fit(syn.data, few)
    kept, dropped = syn.data.only(items=few.ids)
    assert dropped > 0
    TagModel("bilinear", epochs=1, **FAST).fit(kept, few)


def test_empty_vocabulary_and_bad_parameters(syn):
    empty = TagData(
        syn.data.tags[:, :0].tocsr(), syn.data.users, syn.data.items, syn.data.tag_names[:0]
    )
    with pytest.raises(InputError, match="empty vocabulary"):
        TagModel("bilinear", **FAST).fit(empty, syn.item_vectors)
    with pytest.raises(InputError, match="model: expected one of"):
        TagModel("4-way").fit(syn.data, syn.item_vectors)
    with pytest.raises(InputError, match="learning_rate"):
        TagModel("bilinear", learning_rate=-1).fit(syn.data, syn.item_vectors)
    with pytest.raises(InputError, match="needs item descriptors"):
        TagModel("bilinear", **FAST).fit(syn.data)
    with pytest.raises(InputError, match="not a parameter"):
        TagModel().set_params(width=3)


def test_users_missing_from_the_attribute_file(syn, attrs):
    part = type(attrs)(attrs.ids[:10], attrs.values[:10], attrs.encoder)
    with pytest.raises(InputError, match="not in the user attribute file"):
        TagModel("user-biased", **FAST).fit(syn.data, syn.item_vectors, part)


def test_a_dead_relu_layer_stops_the_fit(syn, attrs):
    with pytest.raises(DivergenceError, match="ReLU layer died"):
        TagModel("3-way", learning_rate=0.01, **FAST).fit(syn.data, syn.item_vectors, attrs)
