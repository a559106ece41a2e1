"""Collaborative image understanding (Bibas et al. 2022): losses, weights, protocol, runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from cfcore.errors import InputError  # noqa: E402
from cfvision.cf2label import (  # noqa: E402
    CF2LabelConfig,
    fit_cf2label,
    loss_confidence,
    popularity_scores,
    positive_label_loss,
)
from cfvision.multitask import (  # noqa: E402
    EXP_LINEAR_FROM,
    MultitaskConfig,
    MultitaskObjective,
    TripletSampler,
    cf_targets,
    class_balanced_bce,
    class_weights,
    confidence_weights,
    load_scores,
    nearest_neighbours,
    reconstruction_loss,
    train_multitask,
    triplet_loss,
)
from cfvision.protocol import TEST, TRAIN, VAL, keep_labels, make_split, read_split  # noqa: E402


# ----------------------------------------------------------------------------- losses
def test_class_weights_are_inverse_frequencies_with_mean_one():
    w = class_weights([1, 2, 4])
    assert w == pytest.approx(np.array([1, 0.5, 0.25]) / (1.75 / 3))
    assert w.mean() == pytest.approx(1.0)
    # a class without a training positive weighs as one seen once, not infinitely
    w0 = class_weights([0, 1, 4])
    assert np.isfinite(w0).all() and w0[0] == pytest.approx(w0[1])


def test_class_balanced_bce_matches_a_hand_computation():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([0.5, 1.5])
    got = class_balanced_bce(logits, y, w)

    def sig(z):
        return 1 / (1 + math.exp(-z))

    item0 = -(0.5 * math.log(sig(0.0)) + 1.5 * math.log(1 - sig(2.0)))
    item1 = -(0.5 * math.log(1 - sig(-1.0)) + 1.5 * math.log(sig(3.0)))
    assert got.tolist() == pytest.approx([item0, item1], rel=1e-5)


def test_reconstruction_loss_is_exp_of_l1_plus_l2_with_a_linear_tail():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.zeros(2, 2)
    d = 0.1 * (3 + math.sqrt(5))
    assert reconstruction_loss(pred, target, kappa=0.1).tolist() == pytest.approx(
        [math.exp(d), 1.0], rel=1e-6
    )
    # past d = 5 the loss grows linearly with the slope it has at 5 (value and slope continuous)
    c = EXP_LINEAR_FROM
    far = torch.tensor([[10.0, 0.0]])  # L1 = L2 = 10: d = 20
    assert reconstruction_loss(far, torch.zeros(1, 2)).item() == pytest.approx(
        math.exp(c) * (1 + 20 - c), rel=1e-6
    )
    eps = 1e-4
    below = reconstruction_loss(torch.tensor([[c / 2 - eps, 0.0]]), torch.zeros(1, 2)).item()
    above = reconstruction_loss(torch.tensor([[c / 2 + eps, 0.0]]), torch.zeros(1, 2)).item()
    assert above - below == pytest.approx(math.exp(c) * 4 * eps, rel=1e-2)


@pytest.mark.parametrize("size", [1e3, 1e30, 3e38])
def test_reconstruction_loss_and_gradient_stay_finite_with_huge_cf_errors(size):
    pred = torch.full((3, 64), size, requires_grad=True)
    target = torch.randn(3, 64)
    for kappa in (1.0, 1 / 59):
        loss = reconstruction_loss(pred, target, kappa)
        assert torch.isfinite(loss).all() and (loss > 0).all()
        (grad,) = torch.autograd.grad(loss.sum(), pred)
        assert torch.isfinite(grad).all()
        assert grad.abs().max() <= 2 * kappa * math.exp(EXP_LINEAR_FROM) + 1e-3
    # through the whole objective too: weighted, averaged, added to the main loss
    objective = MultitaskObjective(torch.ones(2), alpha=1.5, kappa=1 / 59)
    out = {"logits": torch.zeros(3, 2, requires_grad=True), "cf": pred}
    y = {
        "labels": torch.ones(3, 2),
        "labelled": torch.ones(3),
        "cf": target,
        "weight": torch.tensor([5.0, 1.0, 0.0]),
    }
    total = objective.loss(out, y)
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(pred.grad).all()


def test_triplet_loss_matches_a_hand_computation_on_normalised_rows():
    a = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    n = torch.tensor([[0.0, 1.0], [5.0, 0.0]])
    got = triplet_loss(a, p, n, margin=0.2)
    assert got.tolist() == pytest.approx([0.0, math.sqrt(2) + 0.2], rel=1e-6)


def test_objective_trains_the_cf_head_on_unlabelled_items_and_the_labels_on_labelled_ones():
    objective = MultitaskObjective(torch.tensor([1.0, 1.0]), alpha=2.0, kappa=0.5)
    logits = torch.zeros(3, 2, requires_grad=True)
    cf = torch.zeros(3, 4, requires_grad=True)
    y = {
        "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
        "labelled": torch.tensor([1.0, 1.0, 0.0]),  # item 2 has no (kept) label
        "cf": torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]),
        "weight": torch.tensor([1.0, 0.0, 2.0]),  # item 1 has no CF vector
    }
    out = {"logits": logits, "cf": cf}
    total = objective.loss(out, y)
    main = class_balanced_bce(logits[:2], y["labels"][:2], torch.ones(2)).mean()
    per = reconstruction_loss(cf, y["cf"], 0.5)
    aux = (1.0 * per[0] + 2.0 * per[2]) / 2  # averaged over the items with a vector
    assert total.item() == pytest.approx((main + 2.0 * aux).item(), rel=1e-6)
    total.backward()
    assert logits.grad[2].abs().sum() == 0  # no label: the label head gets nothing
    assert cf.grad[2].abs().sum() > 0  # ... but the CF head trains on it
    assert cf.grad[1].abs().sum() == 0  # no CF vector: the CF head gets nothing
    assert logits.grad[1].abs().sum() > 0


# ----------------------------------------------------------------------------- weights
def test_uniform_and_interaction_confidences_are_normalised_and_capped():
    has = np.array([True, True, True, True, False])
    assert confidence_weights("uniform", has).tolist() == [1, 1, 1, 1, 0]
    w = confidence_weights("interactions", has, n_users=np.array([1, 4, 9, 100, 7]), cap=2.0)
    # √|U| = 1, 2, 3, 10 (mean 4) → 0.25, 0.5, 0.75, 2.5 → capped at Ω = 2
    assert w == pytest.approx([0.25, 0.5, 0.75, 2.0, 0.0])
    with pytest.raises(InputError, match="confidence must be one of"):
        confidence_weights("bogus", has)


def test_positive_label_loss_matches_a_hand_computation():
    logits = np.array([[0.0, 2.0, -1.0], [1.0, 1.0, 1.0]])
    y = np.array([[1, 1, 0], [0, 0, 0]])
    got = positive_label_loss(logits, y)
    want = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert got[0] == pytest.approx(want)
    assert np.isnan(got[1])  # no positive label: undefined


def _informative_and_noise(n=240, k=3, seed=0):
    """Half the items have a CF vector that encodes their class, half pure noise."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, k, n)
    y = np.eye(k, dtype=np.float32)[cls]
    q = rng.normal(0, 1, (n, 8)).astype(np.float32)
    good = np.arange(n) < n // 2
    q[good, :k] += 4 * y[good]
    return q, y, good


