"""Data directory resolution and ``download`` against a local HTTP mirror (no internet).

The mirror is ``http.server`` on 127.0.0.1 in a thread, serving zips built in ``tmp_path``
from small synthetic MovieLens files, so the whole download path (HTTP, unzip, checksum,
atomic rename) runs for real.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import cfcore.datasets as ds
from cfcore.errors import DatasetNotFoundError, InputError

U_DATA = "".join(
    f"{u}\t{i}\t{(u + i) % 5 + 1}\t88125{u}{i}\n"
    for u in range(1, 6)
    for i in range(1, 8)
    if (u * i) % 3
)
RATINGS_CSV = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{i * 10},{(u * i) % 5 + 0.5},9649827{u}\n" for u in range(1, 4) for i in range(1, 5)
)
RATINGS_DAT = "".join(
    f"{u}::{i}::{(u + i) % 5 + 1}::97830{u}\n" for u in range(1, 4) for i in range(1, 4)
)


def _zip(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


def build_mirror(root: Path) -> Path:
    """Archives laid out like files.grouplens.org/datasets/movielens/ (one of them broken)."""
    root.mkdir(parents=True, exist_ok=True)
    _zip(
        root / "ml-100k.zip",
        {"ml-100k/u.data": U_DATA, "ml-100k/u.info": "5 users\n", "ml-100k/README": "synthetic\n"},
    )
    _zip(
        root / "ml-latest-small.zip",
        {
            "ml-latest-small/ratings.csv": RATINGS_CSV,
            "ml-latest-small/movies.csv": "movieId,title,genres\n",
        },
    )
    (root / "ml-1m.zip").write_bytes(b"this is not a zip archive")
    return root


@pytest.fixture
def mirror(tmp_path) -> Iterator[str]:
    """Base URL of a local HTTP server holding the synthetic archives."""
    root = build_mirror(tmp_path / "mirror")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/datasets/movielens"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:  # serve /datasets/movielens/x.zip from root
        return super().translate_path(path.replace("/datasets/movielens", "", 1))

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def synthetic_100k_checksum(monkeypatch):
    """Accept the synthetic u.data as ml-100k (the real checksum is kept in every other test)."""
    digest = hashlib.sha256(U_DATA.encode()).hexdigest()
    monkeypatch.setitem(
        ds.DATASETS, "ml-100k", dataclasses.replace(ds.DATASETS["ml-100k"], sha256=digest)
    )


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------- data_dir
def test_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.ENV_VAR, str(tmp_path / "env"))
    assert ds.data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert ds.data_dir() == tmp_path / "env"
    monkeypatch.delenv(ds.ENV_VAR)
    # ../shared/data beside the working directory when it exists, else the user cache
    monkeypatch.setattr(ds, "_PROJECT_ROOT", tmp_path / "nowhere" / "repo")
    work = tmp_path / "ws" / "checkout"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ds.data_dir() == tmp_path / "home" / ".cache" / "collabfeat" / "data"
    (tmp_path / "ws" / "shared" / "data").mkdir(parents=True)
    assert ds.data_dir() == tmp_path / "ws" / "shared" / "data"


def test_missing_dataset_says_how_to_download(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"cfcore download ml-100k --data-dir"):
        ds.dataset_path("ml-100k", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="not publicly downloadable"):
        ds.dataset_path("movielens-posters", tmp_path)
    with pytest.raises(InputError, match="unknown dataset 'ml-20m'"):
        ds.dataset_path("ml-20m", tmp_path)


# ---------------------------------------------------------------------------- download
def test_download_then_load(tmp_path, mirror, synthetic_100k_checksum):
    data = tmp_path / "data"
    path = ds.download("ml-100k", data, base_url=mirror)
    assert path == data / "ml-100k"
    assert (path / "u.data").read_text() == U_DATA
    assert (path / "README").exists()
    assert ds.dataset_path("ml-100k", data) == path
    views = ds.load_movielens("ml-100k", data)
    assert views.nnz == U_DATA.count("\n")
    likes = ds.load_movielens("ml-100k", data, min_rating=4)
    assert 0 < likes.nnz < views.nnz
    assert _leftovers(data) == []  # the temporary folder is gone

    small = ds.download("ml-latest-small", data, base_url=mirror)
    inter = ds.load_movielens("ml-latest-small", data)
    assert small == data / "ml-latest-small"
    assert inter.n_users == 3 and inter.item_ids.tolist() == [10, 20, 30, 40]


def test_download_skips_present_dataset_and_force_replaces_it(
    tmp_path, mirror, synthetic_100k_checksum
):
    data = tmp_path / "data"
    path = ds.download("ml-100k", data, base_url=mirror)
    (path / "mine.txt").write_text("local note")
    assert ds.download("ml-100k", data, base_url="http://127.0.0.1:9/unreachable") == path
    assert (path / "mine.txt").exists()  # present: nothing fetched
    ds.download("ml-100k", data, base_url=mirror, force=True)
    assert not (path / "mine.txt").exists() and (path / "u.data").read_text() == U_DATA
    assert _leftovers(data) == []


def test_download_uses_the_url_environment_variable(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv(ds.URL_ENV_VAR, mirror)
    assert (ds.download("ml-latest-small", tmp_path) / "ratings.csv").read_text() == RATINGS_CSV


def test_checksum_mismatch_leaves_nothing(tmp_path, mirror):
    data = tmp_path / "data"
    with pytest.raises(InputError, match="u.data checksum mismatch"):
        ds.download("ml-100k", data, base_url=mirror)  # synthetic u.data != the real one
    assert not (data / "ml-100k").exists()
    assert _leftovers(data) == []


def test_bad_zip_leaves_nothing(tmp_path, mirror):
    data = tmp_path / "data"
    with pytest.raises(InputError, match="ml-1m.zip: not a zip archive"):
        ds.download("ml-1m", data, base_url=mirror)
    assert not (data / "ml-1m").exists() and _leftovers(data) == []


def test_archive_without_the_marker_file(tmp_path, mirror):
    # the ml-100k archive served under the ml-1m name: no ratings.dat inside
    data = tmp_path / "data"
    root = tmp_path / "mirror"
    (root / "ml-1m.zip").write_bytes((root / "ml-100k.zip").read_bytes())
    with pytest.raises(InputError, match="archive has no ratings.dat"):
        ds.download("ml-1m", data, base_url=mirror)
    assert not (data / "ml-1m").exists() and _leftovers(data) == []


def test_404_is_a_clear_error(tmp_path, mirror):
    data = tmp_path / "data"
    with pytest.raises(InputError, match=r"could not download .*/nope/ml-100k.zip.*404"):
        ds.download("ml-100k", data, base_url=mirror + "/nope")
    assert not (data / "ml-100k").exists() and _leftovers(data) == []


def test_unknown_dataset(tmp_path):
    with pytest.raises(InputError, match="downloadable: ml-100k, ml-latest-small, ml-1m"):
        ds.download("movielens-posters", tmp_path)


# ---------------------------------------------------------------------------- side information
@pytest.mark.realdata
def test_ml100k_side_information(ml100k_path):
    users = ds.movielens_100k_users(ml100k_path.parent)
    assert len(users.user_ids) == 943
    assert (users.gender == "M").sum() == 670
