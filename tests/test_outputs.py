"""Outputs: no command overwrites an input or someone else's file, bad locations fail before
the work (naming the user's path, never a temporary file), files get the mode ``open()``
would give them, and a file that is not an ``.npz`` never draws advice to unpickle it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cfcore.cli.main import cli
from cfcore.errors import ModelFormatError, OutputError
from cfcore.io import (
    SIDE_FILES_KEY,
    atomic_path,
    atomic_write_text,
    check_outputs,
    load_artifact,
    read_header,
    save_artifact,
)

# A location no process can create files in, root included.
UNWRITABLE = Path("/proc/collabfeat-test/out.npz")


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umask_mode_like_open(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    save_artifact(tmp_path / "b.npz", "test", {"x": np.arange(3)})
    with open(tmp_path / "c.txt", "w") as fh:  # what the user expects: open()'s mode
        fh.write("x")
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.npz") == _mode(tmp_path / "c.txt")
    assert _mode(tmp_path / "a.txt") == mode


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_a_failed_write_names_the_users_path_not_the_temporary_file(tmp_path):
    with pytest.raises(OSError) as err:
        atomic_write_text(UNWRITABLE, "x")
    assert str(UNWRITABLE) in str(err.value) and ".tmp" not in str(err.value)
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "m.npz") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


# ---------------------------------------------------------------------------- check_outputs
def test_an_output_may_not_be_an_input_even_with_force(tmp_path):
    model = tmp_path / "model.npz"
    model.write_bytes(b"model")
    link = tmp_path / "link.npz"
    link.symlink_to(model)
    for target in (model, link, tmp_path / "." / "model.npz"):
        with pytest.raises(OutputError, match="inputs and would be overwritten"):
            check_outputs([target], [model], force=True)
    check_outputs([tmp_path / "other.npz"], [model, None, "ml-100k", "1,2"])  # non-files skipped
    assert model.read_bytes() == b"model"


def test_a_side_file_replaces_only_what_collabfeat_wrote_there(tmp_path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating\n1,2,5\n")
    side = {ratings: tmp_path / "ratings.npz"}
    with pytest.raises(OutputError, match="ratings.csv: exists and was not written by collabfeat"):
        check_outputs([tmp_path / "ratings.npz"], side_files=side)
    check_outputs([tmp_path / "ratings.npz"], side_files=side, force=True)
    # a previous run wrote the pair: the header of the .npz lists its side file
    save_artifact(tmp_path / "labels.npz", "x", {}, {SIDE_FILES_KEY: ["labels.csv"]})
    (tmp_path / "labels.csv").write_text("item_id,label\n")
    check_outputs(
        [tmp_path / "labels.npz"], side_files={tmp_path / "labels.csv": tmp_path / "labels.npz"}
    )
    # ... but not one that lists another name, nor a foreign .npz
    save_artifact(tmp_path / "other.npz", "x", {}, {SIDE_FILES_KEY: ["elsewhere.csv"]})
    (tmp_path / "other.csv").write_text("mine\n")
    np.savez(tmp_path / "plain.npz", x=np.arange(2))
    (tmp_path / "plain.csv").write_text("mine\n")
    for stem in ("other", "plain"):
        with pytest.raises(OutputError, match="not written by collabfeat"):
            check_outputs(
                [tmp_path / f"{stem}.npz"],
                side_files={tmp_path / f"{stem}.csv": tmp_path / f"{stem}.npz"},
            )


def test_an_output_written_twice_or_in_an_impossible_place_fails_first(tmp_path):
    with pytest.raises(OutputError, match="would be written twice"):
        check_outputs([tmp_path / "a.csv"], side_files={tmp_path / "a.csv": tmp_path / "a.csv"})
    with pytest.raises(OutputError, match="is a directory"):
        check_outputs([tmp_path])
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="file is a file, not a directory"):
        check_outputs([tmp_path / "file" / "sub" / "l.npz"])
    with pytest.raises(OutputError, match=f"{UNWRITABLE}: cannot be written"):
        check_outputs([UNWRITABLE])
    check_outputs([tmp_path / "new" / "dir" / "m.npz"])  # created, as the write would
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())


# ---------------------------------------------------------------------------- not an .npz
def test_files_that_are_not_npz_archives_get_a_safe_message(tmp_path):
    (tmp_path / "text.npz").write_text("user,item\n1,2\n")
    np.save(tmp_path / "array.npy", np.arange(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    for name, fragment in (
        ("text.npz", "not an .npz file"),
        ("array.npz", "not an .npz file"),
        ("objects.npz", "holds Python objects"),
    ):
        with pytest.raises(ModelFormatError, match=fragment) as err:
            load_artifact(tmp_path / name)
        assert "allow_pickle" not in str(err.value)  # never advise unsafe loading
        assert read_header(tmp_path / name) is None


# ---------------------------------------------------------------------------- every command
@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Small inputs for every cfcore command that writes."""
    from cfcore.neighbors import NeighborIndex

    rng = np.random.default_rng(0)
    d = tmp_path / "data"
    d.mkdir()
    views = d / "u.data"
    views.write_text(
        "".join(f"{u}\t{i}\t5\t0\n" for u in range(1, 21) for i in rng.choice(30, 6, replace=False))
    )
    save_artifact(
        d / "model.npz",
        "factor-model",
        {
            "user_factors": rng.standard_normal((20, 4)).astype(np.float32),
            "item_factors": rng.standard_normal((30, 4)).astype(np.float32),
            "user_ids": np.arange(1, 21),
            "item_ids": np.arange(30),
        },
        {"params": {"factors": 4}, "history": []},
    )
    NeighborIndex(d / "model.npz").search(None, 3).save(d / "nn.npz")
    return {"views": views, "model": d / "model.npz", "nn": d / "nn.npz", "dir": d}