def test_loss_confidence_trusts_vectors_that_predict_their_labels():
    q, y, good = _informative_and_noise()
    omega = loss_confidence(q, y, folds=4, cfg=CF2LabelConfig(max_epochs=200))
    assert np.isfinite(omega).all()
    assert np.median(omega[good]) > 2 * np.median(omega[~good])
    w = confidence_weights("loss", np.ones(len(q), bool), None, q, y, np.ones(len(q), bool), 5.0)
    assert w.max() <= 5.0 and w[good].mean() > w[~good].mean()


def test_cf2label_beats_popularity_on_informative_vectors():
    from cfcore.metrics import mean_average_precision

    q, y, good = _informative_and_noise(seed=1)
    q, y = q[good], y[good]
    model = fit_cf2label(q[:80], y[:80])
    s = model.predict(q[80:])
    assert mean_average_precision(y[80:], s) > 0.9
    pop = popularity_scores(y[:80], 40)
    assert mean_average_precision(y[80:], pop) < 0.5


def test_label_ratio_keeps_a_seeded_nested_fraction():
    a = keep_labels(100, 0.2, seed=3)
    assert a.sum() == 20
    assert np.array_equal(a, keep_labels(100, 0.2, seed=3))
    assert not np.array_equal(a, keep_labels(100, 0.2, seed=4))
    half = keep_labels(100, 0.5, seed=3)
    assert half.sum() == 50 and np.all(half[a])  # smaller ratios keep subsets
    assert keep_labels(100, 1.0, seed=3).all()
    assert keep_labels(7, 0.1, seed=0).sum() == 1  # ⌈0.7⌉
    with pytest.raises(InputError, match="label_ratio"):
        keep_labels(10, 0.0)


