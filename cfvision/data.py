"""Item images and their labels: where they are, whether they open, what class they belong to.

Three pieces, each with one job:

- an **image index** (item id → image file) from a folder of ``<item_id>.<ext>`` files, a CSV
  ``item_id,path``, or the MovieLens poster folder (its ``poster_index.csv`` maps posters to
  MovieLens-1M ids and to ml-100k item ids);
- **labels** (item id → class or classes) from a ``cfcore cluster`` pseudo-labels ``.npz`` or
  any CSV ``item_id,label`` (single-label) / ``item_id,labels`` with ``|``-separated labels
  (multi-label);
- an :class:`ItemImageDataset` that opens images by content (``PIL.Image.open`` ignores the
  extension, so a PNG named ``.jpg`` works), converts them to RGB (greyscale and palette images
  too) and applies the paper's transforms, scaled by one ``image_size``.

Item ids are compared as strings everywhere (``"7"`` from a file name matches ``7`` from a
labels file); :func:`ids_to_array` turns them back into int64 when they all are integers.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError, ModelFormatError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# ImageNet channel statistics: the normalisation every torchvision backbone was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Fang et al. §4.1 (after Krizhevsky et al.): resize the short side to 256, crop 224.
PAPER_RESIZE, PAPER_CROP = 256, 224


# ------------------------------------------------------------------------------ image index
def _normalise_id(value: Any) -> str:
    """Item ids as strings; integral floats ("7.0") become "7"."""
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].lstrip("-").isdigit():
        return text[:-2]
    return text


def ids_to_array(ids: Sequence[str]) -> np.ndarray:
    """int64 array when every id is an integer, else a unicode array (never object/pickle)."""
    try:
        return np.asarray([int(i) for i in ids], dtype=np.int64)
    except ValueError:
        return np.asarray(list(ids), dtype=str)


def _index_from_dir(folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            if entry.stem in index:
                raise InputError(
                    f"{folder}: two images for item {entry.stem!r} "
                    f"({index[entry.stem].name}, {entry.name})"
                )
            index[entry.stem] = entry
    if not index:
        raise InputError(f"{folder}: no image files (<item_id>{'|'.join(IMAGE_EXTENSIONS)})")
    return index


def _index_from_posters(folder: Path, id_space: str) -> dict[str, Path]:
    """``poster_index.csv``: ``movieId,file,…,ml100k_item_ids`` (space-separated, may be 2)."""
    table = folder / "poster_index.csv"
    index: dict[str, Path] = {}
    with open(table, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"movieId", "file"} | ({"ml100k_item_ids"} if id_space == "ml-100k" else set())
        if not need <= set(reader.fieldnames or ()):
            raise InputError(f"{table}: expected columns {sorted(need)}, found {reader.fieldnames}")
        for row in reader:
            path = folder / row["file"]
            if id_space == "ml-100k":
                # ml-100k lists a few movies twice: both item ids share the poster.
                for item in row["ml100k_item_ids"].split():
                    index[_normalise_id(item)] = path
            else:
                index[_normalise_id(row["movieId"])] = path
    if not index:
        raise InputError(f"{table}: no images map to {id_space} item ids")
    return index


def _index_from_csv(table: Path) -> dict[str, Path]:
    """CSV ``item_id,path`` (header optional; relative paths are relative to the CSV)."""
    index: dict[str, Path] = {}
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
    for lineno, row in enumerate(rows[start:], start + 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) <= max(id_col, path_col):
            raise InputError(f"{table}:{lineno}: expected item_id,path, got {row!r}")
        path = Path(row[path_col].strip())
        index[_normalise_id(row[id_col])] = path if path.is_absolute() else table.parent / path
    if not index:
        raise InputError(f"{table}: no rows")
    return index


def load_image_index(source: str | os.PathLike[str], id_space: str = "ml-100k") -> dict[str, Path]:
    """Map item id → image file.

    Parameters
    ----------
    source : path-like
        A folder of ``<item_id>.<ext>`` images; a folder holding ``poster_index.csv`` (the
        MovieLens posters); or a CSV ``item_id,path``.
    id_space : {"ml-100k", "movielens"}
        For the poster folder only: key the posters by ml-100k item id (a poster may serve two
        ml-100k ids) or by MovieLens(-1M / latest) ``movieId``.

    Returns
    -------
    dict of str to Path
        Paths are not opened here; :func:`check_images` does that.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"image source {source}: no such file or folder")
    if id_space not in ("ml-100k", "movielens"):
        raise InputError(f"id_space must be 'ml-100k' or 'movielens', got {id_space!r}")
    if source.is_dir():
        if (source / "poster_index.csv").exists():
            return _index_from_posters(source, id_space)
        if (source / "images").is_dir() and not any(
            p.suffix.lower() in IMAGE_EXTENSIONS for p in source.iterdir()
        ):
            return _index_from_dir(source / "images")
        return _index_from_dir(source)
    return _index_from_csv(source)


