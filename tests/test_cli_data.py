"""``cfcore download`` and ``cfcore info`` end to end (local HTTP mirror, CliRunner)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_datasets import RATINGS_CSV, U_DATA, mirror, synthetic_100k_checksum  # noqa: F401

from cfcore.cli.main import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_download_command(runner, tmp_path, mirror, synthetic_100k_checksum):  # noqa: F811
    data = tmp_path / "data"
    result = runner.invoke(
        cli,
        ["download", "ml-100k", "ml-latest-small", "--data-dir", str(data), "--base-url", mirror],
    )
    assert result.exit_code == 0, result.output
    assert f"ml-100k: {data / 'ml-100k'}" in result.output
    assert (data / "ml-100k" / "u.data").read_text() == U_DATA
    assert (data / "ml-latest-small" / "ratings.csv").read_text() == RATINGS_CSV
    # the downloaded dataset is then usable by name
    info = runner.invoke(cli, ["info", "ml-100k", "--data-dir", str(data)])
    assert info.exit_code == 0, info.output
    assert "4 users × 5 items, 20 interactions" in info.output  # user 3, items 3, 6: none


def test_download_command_with_env_data_dir(runner, tmp_path, mirror, monkeypatch):  # noqa: F811
    monkeypatch.setenv("COLLABFEAT_DATA", str(tmp_path / "envdata"))
    monkeypatch.setenv("COLLABFEAT_DATA_URL", mirror)
    result = runner.invoke(cli, ["download", "ml-latest-small"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envdata" / "ml-latest-small" / "ratings.csv").exists()


@pytest.mark.parametrize(
    "name, url_suffix, message",
    [
        ("ml-100k", "", "checksum mismatch"),
        ("ml-1m", "", "not a zip archive"),
        ("ml-100k", "/missing", "404"),
        ("ml-10m", "", "unknown dataset 'ml-10m'"),
    ],
)
def test_download_failures_are_one_line(runner, tmp_path, mirror, name, url_suffix, message):  # noqa: F811
    data = tmp_path / "data"
    result = runner.invoke(
        cli, ["download", name, "--data-dir", str(data), "--base-url", mirror + url_suffix]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert not data.exists() or not any(data.iterdir())  # nothing half-written


def test_download_needs_a_name(runner):
    result = runner.invoke(cli, ["download"])
    assert result.exit_code == 2 and "Missing argument" in result.output


def test_info_on_a_file_and_on_bad_input(runner, tmp_path):
    path = tmp_path / "views.csv"
    path.write_text("user,item\na,x\na,y\nb,x\n")
    result = runner.invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 users × 2 items, 3 interactions" in result.output
    assert "items per user: min 1, median 2" in result.output
    bad = tmp_path / "u.data"
    bad.write_text("1\t2\t3\t4\nx\t2\t3\t4\n")
    result = runner.invoke(cli, ["info", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2: user id 'x' is not an integer" in result.output
    missing = runner.invoke(cli, ["info", "ml-100k", "--data-dir", str(tmp_path / "empty")])
    assert missing.exit_code == 1 and "cfcore download ml-100k" in missing.output


@pytest.mark.realdata
def test_info_on_ml100k(runner, ml100k_path):
    result = runner.invoke(cli, ["info", "ml-100k", "--data-dir", str(ml100k_path.parent)])
    assert result.exit_code == 0, result.output
    assert "943 users × 1682 items, 100000 interactions" in result.output
    likes = runner.invoke(cli, ["info", str(ml100k_path / "u.data"), "--min-rating", "4"])
    assert "55375 interactions" in likes.output


def test_info_with_chosen_columns(runner, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("when,customer,product,stars\n1,ann,shoe,5\n2,bob,hat,2\n3,ann,hat,4\n")
    # 'customer'/'product' are not well-known names: without options the first two columns
    # (when, customer) would be read as user and item
    result = runner.invoke(
        cli,
        [
            "info",
            str(path),
            "--user-col",
            "customer",
            "--item-col",
            "product",
            "--rating-col",
            "stars",
            "--min-rating",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 users × 2 items, 2 interactions" in result.output
    tsv = tmp_path / "log.txt"
    tsv.write_text("ann|shoe\nbob|hat\n")
    result = runner.invoke(cli, ["info", str(tsv), "--format", "csv", "--sep", "|", "--no-header"])
    assert result.exit_code == 0, result.output
    assert "2 users × 2 items, 2 interactions" in result.output
    bad = runner.invoke(cli, ["info", str(path), "--user-col", "buyer"])
    assert bad.exit_code == 1 and "no column 'buyer' for users" in bad.output