def test_cf_targets_have_unit_mean_distance_in_the_papers_units():
    rng = np.random.default_rng(0)
    q = rng.normal(3, 2, (50, 16)).astype(np.float32)
    for standardize in (False, True):
        z, kappa, _ = cf_targets(q, np.arange(40), standardize)
        fit = z[:40].astype(np.float64)
        assert np.abs(fit.mean(axis=0)).max() < 1e-5
        dist = kappa * (np.abs(fit).sum(axis=1) + np.linalg.norm(fit, axis=1))
        assert dist.mean() == pytest.approx(1.0, rel=1e-5)
        assert np.sqrt((fit**2).mean()) == pytest.approx(1.0, rel=1e-4)


def test_split_holds_out_a_seeded_fraction_half_val_half_test(tmp_path):
    ids = np.arange(100, 200)
    split = make_split(ids[::-1], 0.3, seed=5)  # the order of the ids does not matter
    assert (split.part == TRAIN).sum() == 70
    assert (split.part == VAL).sum() == 15 and (split.part == TEST).sum() == 15
    same = make_split(ids, 0.3, seed=5)
    assert np.array_equal(split.item_ids, same.item_ids) and np.array_equal(split.part, same.part)
    back = read_split(split.save(tmp_path / "split.csv"))
    assert np.array_equal(back.part, split.part) and np.array_equal(back.item_ids, ids)


def test_nearest_neighbours_and_triplet_sampler():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    rows = np.arange(0, 30, 2)  # odd rows have no vector
    nn = nearest_neighbours(x, rows, chunk=4)
    for r in rows:
        d = np.linalg.norm(x[rows] - x[r], axis=1)
        d[rows == r] = np.inf
        assert nn[r] == rows[d.argmin()]
    assert (nn[1::2] == -1).all()
    sampler = TripletSampler(list(range(30)), nn, rows, seed=1)
    draws = np.array(list(sampler)).reshape(-1, 3)
    assert len(sampler) == 90 and sorted(draws[:, 0]) == list(range(30))
    with_vector = draws[draws[:, 0] % 2 == 0]
    assert (with_vector[:, 1] == nn[with_vector[:, 0]]).all()
    assert np.isin(with_vector[:, 2], rows).all()
    alone = draws[draws[:, 0] % 2 == 1]
    assert (alone[:, 1] == alone[:, 0]).all() and (alone[:, 2] == alone[:, 0]).all()
    assert np.array_equal(np.array(list(sampler)), np.array(list(sampler)))  # seeded per epoch


# ----------------------------------------------------------------------------- runs
COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]


def make_collab_data(root, n=72, n_users=40, seed=0):
    """Images coloured by class, multi-label genres, and users who each like one class."""
    rng = np.random.default_rng(seed)
    img = root / "img"
    img.mkdir(parents=True)
    label_rows = []
    for i in range(n):
        c = i % 3
        a = (np.array(COLORS[c])[None, None, :] + rng.normal(0, 30, (18, 18, 3))).clip(0, 255)
        Image.fromarray(a.astype(np.uint8)).save(img / f"{i}.png")
        extra = "|x" if i % 4 == 0 else ""
        if i % 9 != 8:  # every ninth item has no label: it still trains the CF head
            label_rows.append(f"{i},c{c}{extra}")
    (root / "labels.csv").write_text("item_id,labels\n" + "\n".join(label_rows) + "\n")
    pairs = []
    for u in range(n_users):
        liked = u % 3
        for i in range(n):
            if rng.random() < (0.6 if i % 3 == liked else 0.05):
                pairs.append(f"{u},{i}")
    (root / "views.csv").write_text("user_id,item_id\n" + "\n".join(pairs) + "\n")
    return root


@pytest.fixture()
def collab(tmp_path):
    return make_collab_data(tmp_path)


def mt_config(root, **kw):
    base = dict(
        images=str(root / "img"),
        labels=str(root / "labels.csv"),
        interactions=str(root / "views.csv"),
        output=str(root / "run"),
        arch="small",
        image_size=16,
        epochs=2,
        batch_size=16,
        lr=0.02,
        factors=8,
        cf_epochs=10,
        device="cpu",
        progress=False,
        seed=0,
        cache_dir=str(root / "cache"),
        n_boot=50,
    )
    return MultitaskConfig(**{**base, **kw})