# ------------------------------------------------------------------------------ bad images
@dataclass
class ImageReport:
    """Which images could be used, and why the others could not."""

    ok: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)  # item → original mode (L, P, RGBA…)

    @property
    def bad(self) -> dict[str, str]:
        return {**self.missing, **self.unreadable}

    def lines(self) -> list[str]:
        out = [
            f"{len(self.ok)} images usable, {len(self.missing)} missing, "
            f"{len(self.unreadable)} unreadable, {len(self.converted)} converted to RGB"
        ]
        out += [f"missing    {k}: {v}" for k, v in self.missing.items()]
        out += [f"unreadable {k}: {v}" for k, v in self.unreadable.items()]
        out += [f"converted  {k}: mode {v} -> RGB" for k, v in self.converted.items()]
        return out

    def write(self, path: str | os.PathLike[str]) -> None:
        from cfcore.io import atomic_write_text

        atomic_write_text(path, "\n".join(self.lines()) + "\n")


def open_rgb(path: str | os.PathLike[str]):  # -> PIL.Image.Image
    """Open an image by its content (not its extension), fully decode it, convert to RGB.

    Raises
    ------
    OSError, ValueError
        Truncated or corrupt data (Pillow's own errors; :func:`check_images` reports them).
    """
    return _open(path)[0]


def _open(path: str | os.PathLike[str]):  # -> (PIL.Image.Image, original mode)
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now: a truncated file fails here, not inside a DataLoader worker
        return (img.convert("RGB") if img.mode != "RGB" else img.copy()), img.mode


def check_images(
    index: dict[str, Path],
    items: Sequence[str] | None = None,
    on_bad_image: str = "skip",
    cache: dict[str, Any] | None = None,
    cache_size: int | None = None,
    progress: bool = False,
) -> ImageReport:
    """Open every image once; list the missing and unreadable ones.

    Parameters
    ----------
    index : dict
        From :func:`load_image_index`.
    items : sequence of str, optional
        Only these items (default: all of ``index``). Items not in ``index`` count as missing.
    on_bad_image : {"skip", "fail"}
        ``fail`` raises :class:`InputError` naming every bad image; ``skip`` leaves them out.
    cache : dict, optional
        When given, the decoded RGB images are stored in it (item → PIL image), resized so the
        short side is ``cache_size`` when that is given — the decoded-image cache for small
        datasets (the transforms' first step is that same resize, so results do not change).
    """
    if on_bad_image not in ("skip", "fail"):
        raise InputError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
    from PIL import UnidentifiedImageError

    report = ImageReport()
    wanted = list(index) if items is None else list(items)
    it: Any = wanted
    if progress:
        from tqdm import tqdm

        it = tqdm(wanted, desc="checking images", unit="img", leave=False)
    for item in it:
        path = index.get(item)
        if path is None:
            report.missing[item] = "no image for this item"
            continue
        if not Path(path).is_file():
            report.missing[item] = f"{path}: no such file"
            continue
        try:
            img, mode = _open(path)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            report.unreadable[item] = f"{path}: {type(exc).__name__}: {exc}"
            continue
        if mode != "RGB":
            report.converted[item] = mode
        if cache is not None:
            cache[item] = _resize_short(img, cache_size) if cache_size else img
        report.ok.append(item)
    if on_bad_image == "fail" and report.bad:
        first = "; ".join(f"{k}: {v}" for k, v in list(report.bad.items())[:5])
        more = f" (and {len(report.bad) - 5} more)" if len(report.bad) > 5 else ""
        raise InputError(
            f"{len(report.bad)} bad image(s): {first}{more} "
            "(use --on-bad-image skip to leave them out)"
        )
    return report


