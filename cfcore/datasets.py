"""Where the data lives, how to get it, and MovieLens side information.

The data directory is, in order: an explicit argument (``--data-dir``), the
``COLLABFEAT_DATA`` environment variable, ``../shared/data`` (beside the checkout or the
working directory) when it exists, else ``~/.cache/collabfeat/data`` — where
``cfcore download`` puts the public MovieLens files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfcore.errors import DatasetNotFoundError, InputError
from cfcore.interactions import Interactions

ENV_VAR = "COLLABFEAT_DATA"
URL_ENV_VAR = "COLLABFEAT_DATA_URL"
DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Dataset:
    """A public dataset: its archive, the file that proves it is there, and that file's sha256."""

    name: str
    archive: str
    marker: str
    sha256: str | None
    description: str


DATASETS: dict[str, Dataset] = {
    "ml-100k": Dataset(
        "ml-100k",
        "ml-100k.zip",
        "u.data",
        "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "MovieLens 100K: 100,000 ratings of 1,682 movies by 943 users, with demographics",
    ),
    "ml-latest-small": Dataset(
        "ml-latest-small",
        "ml-latest-small.zip",
        "ratings.csv",
        None,
        "MovieLens latest-small: 100,836 ratings and 3,683 tags, 9,742 movies, 610 users",
    ),
    "ml-1m": Dataset(
        "ml-1m",
        "ml-1m.zip",
        "ratings.dat",
        None,
        "MovieLens 1M: 1,000,209 ratings of 3,706 movies by 6,040 users",
    ),
}


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory (see the module docstring for the order)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    for base in (_PROJECT_ROOT, Path.cwd()):
        shared = base.parent / "shared" / "data"
        if shared.is_dir():
            return shared
    return Path.home() / ".cache" / "collabfeat" / "data"


def dataset_path(name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Folder of dataset ``name`` inside the data directory.

    Raises
    ------
    DatasetNotFoundError
        With the command that downloads it.
    """
    if name not in DATASETS and name != "movielens-posters":
        raise InputError(
            f"unknown dataset {name!r}; known: {', '.join([*DATASETS, 'movielens-posters'])}"
        )
    root = data_dir(directory)
    path = root / name
    marker = DATASETS[name].marker if name in DATASETS else "poster_index.csv"
    if not (path / marker).exists():
        hint = (
            f"run `cfcore download {name} --data-dir {root}`"
            if name in DATASETS
            else "the posters are not publicly downloadable; point COLLABFEAT_DATA at a copy"
        )
        raise DatasetNotFoundError(
            f"dataset {name!r} not found in {root} ({path / marker} missing): {hint}"
        )
    return path


def download(
    name: str,
    directory: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    force: bool = False,
) -> Path:
    """Download and unpack a public MovieLens dataset into the data directory.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (``ml-100k``, ``ml-latest-small``, ``ml-1m``).
    directory : path-like, optional
        Data directory (default: :func:`data_dir`).
    base_url : str, optional
        Where the archives live (default ``COLLABFEAT_DATA_URL`` or GroupLens).
    force : bool
        Download again even when the dataset is present.

    Returns
    -------
    Path
        The dataset's folder. The archive is unpacked to a temporary folder and renamed
        into place, so an interrupted download leaves nothing half-written.
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; downloadable: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    root = data_dir(directory)
    target = root / name
    if (target / spec.marker).exists() and not force:
        return target
    base = (base_url or os.environ.get(URL_ENV_VAR) or DEFAULT_BASE_URL).rstrip("/")
    url = f"{base}/{spec.archive}"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}.") as tmp:
        archive = Path(tmp) / spec.archive
        try:
            with urllib.request.urlopen(url, timeout=120) as resp, open(archive, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            raise InputError(f"could not download {url}: {exc}") from None
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(Path(tmp) / "unpacked")
        except zipfile.BadZipFile:
            raise InputError(f"{url}: not a zip archive") from None
        found = next((p.parent for p in (Path(tmp) / "unpacked").rglob(spec.marker)), None)
        if found is None:
            raise InputError(f"{url}: archive has no {spec.marker}")
        if spec.sha256 is not None:
            digest = hashlib.sha256((found / spec.marker).read_bytes()).hexdigest()
            if digest != spec.sha256:
                raise InputError(
                    f"{url}: {spec.marker} checksum mismatch (got {digest}, expected {spec.sha256})"
                )
        if target.exists():  # move the old copy aside first: the swap is two renames
            os.replace(target, Path(tmp) / "previous")
        os.replace(found, target)
    return target


# ---------------------------------------------------------------------- MovieLens helpers
def load_movielens(
    name: str = "ml-100k",
    directory: str | os.PathLike[str] | None = None,
    min_rating: float | None = None,
) -> Interactions:
    """Ratings of a MovieLens dataset as binary views (or likes with ``min_rating``)."""
    from cfcore.readers import read_interactions

    path = dataset_path(name, directory)
    file = {"ml-100k": "u.data", "ml-latest-small": "ratings.csv", "ml-1m": "ratings.dat"}[name]
    return read_interactions(path / file, min_rating=min_rating)


def load_interactions(
    source: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    min_rating: float | None = None,
    fmt: str = "auto",
    **read_options: object,
) -> Interactions:
    """Interactions from a file, or from a dataset name of the data directory (``ml-100k``).

    ``fmt`` and ``read_options`` (``sep``, ``header``, ``user_col``, ``item_col``,
    ``rating_col``) go to :func:`cfcore.readers.read_interactions`; they do not apply to a
    dataset name.
    """
    from cfcore.readers import read_interactions

    if not os.path.exists(source):
        if str(source) in DATASETS:
            return load_movielens(str(source), data_dir, min_rating=min_rating)
        raise InputError(
            f"{source}: no such file (interactions are a file or a dataset name: "
            f"{', '.join(DATASETS)})"
        )
    return read_interactions(source, fmt, min_rating=min_rating, **read_options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class UserDemographics:
    """ml-100k ``u.user``: id, age, gender (M/F), occupation, zip code."""

    user_ids: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    occupation: np.ndarray
    zip_code: np.ndarray


def movielens_100k_users(directory: str | os.PathLike[str] | None = None) -> UserDemographics:
    """User demographics of ml-100k (``u.user``, read by :func:`cfcore.readers.read_table`)."""
    from cfcore.readers import read_table

    table = read_table(dataset_path("ml-100k", directory) / "u.user")
    if len(table.names) != 5:
        raise InputError(f"{table.path}: expected 5 fields per line, got {len(table.names)}")
    cols = [table.column(name) for name in table.names]
    return UserDemographics(
        np.asarray(cols[0], dtype=np.int64),
        np.asarray(cols[1], dtype=np.int64),
        np.asarray(cols[2]),
        np.asarray(cols[3]),
        np.asarray(cols[4]),
    )


def movielens_posters(
    directory: str | os.PathLike[str] | None = None,
) -> tuple[Path, list[dict[str, str]]]:
    """The poster folder and the rows of its ``poster_index.csv`` (movieId, file, ml100k_item_ids…)."""
    import csv

    path = dataset_path("movielens-posters", directory)
    with open(path / "poster_index.csv", newline="", encoding="utf-8") as fh:
        return path, list(csv.DictReader(fh))