def test_mtl_run_writes_its_protocol_scores_and_result(collab):
    torch.set_num_threads(1)
    r = train_multitask(mt_config(collab, epochs=3, label_ratio=0.5), log=None)
    run = collab / "run"
    split = read_split(run / "split.csv")
    assert (split.part != TRAIN).sum() == round(64 * 0.3)  # 64 labelled items held out 30%
    res = json.loads((run / "result.json").read_text())
    assert 0 < res["test_map"] <= 1 and res["test_map_ci"][0] <= res["test_map"]
    assert res["classes_evaluated"] >= 3 and res["variant"] == "mtl-uniform"
    # the label ratio drops half the labels but every item with a vector still trains
    assert res["n_train_labelled"] < res["n_train_images"] == res["n_train_vectors"]
    ids, scores, targets, header = load_scores(run / "test_scores.npz")
    assert len(ids) == res["n_test"] == scores.shape[0] and header["variant"] == "mtl-uniform"
    # the CF model never saw a held-out item
    from cfcore.vectors import load_vectors

    known = load_vectors(run / "cf_model.npz").ids
    assert not np.isin(split.held_out, known).any()
    hist = r.history
    assert hist[-1]["train_aux"] < hist[0]["train_aux"]  # the reconstruction improves
    assert {"val_map", "train_main", "train_aux"} <= set(hist[-1])
    with pytest.raises(InputError, match="--resume"):
        train_multitask(mt_config(collab), log=None)


def test_sequential_run_resumes_in_either_phase_to_the_same_weights(collab):
    torch.set_num_threads(1)
    full = train_multitask(
        mt_config(collab, method="sequential", output=str(collab / "a")), log=None
    )

    class Stop(Exception):
        pass

    def stop_in_phase_one(epoch, step):
        if epoch == 1 and step == 2:
            raise Stop

    cfg = mt_config(collab, method="sequential", output=str(collab / "b"))
    with pytest.raises(Stop):
        train_multitask(cfg, on_batch=stop_in_phase_one, log=None)
    assert (collab / "b" / "aux" / "checkpoint.pt").exists()
    assert not (collab / "b" / "checkpoint.pt").exists()
    resumed = train_multitask(
        mt_config(collab, method="sequential", output=str(collab / "b"), resume=True), log=None
    )
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.result["test_map"] == full.result["test_map"]


def test_contrastive_and_loss_confidence_runs(collab):
    torch.set_num_threads(1)
    c = train_multitask(mt_config(collab, method="contrastive", output=str(collab / "c")), log=None)
    assert c.history[-1]["train_aux"] > 0  # triplets were formed
    m = train_multitask(mt_config(collab, confidence="loss", output=str(collab / "m")), log=None)
    w = m.data.weight
    assert w.max() <= 5.0 and (w[m.data.items.has_vector] > 0).all()
    # items missing from the labels file (every ninth) train the CF head only
    items = m.data.items
    unlabelled = np.flatnonzero((items.part == TRAIN) & ~items.labelled)
    assert len(unlabelled) > 0 and np.isin(unlabelled, m.data.train_rows).all()
    assert m.result["n_train_images"] > m.result["n_train_labelled"]
    # both runs share the split: their test items pair up
    assert np.array_equal(
        load_scores(collab / "c" / "test_scores.npz")[0],
        load_scores(collab / "m" / "test_scores.npz")[0],
    )


def test_a_cf_model_that_saw_held_out_items_is_refused(collab):
    from cfcore.datasets import load_interactions
    from cfvision.protocol import fit_cf_model

    leaky = fit_cf_model(load_interactions(str(collab / "views.csv")), [], 8, "bpr", 5)
    leaky.save(collab / "leaky.npz")
    with pytest.raises(InputError, match="held-out item"):
        train_multitask(mt_config(collab, cf_model=str(collab / "leaky.npz")), log=None)


def test_interactions_from_another_id_space_are_refused(collab):
    (collab / "other.csv").write_text("user_id,item_id\n1,9001\n2,9002\n1,9003\n")
    with pytest.raises(InputError, match="same item ids"):
        train_multitask(mt_config(collab, interactions=str(collab / "other.csv")), log=None)


def test_image_only_ignores_the_cf_vectors(collab):
    torch.set_num_threads(1)
    r = train_multitask(mt_config(collab, method="image-only"), log=None)
    assert r.result["n_train_vectors"] == 0
    assert r.result["n_train_images"] == r.result["n_train_labelled"]
    assert all(h["train_aux"] == 0 for h in r.history)


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_cf2label_on_ml100k_genres_doubles_the_popularity_baseline(ml100k, ml100k_path):
    """The paper's pre-study (Table 4: 0.465 vs 0.107 on ML-10M with BPR vectors)."""
    from cfcore.factorize import Factorizer
    from cfcore.labels import read_labels
    from cfvision.cf2label import cf2label_study

    torch.set_num_threads(1)
    model = Factorizer(factors=64, loss="bpr", epochs=20, threads=1, seed=0, progress=False)
    model.fit(ml100k)
    labels = read_labels(ml100k_path / "u.item")
    _, study = cf2label_study(model, labels, test_frac=0.3, seed=0, n_boot=200)
    assert study.n_test == round(0.3 * 1680)
    assert study.map >= 2 * study.popularity_map
    assert study.map_ci[0] > study.popularity_ci[1]  # apart beyond the noise
    assert study.p_value < 0.01