def _resize_short(img, size: int):
    from torchvision.transforms import functional as F

    return F.resize(img, size)


# ------------------------------------------------------------------------------ labels
@dataclass
class Labels:
    """Item → class (single-label) or classes (multi-label).

    Attributes
    ----------
    item_ids : list of str
    targets : ndarray
        int64 ``(n,)`` class indices in ``0..n_classes-1``, or float32 ``(n, n_classes)``
        0/1 rows when ``multilabel``.
    class_names : list of str
        Name of each class (pseudo-classes are named by their number).
    multilabel : bool
    source : str
        Where the labels came from (for messages and checkpoints).
    """

    item_ids: list[str]
    targets: np.ndarray
    class_names: list[str]
    multilabel: bool = False
    source: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.item_ids)

    def subset(self, items: Sequence[str]) -> Labels:
        pos = {k: i for i, k in enumerate(self.item_ids)}
        rows = np.asarray([pos[i] for i in items], dtype=np.int64)
        return Labels(
            list(items), self.targets[rows], self.class_names, self.multilabel, self.source
        )

    def class_counts(self) -> np.ndarray:
        if self.multilabel:
            return self.targets.sum(axis=0).astype(np.int64)
        return np.bincount(self.targets, minlength=self.n_classes)


def _labels_from_npz(path: Path) -> Labels:
    from cfcore.io import load_artifact

    try:
        arrays, header = load_artifact(path)
    except ModelFormatError as exc:
        raise InputError(str(exc)) from None
    if "item_ids" not in arrays or "labels" not in arrays:
        raise InputError(
            f"{path}: a {header.get('kind')!r} file has no item_ids/labels arrays; "
            "expected a pseudo-labels file from `cfcore cluster`"
        )
    ids = [_normalise_id(i) for i in arrays["item_ids"].tolist()]
    labels = np.asarray(arrays["labels"])
    if labels.ndim == 2:  # a multi-label indicator matrix
        names = [str(i) for i in range(labels.shape[1])]
        return Labels(ids, (labels > 0).astype(np.float32), names, True, str(path))
    if labels.shape[0] != len(ids):
        raise InputError(f"{path}: {len(ids)} item_ids but {labels.shape[0]} labels")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise InputError(f"{path}: negative label {labels.min()}")
    k = int(header.get("k") or (labels.max() + 1 if labels.size else 0))
    if "centroids" in arrays:
        k = max(k, int(arrays["centroids"].shape[0]))
    k = max(k, int(labels.max()) + 1 if labels.size else 0)
    return Labels(ids, labels, [str(i) for i in range(k)], False, str(path))


