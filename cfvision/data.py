"""Item images and their labels: where they are, whether they open, which items they match.

Four pieces, each with one job:

- an **image index** (:class:`ImageIndex`: raw item ids → image files) from a folder of
  ``<item_id>.<ext>`` files, a CSV ``item_id,path``, or the MovieLens poster folder, whose
  ``poster_index.csv`` names every poster by two id spaces — MovieLens ``movieId`` (ml-1m,
  ml-latest-small) and ml-100k item id — so the id space must be chosen explicitly;
- **labels** (:class:`Labels`: item → class or classes) from a ``cfcore cluster``
  pseudo-labels ``.npz`` or anything :func:`cfcore.labels.read_labels` reads (a labels CSV,
  MovieLens ``movies.csv``/``movies.dat``/``u.item``, or a dataset name such as ``ml-100k``);
- **matching** (:func:`match_items`): which labelled items have an image, and a refusal to go
  on when too few do (ids from another id space match only by coincidence);
- **images of items** (:func:`prepare_images`): every image decoded once into the uint8 cache
  of :mod:`cfvision.cache`, with a report of the missing and unreadable ones.

Ids are raw ids as :mod:`cfcore.ids` handles them everywhere: int64 when every id is an
integer, else strings; ``"7"`` from a file name matches ``7`` from a labels file.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError, ModelFormatError
from cfcore.ids import id_positions, parse_ids

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# ImageNet channel statistics: the normalisation every torchvision backbone was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Fang et al. §4.1 (after Krizhevsky et al.): short side to 256, central square, crops of 224.
PAPER_RESIZE, PAPER_CROP = 256, 224

#: The dataset name of the MovieLens poster folder.
POSTERS_DATASET = "movielens-posters"

#: The id spaces of the MovieLens poster folder (``--id-space``).
ID_SPACES = ("ml-100k", "movielens")
POSTER_INDEX = "poster_index.csv"

#: Below this fraction of labelled items with an image, training stops (``allow_partial``).
MIN_MATCHED_FRACTION = 0.5


def resize_size(image_size: int) -> int:
    """Side ``R`` of the stored square: the paper's 256/224 ratio applied to ``image_size``."""
    return int(round(image_size * PAPER_RESIZE / PAPER_CROP))


# ------------------------------------------------------------------------------ image index
@dataclass
class ImageIndex:
    """Item ids and their image files (not opened yet).

    Attributes
    ----------
    item_ids : ndarray
        Raw ids (int64 or str), unique.
    paths : list of Path
        ``paths[k]`` is the image of ``item_ids[k]`` (two ids may share a file).
    source : str
    id_space : str or None
        ``ml-100k`` or ``movielens`` for the poster folder, else None.
    """

    item_ids: np.ndarray
    paths: list[Path]
    source: str = ""
    id_space: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def positions(self, ids: Any) -> np.ndarray:
        """Position of each raw id (``-1`` when it has no image)."""
        return id_positions(self.item_ids, ids)

    def path(self, item: Any) -> Path:
        pos = int(self.positions([item])[0])
        if pos < 0:
            raise InputError(f"{self.source}: no image for item {item!r}")
        return self.paths[pos]


def _index(ids: list[str], paths: list[Path], source: str, space: str | None) -> ImageIndex:
    arr = parse_ids(ids)
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != len(arr):
        dup = uniq[counts > 1][0].item()
        files = [p.name for i, p in zip(arr.tolist(), paths, strict=True) if i == dup]
        raise InputError(f"{source}: two images for item {dup!r} ({', '.join(files[:2])})")
    return ImageIndex(arr, paths, source, space)


