"""``cfcore sample-negatives | factorize | evaluate | recommend | similar`` end to end.

A planted model (two taste groups, factors written by hand) gives known right answers for
``recommend``, ``similar`` and ``evaluate``; ``factorize`` runs on a small block-structured
file and on ml-100k. Every bad input must fail with one clear line, a non-zero exit, and
leave no output (or temporary) file behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cfcore.cli.main import cli
from cfcore.io import save_artifact

# Two taste groups: users 1..12 view items 101..108, users 21..32 view items 201..208.
GROUP_A_USERS, GROUP_B_USERS = list(range(1, 13)), list(range(21, 33))
GROUP_A_ITEMS, GROUP_B_ITEMS = list(range(101, 109)), list(range(201, 209))


def _block_pairs(seed: int = 0, density: float = 0.6) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for users, items in ((GROUP_A_USERS, GROUP_A_ITEMS), (GROUP_B_USERS, GROUP_B_ITEMS)):
        for u in users:
            chosen = [i for i in items if rng.random() < density] or [items[0]]
            rows += [(u, i, int(rng.integers(1, 6))) for i in chosen]
    return rows


def _write_udata(path: Path, rows: list[tuple[int, int, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u}\t{i}\t{r}\t87{k:06d}\n" for k, (u, i, r) in enumerate(rows)))
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def views(tmp_path) -> Path:
    return _write_udata(tmp_path / "in" / "u.data", _block_pairs())


@pytest.fixture
def planted(tmp_path) -> Path:
    """A factor model that knows the two groups: x_u, y_i = e_group (plus a little order)."""
    users = GROUP_A_USERS + GROUP_B_USERS
    items = GROUP_A_ITEMS + GROUP_B_ITEMS
    uf = np.array([[1, 0] if u in GROUP_A_USERS else [0, 1] for u in users], dtype=np.float32)
    # within a group, lower ids score a little higher: item 101 > 102 > ... for group A users
    itf = np.array(
        [
            [1 - 0.01 * (i % 100), 0] if i in GROUP_A_ITEMS else [0, 1 - 0.01 * (i % 100)]
            for i in items
        ],
        dtype=np.float32,
    )
    path = tmp_path / "planted.npz"
    save_artifact(
        path,
        "factor-model",
        {
            "user_factors": uf,
            "item_factors": itf,
            "user_ids": np.array(users),
            "item_ids": np.array(items),
        },
        {"params": {"factors": 2}, "history": []},
    )
    return path


def _run(runner: CliRunner, *args: object):
    return runner.invoke(cli, [str(a) for a in args])


def _assert_one_line_error(result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code == 1:  # the error is one line, the last one (after any progress/notes)
        lines = result.output.splitlines()
        assert lines and lines[-1].startswith("Error: "), result.output
        assert sum(line.startswith("Error: ") for line in lines) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def _no_files_but(directory: Path, *names: str) -> None:
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


def _tsv(output: str) -> list[list[str]]:
    lines = [line.split("\t") for line in output.strip().splitlines()]
    return lines[1:]


# ---------------------------------------------------------------------------- help
@pytest.mark.parametrize(
    "command", ["sample-negatives", "factorize", "evaluate", "recommend", "similar"]
)
def test_help_teaches(runner, command):
    result = _run(runner, command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"cfcore {command}" in result.output


def test_factorize_help_shows_paper_defaults(runner):
    out = _run(runner, "factorize", "--help").output
    for text in ("--factors 100", "--reg 0.01", "--neg-ratio 2", "log-popularity", "--validation"):
        assert text in out


# ---------------------------------------------------------------------------- recommend
def test_recommend_planted_model_raw_ids_and_filters_seen(runner, planted, views):
    result = _run(runner, "recommend", planted, views, 1, 21, "-k", 3)
    assert result.exit_code == 0, result.output
    rows = _tsv(result.output)
    seen = {(u, i) for u, i, _ in _block_pairs()}
    by_user: dict[str, list[str]] = {}
    for user, _rank, item, _score in rows:
        by_user.setdefault(user, []).append(item)
        assert (int(user), int(item)) not in seen  # never an item the user already has
    unseen_a = [i for i in GROUP_A_ITEMS if (1, i) not in seen]
    unseen_b = [i for i in GROUP_B_ITEMS if (21, i) not in seen]
    assert by_user["1"] == [str(i) for i in unseen_a[:3]]  # best unseen items of its own group
    n_b = min(3, len(unseen_b))
    assert by_user["21"][:n_b] == [str(i) for i in unseen_b[:n_b]]
    assert {int(i) for i in by_user["21"][n_b:]} <= set(GROUP_A_ITEMS)  # score 0: after its own
    kept = _tsv(_run(runner, "recommend", planted, views, 1, "-k", 2, "--keep-seen").output)
    assert [r[2] for r in kept] == ["101", "102"]


def test_recommend_folds_in_new_users(runner, planted, tmp_path):
    new = _write_udata(
        tmp_path / "new" / "u.data",
        [(50, 101, 5), (50, 102, 5), (50, 103, 4), (50, 104, 5), (51, 999, 3)],
    )
    result = _run(runner, "recommend", planted, new, 50, "-k", 4)
    assert result.exit_code == 0, result.output
    recs = [int(r[2]) for r in _tsv(result.stdout)]
    assert sorted(recs) == [105, 106, 107, 108]  # the rest of its group, nothing seen
    assert "folded in 1 user(s)" in result.output
    _assert_one_line_error(
        _run(runner, "recommend", planted, new, 51),
        "user id '51' is not in the model and none of its items",
    )


def test_recommend_json_and_atomic_output_file(runner, planted, views, tmp_path):
    out = tmp_path / "out" / "recs.json"
    result = _run(runner, "recommend", planted, views, 1, "-k", 2, "--json", "-o", out)
    assert result.exit_code == 0, result.output
    recs = json.loads(out.read_text())
    assert list(recs) == ["1"] and [r["rank"] for r in recs["1"]] == [1, 2]
    assert all(r["score"] > 0.9 for r in recs["1"])
    _no_files_but(out.parent, "recs.json")


def test_recommend_bad_input(runner, planted, views, tmp_path):
    out = tmp_path / "recs.tsv"
    _assert_one_line_error(
        _run(runner, "recommend", planted, views, 1, 999, "-o", out),
        "user id '999' is neither in the model",
        "nor in",
    )
    _assert_one_line_error(
        _run(runner, "recommend", planted, views, 999, "--no-fold-in", "-o", out),
        "user id '999' is not in the model",
    )
    _assert_one_line_error(
        _run(runner, "recommend", planted, views, 1, "-k", 17, "-o", out),
        "-k 17 is larger than the number of items in the model (16)",
    )
    assert not out.exists()
    plain = tmp_path / "other.npz"
    np.savez(plain, user_factors=np.ones((2, 2)), item_factors=np.ones((2, 2)))
    _assert_one_line_error(_run(runner, "recommend", plain, views, 1), "not a collabfeat artifact")
    _assert_one_line_error(_run(runner, "recommend", planted, views, 1, "-k", 0), "-k", code=2)
    _assert_one_line_error(
        _run(runner, "recommend", planted, tmp_path / "nope.csv", 1), "nope.csv: no such file"
    )


# ---------------------------------------------------------------------------- similar
def test_similar_planted_model(runner, planted):
    result = _run(runner, "similar", planted, 101, 205, "-k", 3)
    assert result.exit_code == 0, result.output
    rows = _tsv(result.output)
    got = {}
    for item, _rank, other, score in rows:
        got.setdefault(item, []).append(other)
        assert float(score) == pytest.approx(1.0, abs=1e-5)  # same direction: cosine 1
    assert set(got["101"]) <= {str(i) for i in GROUP_A_ITEMS[1:]}  # never itself, same group
    assert set(got["205"]) <= {str(i) for i in GROUP_B_ITEMS if i != 205}
    js = json.loads(_run(runner, "similar", planted, 101, "-k", 15, "--json").output)
    scores = [r["score"] for r in js["101"]]
    assert len(scores) == 15 and scores[:7] == pytest.approx([1.0] * 7) and max(scores[7:]) < 1e-6


def test_similar_bad_input(runner, planted, tmp_path):
    _assert_one_line_error(
        _run(runner, "similar", planted, 101, "-k", 16),
        "-k 16 is larger than the number of other items in the model (15)",
    )
    _assert_one_line_error(
        _run(runner, "similar", planted, "x1"), "item id 'x1' is not in the model"
    )
    labels = tmp_path / "labels.npz"
    save_artifact(labels, "pseudo-labels", {"item_ids": np.arange(3), "labels": np.zeros(3)})
    _assert_one_line_error(
        _run(runner, "similar", labels, 1),
        "expected a factor-model file, found a 'pseudo-labels' file",
    )
    broken = tmp_path / "broken.npz"
    save_artifact(
        broken,
        "factor-model",
        {
            "user_factors": np.ones((2, 2)),
            "item_factors": np.ones((3, 4)),
            "user_ids": np.arange(2),
            "item_ids": np.arange(3),
        },
    )
    _assert_one_line_error(_run(runner, "similar", broken, 1), "factor shapes do not match")
    nan = tmp_path / "nan.npz"
    save_artifact(
        nan,
        "factor-model",
        {
            "user_factors": np.ones((2, 2)),
            "item_factors": np.full((3, 2), np.nan),
            "user_ids": np.arange(2),
            "item_ids": np.arange(3),
        },
    )
    _assert_one_line_error(_run(runner, "similar", nan, 1), "item_factors contains NaN")
    _assert_one_line_error(_run(runner, "similar", tmp_path / "none.npz", 1), code=2)


# ---------------------------------------------------------------------------- evaluate
def test_evaluate_planted_model_is_perfect_and_beats_popularity(runner, planted, tmp_path):
    rows = _block_pairs(seed=1, density=1.0)  # every unobserved item is from the other group
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(rows)) < 0.3
    train = _write_udata(
        tmp_path / "train" / "u.data", [r for r, t in zip(rows, test_mask, strict=True) if not t]
    )
    test = _write_udata(
        tmp_path / "test" / "u.data", [r for r, t in zip(rows, test_mask, strict=True) if t]
    )
    result = _run(
        runner, "evaluate", planted, test, "--train", train, "-k", 3, "--baseline", "--json"
    )
    assert result.exit_code == 0, result.output
    res = json.loads(result.output)
    assert res["model"]["auc"] == pytest.approx(1.0)
    assert res["model"]["pr"] == pytest.approx(0.0)
    assert res["model"]["accuracy@3"] == pytest.approx(1.0)
    assert res["popularity"]["auc"] < 0.9  # popularity cannot tell the groups apart
    assert set(res["model"]) >= {"precision@3", "recall@3", "map@3", "ndcg@3", "users"}
    table = _run(runner, "evaluate", planted, test, "--train", train, "-k", 3, "--baseline")
    assert table.exit_code == 0
    assert table.output.splitlines()[0].split() == ["metric", "model", "popularity"]
    assert any(line.startswith("auc") and "1.0000" in line for line in table.output.splitlines())


def test_evaluate_reports_unknown_users_and_items(runner, planted, tmp_path):
    test = _write_udata(
        tmp_path / "t" / "u.data", [(1, 101, 5), (1, 102, 5), (99, 101, 5), (1, 999, 4)]
    )
    res = json.loads(_run(runner, "evaluate", planted, test, "--json").output)
    assert res["test"] == {"interactions": 2, "dropped": 2, "unknown_users": 1, "unknown_items": 1}
    none = _write_udata(tmp_path / "n" / "u.data", [(99, 999, 5)])
    _assert_one_line_error(
        _run(runner, "evaluate", planted, none),
        "none of its interactions involve users and items of the model",
    )


def test_evaluate_bad_input(runner, planted, views, tmp_path):
    _assert_one_line_error(
        _run(runner, "evaluate", planted, views, "-k", 100),
        "-k 100 is larger than the number of items in the model (16)",
    )
    _assert_one_line_error(
        _run(runner, "evaluate", planted, views, "--baseline"), "--baseline needs --train"
    )
    plain = tmp_path / "model.npz"
    np.savez(plain, user_factors=np.ones((2, 2)))
    _assert_one_line_error(
        _run(runner, "evaluate", plain, views), "was it written by another tool?"
    )
    empty = tmp_path / "empty" / "u.data"
    empty.parent.mkdir()
    empty.write_text("")
    _assert_one_line_error(_run(runner, "evaluate", planted, empty), "empty file")


# ---------------------------------------------------------------------------- sample-negatives
def test_sample_negatives_command(runner, views, tmp_path):
    from cfcore.readers import read_interactions
    from cfcore.sampling import NegativeSample

    out1, out2 = tmp_path / "neg1.npz", tmp_path / "neg2.npz"
    r1 = _run(
        runner, "sample-negatives", views, "-o", out1, "--neg-ratio", 1, "--seed", 5, "--threads", 1
    )
    r2 = _run(
        runner, "sample-negatives", views, "-o", out2, "--neg-ratio", 1, "--seed", 5, "--threads", 2
    )
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    neg1, neg2 = NegativeSample.load(out1), NegativeSample.load(out2)
    np.testing.assert_array_equal(neg1.indices, neg2.indices)  # thread count does not matter
    pos = read_interactions(views).user_items
    assert neg1.shape == pos.shape
    assert neg1.to_csr().multiply(pos).nnz == 0  # never a positive
    # 8 items per group, positives in the own group: everyone has >= 8 candidates, ratio 1
    np.testing.assert_array_equal(neg1.counts, np.diff(pos.indptr))
    assert f"{neg1.nnz} negatives for 24 users × 16 items" in r1.output


def test_sample_negatives_reports_shortfall(runner, tmp_path):
    dense = _write_udata(
        tmp_path / "d" / "u.data", [(1, 1, 5), (1, 2, 5), (1, 3, 5), (2, 1, 5), (3, 4, 5)]
    )
    result = _run(runner, "sample-negatives", dense, "-o", tmp_path / "n.npz", "--neg-ratio", 2)
    assert result.exit_code == 0, result.output
    assert "users had fewer candidates than requested" in result.output


def test_sample_negatives_bad_input(runner, views, tmp_path):
    out = tmp_path / "o" / "neg.npz"
    bad = _write_udata(tmp_path / "b" / "u.data", [(1, 2, 3)])
    bad.write_text(bad.read_text() + "1\tabc\t3\t0\n")
    _assert_one_line_error(
        _run(runner, "sample-negatives", bad, "-o", out), "u.data:2: item id 'abc'"
    )
    _assert_one_line_error(
        _run(runner, "sample-negatives", views, "-o", out, "--neg-ratio", 0), "--neg-ratio", code=2
    )
    _assert_one_line_error(
        _run(runner, "sample-negatives", views, "-o", out, "--neg-weighting", "zipf"),
        "--neg-weighting",
        "expected one of popularity, log-popularity, uniform",
        code=2,
    )
    _assert_one_line_error(_run(runner, "sample-negatives", views, "-o", tmp_path), code=2)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_negative_sampling_options_speak_the_librarys_vocabulary(runner, views, tmp_path):
    """--neg-ratio/--neg-weighting on both commands, the library's spellings; the old
    options still work with a note."""
    from cfcore.sampling import NegativeSample

    new, old = tmp_path / "new.npz", tmp_path / "old.npz"
    args = ["--seed", 3, "--threads", 1]
    r_new = _run(
        runner,
        "sample-negatives",
        views,
        "-o",
        new,
        "--neg-ratio",
        1,
        "--neg-weighting",
        "log_popularity",
        *args,
    )
    r_old = _run(
        runner,
        "sample-negatives",
        views,
        "-o",
        old,
        "--ratio",
        1,
        "--weighting",
        "log-popularity",
        *args,
    )
    assert r_new.exit_code == 0 and r_old.exit_code == 0, r_new.output + r_old.output
    np.testing.assert_array_equal(
        NegativeSample.load(new).indices, NegativeSample.load(old).indices
    )
    assert NegativeSample.load(new).weighting == "log-popularity"
    assert "note: --ratio is deprecated; use --neg-ratio" in r_old.output
    assert "deprecated" not in r_new.output
    model = tmp_path / "m.npz"
    result = _run(runner, "factorize", views, "-o", model, "--neg-weight", "uniform", *FAST)
    assert result.exit_code == 0, result.output
    assert "use --neg-weighting" in result.output
    from cfcore.factorize import Factorizer

    assert Factorizer.load(model).effective_params_.neg_weighting == "uniform"


def test_threads_above_the_cores_are_clamped_with_a_note(runner, views, tmp_path):
    from cfcore.threads import available_threads

    many = available_threads() + 5
    for command in ("sample-negatives", "factorize"):
        result = _run(runner, command, views, "-o", tmp_path / f"{command}.npz", "--threads", many)
        assert result.exit_code == 0, result.output
        notes = [line for line in result.output.splitlines() if "more than the" in line]
        assert notes == [
            f"note: threads={many} is more than the {available_threads()} core(s) available; "
            f"using {available_threads()}"
        ], result.output


# ---------------------------------------------------------------------------- factorize
FAST = ["--factors", 4, "--epochs", 25, "--threads", 1, "--seed", 0, "-q"]


def test_factorize_writes_the_contracted_model_and_it_recommends(runner, views, tmp_path):
    from cfcore.io import load_artifact

    out = tmp_path / "m" / "model.npz"
    result = _run(runner, "factorize", views, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    arrays, header = load_artifact(out, "factor-model")
    assert arrays["user_factors"].dtype == np.float32 and arrays["user_factors"].shape == (24, 4)
    assert arrays["item_factors"].dtype == np.float32 and arrays["item_factors"].shape == (16, 4)
    assert arrays["user_ids"].tolist() == GROUP_A_USERS + GROUP_B_USERS  # raw ids, row order
    assert arrays["item_ids"].tolist() == GROUP_A_ITEMS + GROUP_B_ITEMS
    params = header["params"]
    assert params["factors"] == 4 and params["loss"] == "squared" and params["seed"] == 0
    _no_files_but(out.parent, "model.npz")
    # the learned model recovers the groups: neighbours of 101 are group-A items
    near = _tsv(_run(runner, "similar", out, 101, "-k", 3).output)
    assert {int(r[2]) for r in near} <= set(GROUP_A_ITEMS)
    recs = _tsv(_run(runner, "recommend", out, views, 21, "-k", 2).output)
    assert {int(r[2]) for r in recs} <= set(GROUP_B_ITEMS)


def test_factorize_is_reproducible_with_one_thread(runner, views, tmp_path):
    from cfcore.io import load_artifact

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert _run(runner, "factorize", views, "-o", a, *FAST).exit_code == 0
    assert _run(runner, "factorize", views, "-o", b, *FAST).exit_code == 0
    np.testing.assert_array_equal(
        load_artifact(a)[0]["item_factors"], load_artifact(b)[0]["item_factors"]
    )


def test_factorize_validation_prints_epochs(runner, views, tmp_path):
    out = tmp_path / "model.npz"
    result = _run(
        runner,
        "factorize",
        views,
        "-o",
        out,
        "--factors",
        4,
        "--epochs",
        3,
        "--threads",
        1,
        "--validation",
        0.25,
    )
    assert result.exit_code == 0, result.output
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1", "2", "3"]
    for key in ("rmse", "sampled_pr", "auc"):  # Fang's validation PR, named as such
        assert key in epochs[-1]
    assert " pr " not in epochs[-1]


@pytest.mark.parametrize("loss", ["squared", "bpr", "warp", "logistic"])
def test_factorize_every_loss(runner, views, tmp_path, loss):
    out = tmp_path / "model.npz"
    result = _run(
        runner,
        "factorize",
        views,
        "-o",
        out,
        "--loss",
        loss,
        "--factors",
        4,
        "--epochs",
        2,
        "--threads",
        1,
        "-q",
        "--neg-weighting",
        "uniform",
        "--resample",
    )
    assert result.exit_code == 0, result.output
    assert out.exists()


@pytest.mark.parametrize(
    "lines, fragments",
    [
        ([], ["empty file"]),
        (["1\t101\t5\t0", "1\t102"], ["u.data:2: expected at least 3 fields"]),
        (["1\t101\t5\t0", "u2\t102\t5\t0"], ["u.data:2: user id 'u2' is not an integer"]),
        (["1\t101\t5\t0", "2\t102\tnan\t0"], ["u.data:2: rating is 'nan'"]),
    ],
)
def test_factorize_bad_files_write_nothing(runner, tmp_path, lines, fragments):
    src = tmp_path / "src" / "u.data"
    src.parent.mkdir()
    src.write_text("".join(line + "\n" for line in lines))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _run(runner, "factorize", src, "-o", out_dir / "model.npz", *FAST)
    _assert_one_line_error(result, *fragments)
    _no_files_but(out_dir)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--factors", 0], "'--factors': 0 is not in the range x>=1"),
        (["--factors", -3], "--factors"),
        (["--lr", -0.1], "'--lr': -0.1 is not in the range x>0"),
        (["--lr", 0], "--lr"),
        (["--epochs", 0], "--epochs"),
        (["--reg", -1], "--reg"),
        (["--validation", 1.5], "--validation"),
        (["--loss", "hinge"], "'hinge' is not one of"),
        (["--neg-weighting", "zipf"], "--neg-weighting"),
        (["--neg-ratio", "inf"], "--neg-ratio"),
        (["--threads", -1], "--threads"),
    ],
)
def test_factorize_bad_parameters_write_nothing(runner, views, tmp_path, args, fragment):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _run(runner, "factorize", views, "-o", out_dir / "model.npz", *args)
    _assert_one_line_error(result, fragment, code=2)
    _no_files_but(out_dir)


def test_factorize_output_and_input_problems(runner, views, tmp_path):
    _assert_one_line_error(_run(runner, "factorize", views, "-o", tmp_path, *FAST), code=2)
    _assert_one_line_error(
        _run(runner, "factorize", tmp_path / "nope.csv", "-o", tmp_path / "m.npz"),
        "nope.csv: no such file",
    )
    _assert_one_line_error(
        _run(runner, "factorize", tmp_path, "-o", tmp_path / "m.npz"), "is a directory"
    )
    _assert_one_line_error(
        _run(
            runner,
            "factorize",
            "ml-100k",
            "--data-dir",
            tmp_path / "nodata",
            "-o",
            tmp_path / "m.npz",
        ),
        "cfcore download ml-100k",
    )
    assert not (tmp_path / "m.npz").exists()


def test_factorize_existing_output_survives_a_failure(runner, views, tmp_path):
    out = tmp_path / "model.npz"
    assert _run(runner, "factorize", views, "-o", out, *FAST).exit_code == 0
    before = out.read_bytes()
    bad = _write_udata(tmp_path / "bad" / "u.data", [(1, 101, 5)])
    bad.write_text(bad.read_text() + "oops\n")
    assert _run(runner, "factorize", bad, "-o", out, *FAST).exit_code == 1
    assert out.read_bytes() == before
    _no_files_but(tmp_path, "model.npz", "in", "bad")


# ---------------------------------------------------------------------------- ml-100k
@pytest.mark.realdata
@pytest.mark.slow
def test_ml100k_pipeline(runner, ml100k_path, tmp_path):
    """factorize u1.base → evaluate on u1.test: beats popularity, AUC ≥ 0.85; recommend/similar."""
    model = tmp_path / "model.npz"
    base, test = ml100k_path / "u1.base", ml100k_path / "u1.test"
    result = _run(
        runner,
        "factorize",
        base,
        "-o",
        model,
        "--factors",
        32,
        "--epochs",
        10,
        "--threads",
        2,
        "--seed",
        0,
        "-q",
    )
    assert result.exit_code == 0, result.output
    res = _run(runner, "evaluate", model, test, "--train", base, "-k", 10, "--baseline", "--json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    assert metrics["model"]["auc"] >= 0.85
    assert metrics["model"]["auc"] > metrics["popularity"]["auc"]
    assert metrics["model"]["precision@10"] > metrics["popularity"]["precision@10"] * 0.9
    recs = _tsv(_run(runner, "recommend", model, base, 1, 2, "-k", 10).output)
    assert len(recs) == 20
    near = _tsv(_run(runner, "similar", model, 1, "-k", 5).output)  # Toy Story
    assert len(near) == 5 and "1" not in [r[2] for r in near]
    _assert_one_line_error(
        _run(runner, "recommend", model, base, 1, "-k", 5000),
        "-k 5000 is larger than the number of items in the model (1650)",
    )


@pytest.mark.realdata
def test_sample_negatives_on_ml100k(runner, ml100k_path, tmp_path):
    from cfcore.sampling import NegativeSample

    out = tmp_path / "neg.npz"
    result = _run(
        runner, "sample-negatives", "ml-100k", "--data-dir", ml100k_path.parent, "-o", out
    )
    assert result.exit_code == 0, result.output
    neg = NegativeSample.load(out)
    assert neg.shape == (943, 1682)
    assert neg.requested == 200000  # ratio 2 × 100,000 positives
    assert 0.99 * 200000 <= neg.nnz <= 200000  # a few heavy users run short
    assert neg.n_short >= 1 and "users had fewer candidates" in result.output


def test_factorize_divergence_is_one_line_with_advice(runner, views, tmp_path):
    out = tmp_path / "model.npz"
    result = _run(runner, "factorize", views, "-o", out, "--lr", 1e4, "--epochs", 3, "-q")
    # The advice names this command's options, not the Python API's parameters.
    _assert_one_line_error(result, "diverged", "lower --lr (now 10000) or raise --reg (now 0.01)")
    assert "learning_rate" not in result.output
    assert not out.exists()


def test_unexpected_errors_are_one_line_unless_debugging(runner, views, tmp_path, monkeypatch):
    import cfcore.factorize

    def broken_fit(self, *args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cfcore.factorize.Factorizer, "fit", broken_fit)
    out = tmp_path / "model.npz"
    result = _run(runner, "factorize", views, "-o", out, "-q")
    _assert_one_line_error(
        result, "internal error ZeroDivisionError: division by zero", "COLLABFEAT_DEBUG=1"
    )
    monkeypatch.setenv("COLLABFEAT_DEBUG", "1")
    result = _run(runner, "factorize", views, "-o", out, "-q")
    assert isinstance(result.exception, ZeroDivisionError)
    assert not out.exists()


def test_biases_and_users_without_interactions(runner, tmp_path):
    from cfcore.interactions import Interactions
    from cfcore.io import load_artifact

    dense = np.zeros((5, 6))
    dense[0, :3] = dense[1, 2:5] = dense[3, 0] = dense[4, 5] = 1  # user "c" has nothing
    src = Interactions(dense, user_ids=list("abcde")).save(tmp_path / "views.npz")
    model = tmp_path / "model.npz"
    result = _run(
        runner, "factorize", src, "-o", model, "--factors", 2, "--epochs", 3, "--biases", "-q"
    )
    assert result.exit_code == 0, result.output
    arrays, _ = load_artifact(model, "factor-model")
    assert arrays["item_bias"].shape == (6,) and arrays["user_ids"].tolist() == list("abcde")
    recs = _tsv(_run(runner, "recommend", model, src, "c", "a", "-k", 6).output)
    assert len([r for r in recs if r[0] == "c"]) == 6  # nothing seen: the whole catalogue
    assert len([r for r in recs if r[0] == "a"]) == 3  # three seen items filtered