def _labels_from_csv(path: Path) -> Labels:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(f"{path}: empty labels file")
    header = [c.strip().lower() for c in rows[0]]
    multilabel = False
    start = 0
    if header and header[0] in ("item_id", "item", "id"):
        start = 1
        if len(header) < 2 or header[1] not in ("label", "labels", "class", "classes"):
            raise InputError(
                f"{path}: expected a header item_id,label or item_id,labels, got {rows[0]!r}"
            )
        multilabel = header[1] in ("labels", "classes")
    ids: list[str] = []
    raw: list[list[str]] = []
    for lineno, row in enumerate(rows[start:], start + 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise InputError(f"{path}:{lineno}: expected item_id,label, got {row!r}")
        parts = [p.strip() for p in row[1].split("|")] if multilabel else [row[1].strip()]
        parts = [p for p in parts if p]
        if not multilabel and not parts:
            raise InputError(f"{path}:{lineno}: item {row[0]!r} has an empty label")
        ids.append(_normalise_id(row[0]))
        raw.append(parts)
    if not ids:
        raise InputError(f"{path}: no labelled items")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{path}: item {dup!r} is listed more than once")
    names = sorted(
        {p for parts in raw for p in parts},
        key=lambda s: (0, int(s)) if s.lstrip("-").isdigit() else (1, s),
    )
    pos = {n: i for i, n in enumerate(names)}
    if multilabel:
        targets = np.zeros((len(ids), len(names)), dtype=np.float32)
        for r, parts in enumerate(raw):
            targets[r, [pos[p] for p in parts]] = 1.0
    else:
        if all(n.isdigit() for n in names):  # integer classes keep their numbers
            k = max(int(n) for n in names) + 1
            names = [str(i) for i in range(k)]
            targets = np.asarray([int(p[0]) for p in raw], dtype=np.int64)
        else:
            targets = np.asarray([pos[p[0]] for p in raw], dtype=np.int64)
    return Labels(ids, targets, names, multilabel, str(path))


def load_labels(path: str | os.PathLike[str]) -> Labels:
    """Read labels from a pseudo-labels ``.npz`` (``cfcore cluster``) or a CSV.

    CSV forms: ``item_id,label`` (one class per item; integer labels keep their numbers,
    other labels are numbered in sorted order) or ``item_id,labels`` with ``|``-separated
    labels (multi-label, e.g. MovieLens genres ``Action|Comedy``).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"labels file {path}: no such file")
    if path.suffix.lower() == ".npz":
        return _labels_from_npz(path)
    return _labels_from_csv(path)


def match_items(index: dict[str, Path], labels: Labels, what: str = "labels") -> list[str]:
    """Items that have both an image and a label, in label order.

    Raises
    ------
    InputError
        No item has both (ids from different id spaces — e.g. MovieLens-1M movie ids against
        ml-100k item ids — are the usual cause).
    """
    common = [i for i in labels.item_ids if i in index]
    if not common:
        ex_l = ", ".join(labels.item_ids[:3])
        ex_i = ", ".join(list(index)[:3])
        raise InputError(
            f"no item of the {what} ({labels.source}; e.g. {ex_l}) has an image "
            f"(image ids e.g. {ex_i}): do the ids come from the same dataset?"
        )
    return common


# ------------------------------------------------------------------------------ transforms
def resize_size(image_size: int) -> int:
    """Short side before cropping: the paper's 256/224 ratio applied to ``image_size``."""
    return int(round(image_size * PAPER_RESIZE / PAPER_CROP))


def train_transform(image_size: int = PAPER_CROP) -> Callable:
    """Fang §4.1: resize the short side to 256·s/224, random ``s``×``s`` crop, horizontal flip."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize_size(image_size)),
            T.RandomCrop(image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int = PAPER_CROP) -> Callable:
    """Resize the short side to 256·s/224, center crop ``s``×``s`` (deterministic)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize_size(image_size)),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


# ------------------------------------------------------------------------------ dataset
class ItemImageDataset:
    """``(image tensor, target)`` pairs for a list of items (a map-style torch Dataset).

    Parameters
    ----------
    items : sequence of str
        Item ids, all present in ``index`` (use :func:`check_images` first).
    index : dict
        Item → image path.
    targets : ndarray, optional
        One row per item (int64 class or float32 multi-hot); ``-1`` is returned when absent.
    transform : callable
        PIL image → tensor.
    cache : dict, optional
        Decoded images (item → PIL image) from :func:`check_images`; avoids decoding JPEGs
        every epoch.
    """

    def __init__(
        self,
        items: Sequence[str],
        index: dict[str, Path],
        targets: np.ndarray | None,
        transform: Callable,
        cache: dict[str, Any] | None = None,
    ) -> None:
        self.items = list(items)
        self.paths = [index[i] for i in self.items]
        self.targets = targets
        self.transform = transform
        self.cache = cache
        if targets is not None and len(targets) != len(self.items):
            raise InputError(f"{len(self.items)} items but {len(targets)} targets")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch

        img = self.cache.get(self.items[i]) if self.cache is not None else None
        if img is None:
            img = open_rgb(self.paths[i])
        x = self.transform(img)
        if self.targets is None:
            return x, torch.tensor(-1)
        return x, torch.as_tensor(self.targets[i])
