"""cfvision models, feature extraction, evaluation measures and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from cfcore.errors import InputError, ModelFormatError  # noqa: E402
from cfcore.interactions import Interactions  # noqa: E402
from cfcore.io import load_artifact  # noqa: E402
from cfcore.metrics import paired_bootstrap  # noqa: E402
from cfcore.vectors import load_vectors, save_vectors  # noqa: E402
from cfvision.cli import cli  # noqa: E402
from cfvision.data import load_image_index, prepare_images  # noqa: E402
from cfvision.evaluate import (  # noqa: E402
    compare_features,
    linear_probe,
    per_query_shared_viewers,
    retrieval_eval,
)
from cfvision.extract import extract_features  # noqa: E402
from cfvision.models import build_model  # noqa: E402


@pytest.fixture()
def images(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        a = np.array([(200, 40, 40), (40, 40, 200)][i % 2])[None, None] + rng.normal(
            0, 30, (18, 22, 3)
        )
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(d / f"{i}.png")
    (tmp_path / "labels.csv").write_text(
        "item_id,label\n" + "".join(f"{i},{i % 2}\n" for i in range(40))
    )
    return d


# ----------------------------------------------------------------------------- models
@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,dim",
    [
        ("alexnet", 4096),
        ("resnet18", 512),
        ("mobilenet_v3_small", 1024),
        ("regnet_y_400mf", 440),
        ("small", 128),
    ],
)
def test_backbones_give_penultimate_features_and_k_logits(arch, dim):
    torch.manual_seed(0)
    model = build_model(arch, 7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f, logits = model.features(x), model(x)
    assert tuple(f.shape) == (2, dim) and model.feature_dim == dim
    assert tuple(logits.shape) == (2, 7) and model.num_classes == 7
    with torch.no_grad():  # forward = head(features): the features are the penultimate layer
        assert torch.allclose(model.head(f), logits)


def test_local_weights_are_loaded_and_checked(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    ref = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    model = build_model("resnet18", 5, path)
    assert torch.equal(model.trunk.conv1.weight, ref.conv1.weight)
    assert model.head[1].out_features == 5  # the 1000-way ImageNet layer was replaced
    with pytest.raises(ModelFormatError, match="no tensor matches"):
        build_model("alexnet", 5, path)
    with pytest.raises(InputError, match="no such file"):
        build_model("resnet18", 5, tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ModelFormatError, match="not a torch weights file: it is a text file"):
        build_model("resnet18", 5, tmp_path / "junk.pth")
    (tmp_path / "evil.pth").write_bytes(b"\x80\x02cos\nsystem\n.")  # a pickle, not tensors
    with pytest.raises(ModelFormatError, match="cannot be read with weights_only=True") as err:
        build_model("resnet18", 5, tmp_path / "evil.pth")
    assert "weights_only=False" not in str(err.value)  # never suggest unsafe loading


# ----------------------------------------------------------------------------- extraction
def test_extracted_features_are_l2_normalised_rows_in_item_order(tmp_path, images):
    torch.manual_seed(0)
    model = build_model("small", 3)
    index = load_image_index(images)
    got = prepare_images(index, ["3", "0", "17", "5"], 18, tmp_path / "cache")
    assert got.item_ids.tolist() == [3, 0, 17, 5]
    feats = extract_features(model, got, 16, batch_size=3, progress=False)
    assert feats.shape == (4, 128) and feats.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    alone = extract_features(model, prepare_images(index, [17], 18, tmp_path / "cache"), 16)
    assert np.allclose(alone[0], feats[2], atol=1e-5)  # eval mode: no batch or order effects
    path = save_vectors(tmp_path / "v.npz", got.item_ids, feats, {"arch": "small"})
    vectors = load_vectors(path)
    assert vectors.meta["arch"] == "small" and vectors.meta["kind"] == "item-vectors"
    assert vectors.ids.tolist() == [3, 0, 17, 5] and vectors.vectors.shape == (4, 128)


# ----------------------------------------------------------------------------- measures
@pytest.mark.slow
def test_linear_probe_separates_what_is_separable_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    centers = rng.normal(0, 1, (3, 16))
    x = centers[y] + rng.normal(0, 0.3, (300, 16))
    good = linear_probe(x, y)
    assert good.metric == "accuracy" and good.score > 0.95 and good.n_test == 60
    noise = linear_probe(rng.normal(0, 1, (300, 16)), y)
    assert noise.score < 0.55
    multi = (x[:, :4] > 0).astype(np.float32)  # labels linear in the features
    res = linear_probe(x, multi, multilabel=True)
    assert res.metric == "mAP" and res.score > 0.9


def _planted_views(n_items=60, n_users=80, groups=3, seed=0):
    """Users view (mostly) the items of one group: group-mates share viewers."""
    rng = np.random.default_rng(seed)
    item_group = np.arange(n_items) % groups
    rows, cols = [], []
    for u in range(n_users):
        g = u % groups
        for i in range(n_items):
            p = 0.5 if item_group[i] == g else 0.03
            if rng.random() < p:
                rows.append(u)
                cols.append(i)
    inter = Interactions.from_pairs(np.array(rows), np.array(cols) + 100)  # item ids 100..
    return inter, item_group


def test_compare_features_ranks_informative_features_above_noise(tmp_path):
    inter, group = _planted_views()
    rng = np.random.default_rng(1)
    ids = np.arange(len(group)) + 100
    informative = np.eye(3)[group] + rng.normal(0, 0.1, (len(group), 3))
    noise = rng.normal(0, 1, (len(group), 3))
    labels = tmp_path / "groups.csv"
    labels.write_text(
        "item_id,label\n" + "".join(f"{i},{g}\n" for i, g in zip(ids, group, strict=True))
    )
    out = compare_features(
        [("informative", ids, informative), ("noise", ids, noise)],
        inter,
        test_fraction=0.25,
        R=10,
        labels=labels,
        seed=0,
        plot=tmp_path / "c.png",
    )
    good, bad = out["results"]["informative"], out["results"]["noise"]
    assert out["queries"] == 15
    assert (
        good["summary"]["shared_viewers_mean"] > 1.5 * good["summary"]["shared_viewers_random_mean"]
    )
    assert good["summary"]["shared_viewers_mean"] > bad["summary"]["shared_viewers_mean"]
    assert good["probe"]["score"] > 0.9 > bad["probe"]["score"]
    pg, pb = out["probes"]["informative"], out["probes"]["noise"]
    assert np.array_equal(pg.test_rows, pb.test_rows)  # the same probe split for every set
    assert np.array_equal(pg.test_targets, pb.test_targets) and pg.test_scores.shape == (12, 3)

    def accuracy(y, s):
        return float((s.argmax(axis=1) == y).mean())

    assert accuracy(pg.test_targets, pg.test_scores) == pytest.approx(pg.score)
    gain = paired_bootstrap(accuracy, pg.test_scores, pb.test_scores, pg.test_targets)
    assert gain.difference == pytest.approx(pg.score - pb.score) and gain.low > 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    query = np.zeros(len(ids), dtype=bool)
    query[::4] = True
    per_q = per_query_shared_viewers(ids, informative, query, inter, R=10)
    rep = retrieval_eval(ids, informative, query, inter, R=10)
    assert per_q.shape == (15,)
    assert per_q.mean() == pytest.approx(rep.summary()["shared_viewers_mean"])
    gain, low, high, p = paired_bootstrap(
        np.mean, per_q, per_query_shared_viewers(ids, noise, query, inter, R=10)
    )
    assert 0 < low < gain < high and p < 0.05
    with pytest.raises(InputError, match="same dataset"):
        compare_features([("x", ["a", "b"], noise[:2])], inter)


# ----------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_train_extract_evaluate_end_to_end(tmp_path, images):
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(
        cli,
        [
            "train",
            str(images),
            str(tmp_path / "labels.csv"),
            "-o",
            str(run),
            "--arch",
            "small",
            "--image-size",
            "16",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (run / "checkpoint.pt").exists() and "checkpoint:" in res.output
    res = runner.invoke(
        cli,
        [
            "extract",
            str(images),
            "--checkpoint",
            str(run / "checkpoint.pt"),
            "-o",
            str(tmp_path / "learned.npz"),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        cli,
        [
            "extract",
            str(images),
            "--arch",
            "small",
            "--image-size",
            "16",
            "-o",
            str(tmp_path / "random.npz"),
            "--quiet",
            "--seed",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    arrays, header = load_artifact(tmp_path / "learned.npz", "item-vectors")
    assert arrays["vectors"].shape == (40, 128) and header["image_size"] == 16
    views = tmp_path / "views.csv"
    rng = np.random.default_rng(0)
    views.write_text(
        "user,item\n"
        + "".join(f"{u},{i}\n" for u in range(30) for i in range(40) if rng.random() < 0.3)
    )
    res = runner.invoke(
        cli,
        [
            "evaluate",
            str(tmp_path / "learned.npz"),
            str(tmp_path / "random.npz"),
            "--interactions",
            str(views),
            "--test-fraction",
            "0.25",
            "-R",
            "5",
            "--labels",
            str(tmp_path / "labels.csv"),
            "-o",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["queries"] == 10 and len(report["results"]) == 2
    assert "probe" in report["results"][str(tmp_path / "learned.npz")]


def test_cli_errors_are_one_line(tmp_path, images):
    runner = CliRunner()
    labels = tmp_path / "labels.csv"

    def fails(args, pattern):
        res = runner.invoke(cli, args)
        assert res.exit_code == 1, res.output
        last = res.output.strip().splitlines()[-1]
        assert "Traceback" not in res.output and last.startswith("Error: "), res.output
        assert pattern in last, res.output

    base = ["--arch", "small", "--image-size", "16", "--epochs", "1", "--quiet"]
    fails(
        ["train", str(tmp_path / "nope"), str(labels), "-o", str(tmp_path / "r"), *base],
        "no such file or folder",
    )
    fails(
        ["train", str(images), str(tmp_path / "missing.csv"), "-o", str(tmp_path / "r"), *base],
        "no such file, and not a dataset name",
    )
    other = tmp_path / "other.csv"
    other.write_text("item_id,label\n5001,0\n5002,1\n")
    fails(["train", str(images), str(other), "-o", str(tmp_path / "r"), *base], "same dataset")
    assert (
        runner.invoke(
            cli, ["train", str(images), str(labels), "-o", str(tmp_path / "r"), *base]
        ).exit_code
        == 0
    )
    three = tmp_path / "three.csv"
    three.write_text("item_id,label\n" + "".join(f"{i},{i % 3}\n" for i in range(40)))
    fails(
        ["train", str(images), str(three), "-o", str(tmp_path / "r"), "--resume", *base],
        "K = 2 classes",
    )
    fails(["extract", str(images), "-o", str(tmp_path / "f.npz")], "exactly one of --checkpoint")
    fails(
        ["extract", str(images), "--checkpoint", str(labels), "-o", str(tmp_path / "f.npz")],
        "not a cfvision checkpoint: it is a text file (first line: 'item_id,label')",
    )
    fails(
        ["extract", str(images), "--checkpoint", str(other), "-o", str(tmp_path / "f.npz")],
        "not a cfvision checkpoint: it is a text file",
    )
    fails(["evaluate", str(tmp_path / "none.npz"), "--interactions", str(labels)], "no such file")
    res = runner.invoke(cli, ["train", "--help"])
    assert res.exit_code == 0 and "--resume" in res.output


@pytest.mark.realdata
@pytest.mark.slow
def test_cli_on_the_posters_needs_the_id_space_and_reads_genres_directly(
    tmp_path, posters_path, ml100k_path, ml_latest_small_path
):
    runner = CliRunner()
    data = ["--data-dir", str(posters_path.parent)]
    base = ["--arch", "small", "--image-size", "16", "--epochs", "1", "--quiet", *data]
    res = runner.invoke(
        cli, ["train", "movielens-posters", "ml-100k", "-o", str(tmp_path / "a"), *base]
    )
    assert res.exit_code == 1 and "choose --id-space ml-100k" in res.output
    assert (
        "of 1,680 labelled items, 1,661 as ml-100k ids and 1,629 as movielens ids" in res.output
    )  # the hint says which
    # ml-latest-small ids on the ml-100k id space: the silent mismatch, now refused
    res = runner.invoke(
        cli,
        [
            "train",
            "movielens-posters",
            "ml-latest-small",
            "-o",
            str(tmp_path / "b"),
            *base,
            "--id-space",
            "ml-100k",
        ],
    )
    assert res.exit_code == 1 and "--allow-partial" in res.output, res.output
    assert "as movielens ids" in res.output
    # the right id space: genres of u.item straight from the dataset name
    run = tmp_path / "run"
    res = runner.invoke(
        cli,
        ["train", "movielens-posters", "ml-100k", "-o", str(run), *base, "--id-space", "ml-100k"],
    )
    assert res.exit_code == 0, res.output
    assert (
        (run / "image_report.txt")
        .read_text()
        .splitlines()[1]
        .startswith("1,680 labelled items: 1,661 with an image")
    )
    res = runner.invoke(  # the id space and image size come from the checkpoint
        cli,
        [
            "extract",
            "movielens-posters",
            "--checkpoint",
            str(run / "checkpoint.pt"),
            "-o",
            str(tmp_path / "learned.npz"),
            "--quiet",
            *data,
        ],
    )
    assert res.exit_code == 0, res.output
    vectors = load_vectors(tmp_path / "learned.npz")
    assert (
        len(vectors) == 1661 and vectors.ids.dtype == np.int64 and vectors.meta["image_size"] == 16
    )
    res = runner.invoke(
        cli,
        [
            "evaluate",
            str(tmp_path / "learned.npz"),
            "--interactions",
            "ml-100k",
            "--labels",
            "ml-100k",
            "-R",
            "10",
            *data,
            "-o",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    entry = report["results"][str(tmp_path / "learned.npz")]
    assert entry["probe"]["metric"] == "mAP" and "genre_agreement@1" in entry["summary"]
