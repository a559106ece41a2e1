"""``cfcore tags train | predict | evaluate`` end to end, on synthetic files and ml-latest-small."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cfcore.cli.main import cli
from cfcore.tagdata import synthetic_tags

QUICK = ["--epochs", "6", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("syn")
    return synthetic_tags(n_users=300, n_items=200, per_user=10, seed=2).save(folder)


def run(*args):
    return CliRunner().invoke(cli, ["tags", *map(str, args)])


def test_evaluate_prints_one_row_per_model_and_writes_json(files, tmp_path):
    out, per_tag = tmp_path / "r.json", tmp_path / "per_tag.csv"
    r = run(
        "evaluate",
        files["tags"],
        "--items",
        files["items"],
        "--users",
        files["users"],
        "--split",
        "users",
        "--json",
        out,
        "--per-tag",
        per_tag,
        *QUICK,
    )
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert list(rows) == ["frequency", "bilinear", "user-biased", "3-way"]
    doc = json.loads(out.read_text())
    res = {x["model"]: x for x in doc["results"]}
    assert float(rows["3-way"][1]) == pytest.approx(res["3-way"]["P@1"], abs=1e-4)
    assert res["3-way"]["P@1"] > res["bilinear"]["P@1"] > res["frequency"]["P@1"]
    assert doc["settings"]["split"] == "users" and doc["data"]["test_examples"] > 0
    lines = per_tag.read_text().splitlines()
    assert lines[0].startswith("model,tag,support") and len(lines) > 4


def test_train_then_predict_with_raw_ids(files, tmp_path):
    model = tmp_path / "tags.npz"
    r = run(
        "train",
        files["tags"],
        "--items",
        files["items"],
        "--model",
        "user-biased",
        "-o",
        model,
        *QUICK,
    )
    assert r.exit_code == 0, r.output
    assert "examples/s" in r.stderr and model.exists()
    r = run("predict", model, "--items", files["items"], "3:1", "7:2", "-k", "3")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split("\t") == ["pair", "rank", "tag", "score"]
    assert [ln.split("\t")[:2] for ln in lines[1:4]] == [["3:1", "1"], ["3:1", "2"], ["3:1", "3"]]
    r = run("predict", model, "--items", files["items"], "3:1", "--json", "-k", "2")
    doc = json.loads(r.stdout)
    assert list(doc) == ["3:1"] and [e["rank"] for e in doc["3:1"]] == [1, 2]


def test_attribute_models_need_the_user_file_at_prediction(files, tmp_path):
    model = tmp_path / "m.npz"
    assert (
        run(
            "train",
            files["tags"],
            "--items",
            files["items"],
            "--users",
            files["users"],
            "-o",
            model,
            *QUICK,
        ).exit_code
        == 0
    )
    r = run("predict", model, "--items", files["items"], "3:1")
    assert r.exit_code == 1 and "trained on user attributes; pass --users" in r.output
    r = run("predict", model, "--items", files["items"], "--users", files["users"], "3:1")
    assert r.exit_code == 0, r.output


def test_clear_errors(files, tmp_path):
    r = run("evaluate", files["tags"], "--items", files["items"], "--split", "users", *QUICK)
    assert r.exit_code == 1 and "--split users holds out whole users" in r.output
    # descriptors for only some items
    from cfcore.vectors import load_vectors, save_vectors

    v = load_vectors(files["items"])
    few = save_vectors(tmp_path / "few.npz", v.ids[:150], v.vectors[:150])
    r = run("evaluate", files["tags"], "--items", few, *QUICK)
    assert r.exit_code == 1 and "whose item has no descriptor" in r.output
    assert "--missing drop" in r.output
    r = run(
        "evaluate",
        files["tags"],
        "--items",
        few,
        "--missing",
        "drop",
        "--models",
        "frequency,bilinear",
        *QUICK,
    )
    assert r.exit_code == 0, r.output
    assert "dropped" in r.stderr
    r = run("evaluate", files["tags"], "--items", files["items"], "--models", "magic")
    assert r.exit_code == 1 and "unknown" in r.output
    r = run(
        "evaluate",
        files["tags"],
        "--items",
        files["items"],
        "--users",
        files["users"],
        "--user-columns",
        "age,income",
        *QUICK,
    )
    assert r.exit_code == 1 and "no column 'income'" in r.output
    r = run("predict", tmp_path / "absent.npz", "1:1")
    assert r.exit_code == 1 and "no such file" in r.output


@pytest.mark.realdata
def test_movielens_tags_with_factor_descriptors(ml_latest_small_path, tmp_path):
    """The README's protocol on real data, one seed: learned user embeddings help."""
    from cfcore import Factorizer, load_movielens

    views = load_movielens("ml-latest-small", ml_latest_small_path.parent)
    Factorizer(factors=32, epochs=10, threads=1, seed=0, progress=False).fit(views).save(
        tmp_path / "model.npz"
    )
    out = tmp_path / "r.json"
    r = CliRunner().invoke(
        cli,
        [
            "tags",
            "evaluate",
            "ml-latest-small",
            "--items",
            str(tmp_path / "model.npz"),
            "--missing",
            "drop",
            "--json",
            str(out),
            "--threads",
            "1",
            "-q",
            "--data-dir",
            str(ml_latest_small_path.parent),
        ],
    )
    assert r.exit_code == 0, r.output
    res = {x["model"]: x for x in json.loads(out.read_text())["results"]}
    assert res["frequency"]["examples"] > 300
    best = max(res[m]["A@10"] for m in ("bilinear", "user-biased", "3-way"))
    assert best > res["frequency"]["A@10"]
    assert np.isfinite([res[m]["P@1"] for m in res]).all()
