"""Categories of items — genres, tags, classes — read from the files people have.

One reader, :func:`read_labels`, for every form of "item → set of labels":

- a **CSV with a header** naming an item id column and a labels column whose values are
  ``|``-separated (``item_id,labels`` by default; ``item_col``/``labels_col`` choose others,
  by name or 0-based position; comma or tab separated; quoted fields allowed);
- a **single-label CSV** ``item_id,label`` (the column is named ``label`` or ``class``: one
  class per item, as ``cfcore cluster`` writes beside its ``.npz``);
- MovieLens **``movies.csv``** (``movieId,title,genres``: ml-latest, ml-latest-small, ml-20m…);
- MovieLens **``movies.dat``** (``movieId::title::genres``, Latin-1: ml-1m, ml-10m);
- ml-100k **``u.item``** (19 genre flags, named by ``u.genre`` beside it);
- a **dataset name** of the data directory: ``ml-100k`` (its ``u.item``),
  ``ml-latest-small`` (``movies.csv``), ``ml-1m`` (``movies.dat``).

MovieLens's placeholders mean *no genre*: ml-100k's ``unknown`` flag is not a class and
``(no genres listed)`` is an empty set, so such items are unlabelled rather than members of a
pseudo-genre.

The result is an :class:`ItemLabels`: raw item ids (int64 when every id is an integer, see
:func:`cfcore.ids.parse_ids`), class names, and a binary items × classes ``uint8`` matrix.
Torch-free: ``cfvision`` (training, linear probes) and ``cfcore retrieval-report`` (genre
agreement) read labels through it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError
from cfcore.ids import id_positions, parse_ids

#: Dataset name → the file of the dataset that holds its items' genres.
LABEL_FILES = {"ml-100k": "u.item", "ml-latest-small": "movies.csv", "ml-1m": "movies.dat"}

#: Column names recognised without ``item_col``/``labels_col`` (case-insensitive, in order).
ITEM_COLUMNS = ("item_id", "itemid", "item", "movieid", "id")
LABELS_COLUMNS = ("labels", "genres", "classes", "tags", "label", "class")
SINGLE_LABEL_COLUMNS = ("label", "class")

#: Label values that MovieLens uses for "no genre".
MOVIELENS_NO_GENRE = ("(no genres listed)", "unknown")


@dataclass(frozen=True)
class ItemLabels:
    """Items and the classes each belongs to.

    Attributes
    ----------
    item_ids : ndarray, shape (n_items,)
        Raw item ids (int64 or str), unique, in file order.
    class_names : list of str
        Class of each column. Integer names sort numerically; a single-label file with
        integer classes keeps their numbers (class ``c`` is column ``c``; an unused number is
        an empty class).
    matrix : ndarray of uint8, shape (n_items, n_classes)
        ``matrix[i, c] = 1`` when item ``i`` has class ``c``. A row of zeros is an item
        without a label (e.g. MovieLens ``(no genres listed)``).
    multilabel : bool
        False for single-label files (``item_id,label``): every row has exactly one 1.
    source : str
        Where the labels came from (for messages).
    """

    item_ids: np.ndarray
    class_names: list[str]
    matrix: np.ndarray
    multilabel: bool = True
    source: str = ""

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        kind = "multi-label" if self.multilabel else "single-label"
        return (
            f"ItemLabels({self.n_items} items × {self.n_classes} classes, {kind}, "
            f"{int(self.labelled().sum())} labelled, from {self.source or '?'})"
        )

    def class_counts(self) -> np.ndarray:
        """Items per class, int64 ``(n_classes,)``."""
        return self.matrix.sum(axis=0, dtype=np.int64)

    def labelled(self) -> np.ndarray:
        """Boolean ``(n_items,)``: the item has at least one label."""
        return self.matrix.any(axis=1)

    def classes(self) -> np.ndarray:
        """Single-label data: the class index of every item, int64 ``(n_items,)``.

        Raises
        ------
        InputError
            An item has no class or more than one.
        """
        per_row = self.matrix.sum(axis=1)
        bad = np.flatnonzero(per_row != 1)
        if len(bad):
            raise InputError(
                f"{self.source}: item {self.item_ids[bad[0]].item()!r} has "
                f"{int(per_row[bad[0]])} classes; single-label data needs exactly one"
            )
        return self.matrix.argmax(axis=1).astype(np.int64)

    def positions(self, ids: Any) -> np.ndarray:
        """Row of each raw id in ``ids`` (int64), ``-1`` where the item has no entry."""
        return id_positions(self.item_ids, ids)

    def select(self, rows: Any) -> ItemLabels:
        """The labels of the items at ``rows`` (positions, in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return ItemLabels(
            self.item_ids[rows], self.class_names, self.matrix[rows], self.multilabel, self.source
        )

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write ``item_id,labels`` (``|``-separated; ``item_id,label`` for single-label data)
        atomically — the form :func:`read_labels` reads back."""
        from cfcore.io import atomic_write_text

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["item_id", "labels" if self.multilabel else "label"])
        names = np.asarray(self.class_names, dtype=object)
        for item, row in zip(self.item_ids.tolist(), self.matrix, strict=True):
            writer.writerow([item, "|".join(names[row.astype(bool)])])
        atomic_write_text(path, buf.getvalue())
        return Path(path)


# ------------------------------------------------------------------------------ building
def _sort_key(name: str) -> tuple[int, int, str]:
    try:
        return (0, int(name), "")
    except ValueError:
        return (1, 0, name)


def build_labels(
    item_ids: list[str],
    label_sets: list[list[str]],
    source: str,
    multilabel: bool = True,
    class_names: list[str] | None = None,
    lines: list[int] | None = None,
) -> ItemLabels:
    """:class:`ItemLabels` from raw ids and each item's label names (the readers' last step).

    ``class_names`` fixes the columns (and their order); by default they are the labels that
    occur, integers sorted numerically, others alphabetically after them.
    """
    if not item_ids:
        raise InputError(f"{source}: no items")
    ids = parse_ids(item_ids)
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if len(uniq) != len(ids):
        dup = int(np.flatnonzero(counts > 1)[0])
        where = ""
        if lines is not None:
            rows = np.flatnonzero(ids == uniq[dup])[:2]
            where = f" (lines {lines[rows[0]]} and {lines[rows[1]]})"
        raise InputError(f"{source}: item {uniq[dup].item()!r} is listed more than once{where}")
    if class_names is None:
        names = sorted({n for labels in label_sets for n in labels}, key=_sort_key)
        if not multilabel and names and all(_sort_key(n)[0] == 0 for n in names):
            numbers = [int(n) for n in names]
            if min(numbers) >= 0:  # integer classes keep their numbers
                names = [str(c) for c in range(max(numbers) + 1)]
                label_sets = [[str(int(n)) for n in labels] for labels in label_sets]
        class_names = names
    if not any(label_sets):
        raise InputError(f"{source}: no item has a label")
    column = {name: c for c, name in enumerate(class_names)}
    matrix = np.zeros((len(ids), len(class_names)), dtype=np.uint8)
    for r, labels in enumerate(label_sets):
        for name in labels:
            matrix[r, column[name]] = 1
    return ItemLabels(ids, list(class_names), matrix, multilabel, source)


# ------------------------------------------------------------------------------ formats
def _split(value: str, sep: str, drop: tuple[str, ...] = ()) -> list[str]:
    parts = [p.strip() for p in value.split(sep)] if sep else [value.strip()]
    return [p for p in dict.fromkeys(parts) if p and p not in drop]


def _column(spec: str | int | None, header: list[str], wanted: tuple[str, ...], what: str, path):
    """Index of a column named ``spec`` (or at position ``spec``), else the first of ``wanted``."""
    lowered = [h.strip().lower() for h in header]
    if spec is None:
        for name in wanted:
            if name in lowered:
                return lowered.index(name)
        raise InputError(
            f"{path}: no {what} column among {header} (expected a header naming one of "
            f"{', '.join(wanted)}; choose it with --{what.split()[0]}-col)"
        )
    if isinstance(spec, int) or str(spec).isdigit():
        pos = int(spec)
        if pos >= len(header):
            raise InputError(f"{path}: {what} column {pos} does not exist ({len(header)} columns)")
        return pos
    if str(spec).strip().lower() not in lowered:
        raise InputError(f"{path}: no column {spec!r} (columns: {', '.join(header)})")
    return lowered.index(str(spec).strip().lower())


def _read_csv(
    path: Path, item_col: str | int | None, labels_col: str | int | None, sep: str
) -> ItemLabels:
    text = path.read_text(encoding="utf-8-sig")
    first = text.split("\n", 1)[0]
    if not first.strip():
        raise InputError(f"{path}: empty labels file")
    delimiter = "\t" if "\t" in first else ","
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(rows)
    i_col = _column(item_col, header, ITEM_COLUMNS, "item id", path)
    l_col = _column(labels_col, header, LABELS_COLUMNS, "labels", path)
    if i_col == l_col:
        raise InputError(f"{path}: the item id and labels columns are the same ({header[i_col]})")
    lowered = [h.strip().lower() for h in header]
    movielens = lowered[:3] == ["movieid", "title", "genres"]
    multilabel = lowered[l_col] not in SINGLE_LABEL_COLUMNS
    drop = MOVIELENS_NO_GENRE if movielens else ()
    ids: list[str] = []
    sets: list[list[str]] = []
    lines: list[int] = []
    need = max(i_col, l_col) + 1
    for lineno, row in enumerate(rows, 2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < need:
            raise InputError(
                f"{path}:{lineno}: expected {len(header)} fields ({delimiter!r}-separated), "
                f"got {len(row)}: {delimiter.join(row)[:80]!r}"
            )
        labels = _split(row[l_col], sep if multilabel else "", drop)
        if not multilabel and len(labels) != 1:
            raise InputError(f"{path}:{lineno}: item {row[i_col].strip()!r} has no label")
        ids.append(row[i_col])
        sets.append(labels)
        lines.append(lineno)
    return build_labels(ids, sets, str(path), multilabel, lines=lines)


def _records(path: Path, sep: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of the non-empty lines of a Latin-1 MovieLens file."""
    for lineno, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if line.strip():
            yield lineno, line.split(sep)