def _index_from_dir(folder: Path) -> ImageIndex:
    files = [
        p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise InputError(f"{folder}: no image files (<item_id>{'|'.join(IMAGE_EXTENSIONS)})")
    return _index([p.stem for p in files], files, str(folder), None)


def _index_from_posters(folder: Path, id_space: str) -> ImageIndex:
    """``poster_index.csv``: ``movieId,file,…,ml100k_item_ids`` (space-separated, may be 2)."""
    table = folder / POSTER_INDEX
    ids: list[str] = []
    paths: list[Path] = []
    with open(table, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"movieId", "file"} | ({"ml100k_item_ids"} if id_space == "ml-100k" else set())
        if not need <= set(reader.fieldnames or ()):
            raise InputError(f"{table}: expected columns {sorted(need)}, found {reader.fieldnames}")
        for row in reader:
            path = folder / row["file"]
            # ml-100k lists a few movies twice: both item ids share the poster.
            keys = row["ml100k_item_ids"].split() if id_space == "ml-100k" else [row["movieId"]]
            ids += keys
            paths += [path] * len(keys)
    if not ids:
        raise InputError(f"{table}: no images map to {id_space} item ids")
    return _index(ids, paths, str(folder), id_space)


def _index_from_csv(table: Path) -> ImageIndex:
    """CSV ``item_id,path`` (header optional; relative paths are relative to the CSV)."""
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(f"{table}: empty image index")
    header = [c.strip().lower() for c in rows[0]]
    id_col, path_col, start = 0, 1, 0
    if "item_id" in header or "path" in header or "file" in header:
        start = 1
        id_col = header.index("item_id") if "item_id" in header else 0
        path_col = next((header.index(c) for c in ("path", "file", "image") if c in header), 1)
    ids: list[str] = []
    paths: list[Path] = []
    for lineno, row in enumerate(rows[start:], start + 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) <= max(id_col, path_col):
            raise InputError(f"{table}:{lineno}: expected item_id,path, got {row!r}")
        path = Path(row[path_col].strip())
        ids.append(row[id_col])
        paths.append(path if path.is_absolute() else table.parent / path)
    if not ids:
        raise InputError(f"{table}: no rows")
    return _index(ids, paths, str(table), None)


def is_poster_folder(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a folder with a ``poster_index.csv`` (the MovieLens posters)."""
    return Path(source).is_dir() and (Path(source) / POSTER_INDEX).is_file()


def image_source(
    source: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """``source`` as a path; the name ``movielens-posters`` (when no such file exists) is the
    poster folder of the data directory (:func:`cfcore.datasets.dataset_path`)."""
    if str(source) == POSTERS_DATASET and not os.path.exists(source):
        from cfcore.datasets import dataset_path

        return dataset_path(POSTERS_DATASET, data_dir)
    return Path(source)


def load_image_index(
    source: str | os.PathLike[str],
    id_space: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> ImageIndex:
    """Map item ids to image files.

    Parameters
    ----------
    source : path-like
        A folder of ``<item_id>.<ext>`` images (or with such an ``images/`` subfolder); the
        MovieLens poster folder (holding ``poster_index.csv``), or its dataset name
        ``movielens-posters``; or a CSV ``item_id,path``.
    id_space : {"ml-100k", "movielens"}, optional
        Required for the poster folder, ignored otherwise: key the posters by ml-100k item id
        (a poster may serve two ml-100k ids) or by MovieLens ``movieId`` (ml-1m,
        ml-latest-small and the other MovieLens releases).
    data_dir : path-like, optional
        The data directory for ``movielens-posters`` (:func:`cfcore.datasets.data_dir`).

    Raises
    ------
    InputError
        No such file or folder, no images, two images for one id, or the poster folder
        without ``id_space``.
    """
    source = image_source(source, data_dir)
    if not source.exists():
        raise InputError(f"image source {source}: no such file or folder")
    if id_space is not None and id_space not in ID_SPACES:
        raise InputError(f"id_space must be one of {', '.join(ID_SPACES)}, got {id_space!r}")
    if source.is_dir():
        if is_poster_folder(source):
            if id_space is None:
                raise InputError(
                    f"{source} is the MovieLens poster folder, which names each poster by "
                    "two kinds of ids: choose --id-space ml-100k (item ids of ml-100k) or "
                    "--id-space movielens (movieId of ml-1m, ml-latest-small)"
                )
            return _index_from_posters(source, id_space)
        if (source / "images").is_dir() and not any(
            p.suffix.lower() in IMAGE_EXTENSIONS for p in source.iterdir()
        ):
            return _index_from_dir(source / "images")
        return _index_from_dir(source)
    return _index_from_csv(source)


def open_image_index(
    source: str | os.PathLike[str],
    id_space: str | None,
    item_ids: Any,
    data_dir: str | os.PathLike[str] | None = None,
) -> ImageIndex:
    """:func:`load_image_index`; when it fails on the poster folder for want of an id space,
    the error says how many of ``item_ids`` (the labelled items) each id space would match."""
    source = image_source(source, data_dir)
    try:
        return load_image_index(source, id_space)
    except InputError as exc:
        hint = id_space_hint(source, item_ids) if id_space is None else ""
        raise InputError(f"{exc}{hint}") from None


def id_space_hint(source: str | os.PathLike[str], item_ids: Any) -> str:
    """For the poster folder: how many of ``item_ids`` each id space matches (a hint)."""
    if not is_poster_folder(source):
        return ""
    ids = np.asarray(item_ids)
    counts = [
        f"{int((load_image_index(source, s).positions(ids) >= 0).sum()):,} as {s} ids"
        for s in ID_SPACES
    ]
    return f"; of {len(ids):,} labelled items, " + " and ".join(counts) + " have a poster"


# ------------------------------------------------------------------------------ labels
@dataclass
class Labels:
    """Item → class (single-label) or classes (multi-label), for training and probes.

    Attributes
    ----------
    item_ids : ndarray
        Raw ids (int64 or str), unique; only items with at least one label.
    targets : ndarray
        int64 ``(n,)`` class indices in ``0..n_classes-1``, or float32 ``(n, n_classes)``
        0/1 rows when ``multilabel``.
    class_names : list of str
        Name of each class (pseudo-classes are named by their number).
    multilabel : bool
    source : str
        Where the labels came from (for messages and checkpoints).
    n_unlabelled : int
        Items of the source without any label (e.g. MovieLens ``(no genres listed)``), left
        out.
    """

    item_ids: np.ndarray
    targets: np.ndarray
    class_names: list[str]
    multilabel: bool = False
    source: str = ""
    n_unlabelled: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.item_ids)

    def select(self, rows: Any) -> Labels:
        """The labels of the items at positions ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return Labels(
            self.item_ids[rows],
            self.targets[rows],
            self.class_names,
            self.multilabel,
            self.source,
            self.n_unlabelled,
        )

    def class_counts(self) -> np.ndarray:
        if self.multilabel:
            return self.targets.sum(axis=0).astype(np.int64)
        return np.bincount(self.targets, minlength=self.n_classes)

    def one_hot(self) -> np.ndarray:
        """Binary ``(n, n_classes)`` float32 matrix (multi-label targets as they are)."""
        if self.multilabel:
            return self.targets
        return np.eye(self.n_classes, dtype=np.float32)[self.targets]


def _labels_from_npz(path: Path) -> Labels:
    from cfcore.cluster import PseudoLabels

    try:
        pseudo = PseudoLabels.load(path)
    except ModelFormatError as exc:
        raise InputError(f"{exc}; expected a pseudo-labels file from `cfcore cluster`") from None
    names = [str(c) for c in range(pseudo.k)]  # K from the file: empty classes are kept
    ids = parse_ids(pseudo.item_ids)
    return Labels(ids, pseudo.labels.astype(np.int64), names, False, str(path))


def load_labels(
    source: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    item_col: str | int | None = None,
    labels_col: str | int | None = None,
) -> Labels:
    """Read labels: a pseudo-labels ``.npz`` (``cfcore cluster``) or any source of
    :func:`cfcore.labels.read_labels` — a CSV ``item_id,label`` (one class per item) or
    ``item_id,labels`` (``|``-separated, multi-label), ``movies.csv``, ``movies.dat``,
    ``u.item``, or a dataset name (``ml-100k``: its genres).

    Items without any label are left out (counted in ``n_unlabelled``).
    """
    from cfcore.labels import read_labels

    path = Path(source)
    if path.suffix.lower() == ".npz" and path.is_file():
        return _labels_from_npz(path)
    lab = read_labels(source, item_col, labels_col, data_dir=data_dir)
    keep = lab.labelled()
    lab = lab.select(np.flatnonzero(keep))
    targets = lab.matrix.astype(np.float32) if lab.multilabel else lab.classes()
    return Labels(
        lab.item_ids, targets, lab.class_names, lab.multilabel, lab.source, int((~keep).sum())
    )


# ------------------------------------------------------------------------------ matching
@dataclass
class Match:
    """Which labelled items have an image."""

    label_rows: np.ndarray  #: positions in the labels of the items with an image, label order
    n_labelled: int
    unmatched: np.ndarray  #: raw ids of labelled items without an image

    @property
    def n_matched(self) -> int:
        return len(self.label_rows)

    @property
    def fraction(self) -> float:
        return self.n_matched / max(self.n_labelled, 1)

    def line(self) -> str:
        first = ", ".join(str(i) for i in self.unmatched[:5].tolist())
        return (
            f"{self.n_labelled:,} labelled items: {self.n_matched:,} with an image "
            f"({100 * self.fraction:.1f}%), {len(self.unmatched):,} without"
            + (f" (e.g. {first})" if first else "")
        )


def match_items(
    index: ImageIndex,
    labels: Labels,
    allow_partial: bool = False,
    min_fraction: float = MIN_MATCHED_FRACTION,
) -> Match:
    """Labelled items that have an image, and a refusal when too few do.

    Ids from another id space match only by coincidence (ml-latest-small movie ids against
    ml-100k item ids: about a third "match", all wrong), so the fraction is checked.

    Raises
    ------
    InputError
        No labelled item has an image; or fewer than ``min_fraction`` of them do and
        ``allow_partial`` is False. The message says how many matched, and for the poster
        folder how many each id space would match.
    """
    pos = index.positions(labels.item_ids)
    match = Match(np.flatnonzero(pos >= 0), len(labels), labels.item_ids[pos < 0])
    hint = id_space_hint(index.source, labels.item_ids) if index.id_space else ""
    if match.n_matched == 0:
        ex_l = ", ".join(str(i) for i in labels.item_ids[:3].tolist())
        ex_i = ", ".join(str(i) for i in index.item_ids[:3].tolist())
        raise InputError(
            f"no item of the labels ({labels.source}; e.g. {ex_l}) has an image "
            f"(image ids e.g. {ex_i}): do the ids come from the same dataset?{hint}"
        )
    if match.fraction < min_fraction and not allow_partial:
        raise InputError(
            f"only {match.n_matched:,} of {match.n_labelled:,} labelled items "
            f"({100 * match.fraction:.1f}%) have an image in {index.source}, below "
            f"{100 * min_fraction:.0f}%: the ids may come from another dataset{hint}. "
            "Pass --allow-partial to train on the matched items anyway"
        )
    return match


# ------------------------------------------------------------------------------ images
@dataclass
class ImageReport:
    """Which images could be used, and why the others could not (keys: ids as text)."""

    ok: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)  # item → original mode (L, P, RGBA…)
    match: Match | None = None

    @property
    def bad(self) -> dict[str, str]:
        return {**self.missing, **self.unreadable}

    def lines(self) -> list[str]:
        out = [
            f"{len(self.ok)} images usable, {len(self.missing)} missing, "
            f"{len(self.unreadable)} unreadable, {len(self.converted)} converted to RGB"
        ]
        if self.match is not None:
            out.append(self.match.line())
        out += [f"missing    {k}: {v}" for k, v in self.missing.items()]
        out += [f"unreadable {k}: {v}" for k, v in self.unreadable.items()]
        out += [f"converted  {k}: mode {v} -> RGB" for k, v in self.converted.items()]
        if self.match is not None and len(self.match.unmatched):
            out += [f"no image   {i}" for i in self.match.unmatched.tolist()]
        return out

    def write(self, path: str | os.PathLike[str]) -> None:
        from cfcore.io import atomic_write_text

        atomic_write_text(path, "\n".join(self.lines()) + "\n")


@dataclass
class ItemImages:
    """Items with a usable image, and the cache row holding it."""

    item_ids: np.ndarray
    rows: np.ndarray
    cache: Any  # cfvision.cache.ImageCache
    report: ImageReport

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def size(self) -> int:
        """Side ``R`` of the cached squares."""
        return int(self.cache.size)


def prepare_images(
    index: ImageIndex,
    item_ids: Any = None,
    size: int = PAPER_RESIZE,
    cache_dir: str | os.PathLike[str] | None = None,
    on_bad_image: str = "skip",
    progress: bool = False,
) -> ItemImages:
    """Decode the images of ``item_ids`` once into the uint8 cache (:mod:`cfvision.cache`).

    Parameters
    ----------
    index : ImageIndex
    item_ids : array-like, optional
        Items wanted (default: every item of ``index``); ids without an image count as
        missing.
    size : int
        Side of the stored squares (:func:`resize_size` of the crop size).
    cache_dir : path-like, optional
        Where caches live (default :func:`cfvision.cache.default_cache_dir`).
    on_bad_image : {"skip", "fail"}
        ``fail`` raises :class:`InputError` naming every missing or unreadable image; ``skip``
        leaves them out (the report lists them).

    Returns
    -------
    ItemImages
        The usable items in the order asked, their cache rows, and the report.
    """
    from cfvision import cache as image_cache

    if on_bad_image not in ("skip", "fail"):
        raise InputError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
    wanted = index.item_ids if item_ids is None else parse_ids(np.asarray(item_ids))
    pos = index.positions(wanted)
    report = ImageReport()
    keys = [str(i) for i in wanted.tolist()]
    for k in np.flatnonzero(pos < 0):
        report.missing[keys[k]] = "no image for this item"
    paths = [index.paths[p] for p in pos[pos >= 0]]
    digests = image_cache.file_digests(paths)
    digest_of: list[str | None] = [None] * len(wanted)
    for k, d in zip(np.flatnonzero(pos >= 0), digests, strict=True):
        digest_of[k] = d
        if d is None:
            report.missing[keys[k]] = f"{index.paths[pos[k]]}: no such file or unreadable"
    files: dict[str, Path] = {}
    for k in range(len(wanted)):
        if digest_of[k] is not None:
            files.setdefault(digest_of[k], index.paths[pos[k]])
    directory = Path(cache_dir) if cache_dir is not None else image_cache.default_cache_dir()
    cache = image_cache.find_cache(directory, size, set(files))
    if cache is None:
        cache = image_cache.build_cache(
            list(files.values()), list(files), size, directory, progress
        )
    rows = cache.rows(digest_of)
    for k in range(len(wanted)):
        d = digest_of[k]
        if d is None:
            continue
        if d in cache.unreadable:
            report.unreadable[keys[k]] = f"{index.paths[pos[k]]}: {cache.unreadable[d]}"
        elif d in cache.modes:
            report.converted[keys[k]] = cache.modes[d]
    usable = np.flatnonzero(rows >= 0)
    report.ok = [keys[k] for k in usable]
    if on_bad_image == "fail" and report.bad:
        first = "; ".join(f"{k}: {v}" for k, v in list(report.bad.items())[:5])
        more = f" (and {len(report.bad) - 5} more)" if len(report.bad) > 5 else ""
        raise InputError(
            f"{len(report.bad)} bad image(s): {first}{more} "
            "(use --on-bad-image skip to leave them out)"
        )
    return ItemImages(wanted[usable], rows[usable], cache, report)