def _refused(args: list[object], protected: Path) -> str:
    before = protected.read_bytes()
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and ".tmp" not in result.output
    assert protected.read_bytes() == before
    return result.output


@pytest.mark.parametrize(
    "args, protected",
    [
        (["sample-negatives", "{views}", "-o", "{views}"], "views"),
        (["factorize", "{views}", "-o", "{views}", "--epochs", "1"], "views"),
        (["recommend", "{model}", "{views}", "1", "-o", "{model}"], "model"),
        (["recommend", "{model}", "{views}", "1", "-o", "{views}"], "views"),
        (["similar", "{model}", "3", "-o", "{model}"], "model"),
        (["cluster", "{model}", "-k", "2", "-o", "{model}"], "model"),
        (["neighbors", "{model}", "-k", "2", "-o", "{model}"], "model"),
        (["retrieval-report", "{nn}", "{views}", "-R", "2", "--json", "{nn}"], "nn"),
        (["retrieval-report", "{nn}", "{views}", "-R", "2", "-o", "{views}"], "views"),
    ],
)
def test_no_command_overwrites_one_of_its_inputs(files, args, protected):
    out = _refused([a.format(**files) for a in args], files[protected])
    assert "is one of this command's inputs" in out


def test_a_dataset_name_input_is_protected_too(files, tmp_path):
    data = tmp_path / "datadir"
    (data / "ml-100k").mkdir(parents=True)
    udata = data / "ml-100k" / "u.data"
    udata.write_bytes(files["views"].read_bytes())
    args = ["factorize", "ml-100k", "--data-dir", data, "-o", udata, "--epochs", "1"]
    assert "is one of this command's inputs" in _refused(args, udata)


def test_cluster_side_csv_never_clobbers_the_users_file(files):
    """The issue's case: `-o ratings.npz` beside the user's ratings.csv."""
    d = files["dir"]
    ratings = d / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,2,5,0\n")
    out = _refused(["cluster", files["model"], "-k", "2", "-o", d / "ratings.npz"], ratings)
    assert "ratings.csv: exists and was not written by collabfeat" in out and "--force" in out
    assert not (d / "ratings.npz").exists()
    # --no-csv writes no side file, --force replaces it, and a rerun replaces its own CSV
    args = ["cluster", files["model"], "-k", "2", "-o", d / "ratings.npz"]
    assert CliRunner().invoke(cli, [str(a) for a in [*args, "--no-csv"]]).exit_code == 0
    assert ratings.read_text().startswith("userId")
    for extra in (["--force"], []):
        result = CliRunner().invoke(cli, [str(a) for a in [*args, *extra]])
        assert result.exit_code == 0, result.output
        assert ratings.read_text().startswith("item_id,label")
    with pytest.raises(OutputError, match="written twice"):  # -o labels.csv: both the same file
        check_outputs([d / "l.csv"], side_files={d / "l.csv": d / "l.csv"})
    out = _refused(["cluster", files["model"], "-k", "2", "-o", ratings], ratings)
    assert "would be written twice" in out


def test_a_bad_output_location_fails_before_any_work(files):
    """`cfcore factorize ml-100k -o /sys/m.npz` trained, then named a .tmp file."""
    for target, fragment in (
        (UNWRITABLE, f"{UNWRITABLE}: cannot be written"),
        (files["views"] / "l.npz", "u.data is a file, not a directory"),
        (files["dir"], "is a directory"),
    ):
        result = CliRunner().invoke(
            cli, ["factorize", str(files["views"]), "-o", str(target), "--epochs", "1"]
        )
        assert result.exit_code in (1, 2), result.output
        assert fragment in result.output or result.exit_code == 2, result.output
        assert "training on" not in result.output and ".tmp" not in result.output
        assert "Traceback" not in result.output


def test_cfvision_commands_do_not_overwrite_their_inputs(files):
    pytest.importorskip("torch")
    from cfvision.cli import cli as vision

    ckpt = files["dir"] / "checkpoint.pt"
    ckpt.write_bytes(b"a checkpoint")
    for args, protected in (
        (["extract", files["dir"], "--checkpoint", ckpt, "-o", ckpt], ckpt),
        (
            ["evaluate", files["model"], "--interactions", files["views"], "-o", files["model"]],
            files["model"],
        ),
        (
            [
                "evaluate",
                files["model"],
                "--interactions",
                files["views"],
                "--plot",
                files["views"],
            ],
            files["views"],
        ),
    ):
        before = protected.read_bytes()
        result = CliRunner().invoke(vision, [str(a) for a in args])
        assert result.exit_code == 1 and "is one of this command's inputs" in result.output
        assert protected.read_bytes() == before