def _read_movies_dat(path: Path) -> ItemLabels:
    """``movieId::title::genres`` (MovieLens 1M / 10M), Latin-1."""
    ids, sets, lines = [], [], []
    for lineno, fields in _records(path, "::"):
        if len(fields) != 3:
            raise InputError(
                f"{path}:{lineno}: expected movieId::title::genres, got {'::'.join(fields)[:80]!r}"
            )
        ids.append(fields[0])
        sets.append(_split(fields[2], "|", MOVIELENS_NO_GENRE))
        lines.append(lineno)
    return build_labels(ids, sets, str(path), lines=lines)


def _read_u_item(path: Path) -> ItemLabels:
    """ml-100k ``u.item``: ``id|title|date|video date|url|`` + 19 genre flags (``u.genre``)."""
    genre_file = path.parent / "u.genre"
    if not genre_file.is_file():
        raise InputError(f"{path}: the genre names are in u.genre beside it, which is missing")
    names = [fields[0] for _, fields in _records(genre_file, "|")]
    keep = [g for g, name in enumerate(names) if name not in MOVIELENS_NO_GENRE]
    ids, sets, lines = [], [], []
    for lineno, fields in _records(path, "|"):
        if len(fields) != 5 + len(names):
            raise InputError(
                f"{path}:{lineno}: expected {5 + len(names)} '|'-separated fields "
                f"(5 + {len(names)} genre flags of u.genre), got {len(fields)}"
            )
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise InputError(f"{path}:{lineno}: genre flags must be 0 or 1, got {flags}")
        ids.append(fields[0])
        sets.append([names[g] for g in keep if flags[g] == "1"])
        lines.append(lineno)
    return build_labels(ids, sets, str(path), class_names=[names[g] for g in keep], lines=lines)


