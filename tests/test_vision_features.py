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
from cfvision.cli import cli  # noqa: E402
from cfvision.data import load_image_index  # noqa: E402
from cfvision.evaluate import (  # noqa: E402
    average_precision,
    compare_features,
    linear_probe,
    paired_bootstrap,
    per_query_shared_viewers,
    retrieval_eval,
)
from cfvision.extract import extract_features, save_item_vectors  # noqa: E402
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
    with pytest.raises(ModelFormatError, match="not a file written by torch.save"):
        build_model("resnet18", 5, tmp_path / "junk.pth")
    torch.save({"conv1.weight": ref.conv1.weight, "hook": print}, tmp_path / "code.pth")
    with pytest.raises(ModelFormatError, match="pickled Python objects") as err:
        build_model("resnet18", 5, tmp_path / "code.pth")
    assert "weights_only=False" not in str(err.value)  # never advise running the file's code
    assert "False" not in str(err.value)


# ----------------------------------------------------------------------------- extraction
def test_extracted_features_are_l2_normalised_rows_in_item_order(tmp_path, images):
    torch.manual_seed(0)
    model = build_model("small", 3)
    index = load_image_index(images)
    items = ["3", "0", "17", "5"]
    feats = extract_features(model, items, index, 16, batch_size=3, progress=False)
    assert feats.shape == (4, 128) and feats.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    alone = extract_features(model, ["17"], index, 16, progress=False)
    assert np.allclose(alone[0], feats[2], atol=1e-5)  # eval mode: no batch or order effects
    path = save_item_vectors(tmp_path / "v.npz", items, feats, {"arch": "small"})
    arrays, header = load_artifact(path, "item-vectors")
    assert header["arch"] == "small" and header["normalized"] is True
    assert arrays["item_ids"].tolist() == [3, 0, 17, 5] and arrays["vectors"].shape == (4, 128)


# ----------------------------------------------------------------------------- measures
def test_average_precision_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = (rng.random((50, 4)) < 0.3).astype(int)
    s = rng.random((50, 4))
    ap = average_precision(y, s)
    for c in range(4):
        assert ap[c] == pytest.approx(sklearn.average_precision_score(y[:, c], s[:, c]))


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
    ids = [str(i + 100) for i in range(len(group))]
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
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    query = np.zeros(len(ids), dtype=bool)
    query[::4] = True
    per_q = per_query_shared_viewers(ids, informative, query, inter, R=10)
    rep = retrieval_eval(ids, informative, query, inter, R=10)
    assert per_q.shape == (15,)
    assert per_q.mean() == pytest.approx(rep.summary()["shared_viewers_mean"])
    gain, low, high = paired_bootstrap(
        per_q, per_query_shared_viewers(ids, noise, query, inter, R=10)
    )
    assert 0 < low < gain < high
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
        "labels file",
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
        "not a cfvision checkpoint",
    )
    fails(["evaluate", str(tmp_path / "none.npz"), "--interactions", str(labels)], "no such file")
    res = runner.invoke(cli, ["train", "--help"])
    assert res.exit_code == 0 and "--resume" in res.output