def _resolve(source: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(source)
    if path.exists():
        if path.is_dir():
            for name in ("u.item", "movies.csv", "movies.dat"):
                if (path / name).is_file():
                    return path / name
            raise InputError(f"labels {path}: a folder without u.item, movies.csv or movies.dat")
        return path
    if str(source) in LABEL_FILES:
        from cfcore.datasets import dataset_path

        return dataset_path(str(source), data_dir) / LABEL_FILES[str(source)]
    raise InputError(
        f"labels {source}: no such file, and not a dataset name ({', '.join(LABEL_FILES)})"
    )


def read_labels(
    source: str | os.PathLike[str],
    item_col: str | int | None = None,
    labels_col: str | int | None = None,
    sep: str = "|",
    data_dir: str | os.PathLike[str] | None = None,
) -> ItemLabels:
    """Read the classes of items from a labels file or a dataset name (see the module docstring).

    Parameters
    ----------
    source : path-like or str
        A CSV with a header, ``movies.csv``, ``movies.dat``, ``u.item`` (or a dataset folder
        holding one of them), or a dataset name: ``ml-100k``, ``ml-latest-small``, ``ml-1m``.
    item_col, labels_col : str or int, optional
        CSV only: the item id and labels columns, by header name or 0-based position.
        Default: the first header among :data:`ITEM_COLUMNS` / :data:`LABELS_COLUMNS`.
    sep : str
        Separator between the labels of one item (``|``, MovieLens's).
    data_dir : path-like, optional
        Data directory for dataset names (see :func:`cfcore.datasets.data_dir`).

    Returns
    -------
    ItemLabels

    Raises
    ------
    InputError
        With the file (and line) at fault: no such file, no header naming the columns, a
        missing field, an item listed twice, no item with a label.
    """
    path = _resolve(source, data_dir)
    if not path.is_file():
        raise InputError(f"labels {path}: not a file")
    if path.name == "u.item":
        return _read_u_item(path)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if path.suffix.lower() == ".dat" or b"::" in head.split(b"\n", 1)[0]:
        return _read_movies_dat(path)
    if path.suffix.lower() in (".npz", ".npy", ".pt", ".pth") or b"\0" in head:
        raise InputError(
            f"labels {path}: a binary file; expected a CSV (item_id,labels), movies.csv, "
            "movies.dat or u.item"
        )
    return _read_csv(path, item_col, labels_col, sep)
