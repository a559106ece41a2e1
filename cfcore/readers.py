"""Readers: MovieLens files, generic CSV/TSV, Parquet and collabfeat ``.npz`` → Interactions.

Ratings become binary views (optionally only ratings ``>= min_rating``); duplicate pairs
collapse to one. Files are parsed with pyarrow (fast); when a file is malformed, a plain
line-by-line scan finds the first bad line so the error can say ``path:line: what``.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfcore._arrow import arrow_mask, numpy_view
from cfcore.errors import InputError
from cfcore.ids import encode_ids, parse_ids, parse_integer_text
from cfcore.interactions import Interactions

FORMATS = (
    "auto",
    "movielens-100k",
    "movielens-dat",
    "movielens-csv",
    "csv",
    "tsv",
    "parquet",
    "npz",
)

_USER_NAMES = ("userid", "user_id", "user", "uid", "users")
_ITEM_NAMES = ("movieid", "itemid", "item_id", "item", "movie_id", "iid", "items")
_RATING_NAMES = ("rating", "ratings", "score", "value", "weight")
_TAG_NAMES = ("tag", "tags", "hashtag", "hashtags", "tag_id", "tagid", "label", "labels")

#: Header-less tables known by their file name: separator and column names.
_KNOWN_TABLES = {"u.user": ("|", ["user_id", "age", "gender", "occupation", "zip_code"])}


@dataclass(frozen=True)
class _Layout:
    """How a delimited file is laid out."""

    sep: str
    header: bool
    user_col: int | str
    item_col: int | str
    rating_col: int | str | None
    integer_ids: bool


def guess_format(path: str | os.PathLike[str]) -> str:
    """Guess the format of ``path`` from its name (``--format auto``)."""
    name = Path(path).name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name == "u.data" or name.endswith((".base", ".test")):
        return "movielens-100k"
    if name.endswith(".dat"):
        return "movielens-dat"
    if name == "ratings.csv":
        return "movielens-csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if name.endswith(".csv"):
        return "csv"
    raise InputError(
        f"{path}: cannot guess the format from the name; pass one of {', '.join(FORMATS[1:])}"
    )


def _layout(
    fmt: str,
    path: Path,
    sep: str | None,
    header: bool | None,
    user_col: int | str | None,
    item_col: int | str | None,
    rating_col: int | str | None,
) -> _Layout:
    if fmt == "movielens-100k":
        return _Layout("\t", False, 0, 1, 2, True)
    if fmt == "movielens-dat":
        return _Layout("::", False, 0, 1, 2, True)
    if fmt == "movielens-csv":
        return _Layout(",", True, "userId", "movieId", "rating", True)
    sep = sep or ("\t" if fmt == "tsv" else ",")
    if header is None:
        named = [
            c for c in (user_col, item_col, rating_col) if isinstance(c, str) and not c.isdigit()
        ]
        # columns chosen by name imply a header line that names them
        header = bool(named) or _sniff_header(path, sep)
    if header:
        u, i, r = _resolve_columns(path, _header_names(path, sep), user_col, item_col, rating_col)
        return _Layout(sep, True, u, i, r, False)
    return _Layout(
        sep,
        False,
        0 if user_col is None else user_col,
        1 if item_col is None else item_col,
        rating_col,
        False,
    )


def _resolve_columns(
    path: Path,
    names: list[str],
    user_col: int | str | None,
    item_col: int | str | None,
    rating_col: int | str | None,
) -> tuple[str, str, str | None]:
    """Names of the user, item and (optional) rating columns among the header ``names``.

    A column given by position or name is checked; one not given is found by a well-known
    name (``userId``, ``item_id``, ``rating``...), else users are column 0 and items column 1.
    """
    u = _pick_column(path, names, user_col, _USER_NAMES, 0, "users")
    i = _pick_column(path, names, item_col, _ITEM_NAMES, 1, "items")
    r = _pick_column(path, names, rating_col, _RATING_NAMES, None, "ratings")
    if u is None or i is None:
        raise InputError(f"{path}: needs a user and an item column (columns: {names})")
    if len({u, i} | ({r} if r else set())) < (3 if r else 2):
        raise InputError(
            f"{path}: user, item and rating columns must differ, got {u!r}, {i!r}, {r!r} "
            f"(columns: {names}); choose them with user_col/item_col/rating_col "
            "(--user-col/--item-col/--rating-col)"
        )
    return u, i, r


def _pick_column(
    path: Path,
    names: list[str],
    given: int | str | None,
    candidates: tuple[str, ...],
    pos: int | None,
    what: str,
) -> str | None:
    """The header name of a column given by position or name (checked), else the first of
    the well-known ``candidates`` present (case-insensitive), else the one at ``pos``."""
    if isinstance(given, str) and given.isdigit() and given not in names:
        given = int(given)
    if isinstance(given, int):
        if not 0 <= given < len(names):
            raise InputError(
                f"{path}: no column {given} for {what} (the file has {len(names)}: {names})"
            )
        return names[given]
    if given is not None:
        if given not in names:
            raise InputError(f"{path}: no column {given!r} for {what} (columns: {names})")
        return given
    lowered = [n.lower() for n in names]
    for cand in candidates:
        if cand in lowered:
            return names[lowered.index(cand)]
    return names[pos] if pos is not None and pos < len(names) else None


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return line.rstrip("\r\n")
    raise InputError(f"{path}: empty file")


def _header_names(path: Path, sep: str) -> list[str]:
    return [f.strip().strip('"') for f in _first_line(path).split(sep)]


def _sniff_header(
    path: Path, sep: str, known: tuple[str, ...] = _USER_NAMES + _ITEM_NAMES + _RATING_NAMES
) -> bool:
    fields = _header_names(path, sep)
    if len(fields) < 2:
        return False
    # A header names its columns: the item field of a data line is an id, a header's is a name.
    return any(f.lower() in known for f in fields)


def _column_index(col: int | str, names: list[str] | None, path: Path, what: str) -> int:
    if isinstance(col, int) or (isinstance(col, str) and col.isdigit()):
        return int(col)
    if names is None or col not in names:
        raise InputError(f"{path}: no column {col!r} for {what} (columns: {names})")
    return names.index(col)


def _scan_for_error(path: Path, lay: _Layout, cols: tuple[int, int, int | None]) -> str:
    """Slow, exact scan that returns ``"path:line: problem"`` for the first bad line."""
    need = max(c for c in cols if c is not None) + 1
    width: tuple[int, int] | None = None  # (fields, line) of the first line: every line must match
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            fields = text.split(lay.sep)
            if width is None:
                width = (len(fields), lineno)
            if lay.header and lineno == width[1]:
                continue
            if len(fields) < need:
                return f"{path}:{lineno}: expected at least {need} fields separated by {lay.sep!r}, got {len(fields)}: {text[:80]!r}"
            for col, what in ((cols[0], "user id"), (cols[1], "item id")):
                value = fields[col].strip().strip('"')
                if not value:
                    return f"{path}:{lineno}: empty {what}"
                if lay.integer_ids:
                    try:
                        int(value)
                    except ValueError:
                        return f"{path}:{lineno}: {what} {value!r} is not an integer"
            if cols[2] is not None:
                value = fields[cols[2]].strip()
                try:
                    rating = float(value)
                except ValueError:
                    return f"{path}:{lineno}: rating {value!r} is not a number"
                if not math.isfinite(rating):
                    return f"{path}:{lineno}: rating is {value!r}"
            if len(fields) != width[0]:
                return (
                    f"{path}:{lineno}: expected {width[0]} fields separated by {lay.sep!r} "
                    f"(as on line {width[1]}), got {len(fields)}: {text[:80]!r}"
                )
    return f"{path}: could not parse (no single bad line found)"


class _SeparatorStream(io.RawIOBase):
    """A file read with a multi-character separator (MovieLens ``::``) turned into one byte,
    block by block (pyarrow takes one-character delimiters), so the file is never in memory
    twice. Blocks end at a line break, so a separator is never split between two."""

    def __init__(self, path: Path, sep: bytes, replacement: bytes, block: int = 1 << 22) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._sep, self._replacement, self._block = sep, replacement, block
        self._pending = b""
        self._tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            block = self._fh.read(self._block)
            data = self._tail + block
            cut = len(data) if not block else data.rfind(b"\n") + 1
            self._pending, self._tail = data[:cut].replace(self._sep, self._replacement), data[cut:]
            if not block:
                break
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


_INT32 = np.iinfo(np.int32)


class _IdColumn:
    """One id column, collected batch by batch: int64 while every value is an integer
    (in text: :func:`cfcore.ids.parse_integer_text`'s rule), else text from then on.
    Integer text read so far turns back into the very same text, so nothing is read twice."""

    #: Integer batches are merged into one array every this many rows: a few large arrays
    #: instead of hundreds of small ones, whose freed heap the process could not hand back.
    MERGE_ROWS = 1 << 20

    def __init__(self, name: str) -> None:
        self.name = name
        self.chunks: list[Any] = []  # int ndarrays, or pyarrow string arrays once text
        self.pending: list[np.ndarray] = []  # integer batches not merged yet
        self.text = False

    def _merge(self) -> None:
        if self.pending:
            self.chunks.append(np.concatenate(self.pending))
            self.pending = []

    @staticmethod
    def first_missing(values: Any) -> int | None:
        """Position of the first null or empty id in a pyarrow array, or None."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if values.null_count:
            return values.is_null().to_pylist().index(True)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            empty = np.flatnonzero(numpy_view(pc.binary_length(values)) == 0)
            if len(empty):
                return int(empty[0])
        return None

    def add(self, values: Any) -> None:
        import pyarrow as pa

        if pa.types.is_dictionary(values.type):  # a categorical Parquet column
            values = values.dictionary_decode()
        kind = values.type
        textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if not (pa.types.is_integer(kind) or textual):
            raise InputError(f"{self.name}: ids must be integers or text, got {kind}")
        if not self.text:
            ints = parse_integer_text(values) if textual else numpy_view(values)
            if ints is not None:  # a copy into numpy's memory: pyarrow's is handed back
                small = len(ints) and _INT32.min <= ints.min() and ints.max() <= _INT32.max
                self.pending.append(ints.astype(np.int32 if small else np.int64))
                if sum(len(c) for c in self.pending) >= self.MERGE_ROWS:
                    self._merge()
                return
            self._merge()
            self.text = True
            self.chunks = [pa.array(c).cast(pa.string()) for c in self.chunks]
        self.chunks.append(values.cast(pa.string()))

    def encode(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique ids and each row's code (:func:`cfcore.ids.encode_ids`); empties the
        column as it goes, so its batches are freed before the codes are complete."""
        import pyarrow as pa

        self._merge()
        chunks, self.chunks = self.chunks, []
        if not self.text:
            return encode_ids(chunks, self.name)
        # number the distinct strings, then look every row up
        encoded = pa.chunked_array(chunks, type=pa.string()).dictionary_encode()
        del chunks
        encoded = encoded.unify_dictionaries().combine_chunks()
        distinct = np.array(encoded.dictionary.to_pylist(), dtype=str)
        uniq, rank = encode_ids(distinct, self.name)
        return uniq, rank[numpy_view(encoded.indices)]


def _interactions_from_batches(
    path: Path,
    batches: Iterator[tuple[Any, Any, Any]],
    min_rating: float | None,
    bad: Callable[[str, int], str],
) -> Interactions:
    """Collect ``(users, items, ratings)`` pyarrow batches into :class:`Interactions`.

    Ratings are checked, and with ``min_rating`` filtered, batch by batch, so only the kept
    ids are ever held. ``bad(problem, row)`` gives the error message for a bad value at a
    0-based data row.
    """
    import pyarrow as pa

    users, items = _IdColumn(f"{path}: user ids"), _IdColumn(f"{path}: item ids")
    n_rows = 0
    for u, i, r in batches:
        for column, values, what in ((users, u, "user id"), (items, i, "item id")):
            at = column.first_missing(values)
            if at is not None:
                raise InputError(bad(f"missing {what}", n_rows + at))
        if r is not None:
            if r.null_count:
                raise InputError(
                    bad("missing rating", n_rows + r.is_null().to_pylist().index(True))
                )
            ratings = numpy_view(r.cast(pa.float64()))
            nonfinite = np.flatnonzero(~np.isfinite(ratings))
            if len(nonfinite):
                raise InputError(bad("rating is not a finite number", n_rows + int(nonfinite[0])))
            if min_rating is not None:
                keep = arrow_mask(ratings >= min_rating)
                u, i = u.filter(keep), i.filter(keep)
        n_rows += len(r) if r is not None else len(u)
        users.add(u)
        items.add(i)
    _release_arrow_memory()  # the parse's buffers: the ids are in numpy's memory by now
    if n_rows == 0:
        raise InputError(f"{path}: no data lines")
    if not any(len(c) for c in users.chunks + users.pending):
        raise InputError(f"{path}: no interactions left with rating >= {min_rating}")
    user_ids, rows = users.encode()
    item_ids, cols = items.encode()
    return Interactions._from_codes(rows, cols, user_ids, item_ids)


def _read_delimited(path: Path, lay: _Layout, min_rating: float | None) -> Interactions:
    """Stream a CSV/TSV/MovieLens file through pyarrow in blocks of 256 KiB of text (pyarrow
    needs ~40 times a block while parsing it: larger blocks cost memory, not time)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    names = _header_names(path, lay.sep) if lay.header else None
    u = _column_index(lay.user_col, names, path, "users")
    i = _column_index(lay.item_col, names, path, "items")
    r = None if lay.rating_col is None else _column_index(lay.rating_col, names, path, "ratings")
    cols = (u, i, r)
    n_fields = len(_first_line(path).split(lay.sep))  # raises on an empty file
    if max(c for c in cols if c is not None) >= n_fields:
        if lay.header:
            raise InputError(
                f"{path}: column {max(c for c in cols if c is not None)} does not "
                f"exist (the header has {n_fields} columns: {names})"
            )
        raise InputError(_scan_for_error(path, lay, cols))
    if min_rating is not None and r is None:
        raise InputError(f"{path}: min_rating given but the file has no rating column")
    source: Any = str(path)
    delimiter = lay.sep
    if len(lay.sep) > 1:  # pyarrow takes one character; MovieLens .dat uses "::"
        source = _SeparatorStream(path, lay.sep.encode(), b"\x1f")
        delimiter = "\x1f"
    # MovieLens ids must be integers; other files' ids are read as text and kept as integers
    # when every one is (see _IdColumn).
    id_type = pa.int64() if lay.integer_ids else pa.string()
    column_names = names if names is not None else [f"f{k}" for k in range(n_fields)]
    types = {column_names[u]: id_type, column_names[i]: id_type}
    if r is not None:
        types[column_names[r]] = pa.float64()

    def batches() -> Iterator[tuple[Any, Any, Any]]:
        reader = pcsv.open_csv(
            source,
            read_options=pcsv.ReadOptions(
                column_names=column_names, skip_rows=1 if lay.header else 0, block_size=1 << 18
            ),
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            convert_options=pcsv.ConvertOptions(
                column_types=types,
                include_columns=[column_names[c] for c in cols if c is not None],
                strings_can_be_null=False,
            ),
        )
        for batch in reader:
            yield (
                batch.column(column_names[u]),
                batch.column(column_names[i]),
                None if r is None else batch.column(column_names[r]),
            )

    try:
        return _interactions_from_batches(
            path, batches(), min_rating, lambda problem, row: _scan_for_error(path, lay, cols)
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, IndexError):
        raise InputError(_scan_for_error(path, lay, cols)) from None
    finally:
        if isinstance(source, _SeparatorStream):
            source.close()


def _read_parquet(
    path: Path,
    user_col: int | str | None,
    item_col: int | str | None,
    rating_col: int | str | None,
    min_rating: float | None,
) -> Interactions:
    """Stream the three columns of a Parquet file, one row group at a time."""
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    u, i, r = _resolve_columns(path, pfile.schema_arrow.names, user_col, item_col, rating_col)
    if pfile.metadata.num_rows == 0:
        raise InputError(f"{path}: no rows")
    if min_rating is not None and r is None:
        raise InputError(f"{path}: min_rating given but the file has no rating column")

    def batches() -> Iterator[tuple[Any, Any, Any]]:
        for batch in pfile.iter_batches(batch_size=1 << 20, columns=[c for c in (u, i, r) if c]):
            yield batch.column(u), batch.column(i), None if r is None else batch.column(r)

    return _interactions_from_batches(
        path, batches(), min_rating, lambda problem, row: f"{path}: row {row}: {problem}"
    )


def read_interactions(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    sep: str | None = None,
    header: bool | None = None,
    user_col: int | str | None = None,
    item_col: int | str | None = None,
    rating_col: int | str | None = None,
    min_rating: float | None = None,
) -> Interactions:
    """Read a users × items interaction file.

    Parameters
    ----------
    path : path-like
        The file.
    format : str
        ``auto`` (guess from the name), ``movielens-100k`` (``u.data``: tab-separated
        user, item, rating, timestamp), ``movielens-dat`` (``ratings.dat``: ``::``),
        ``movielens-csv`` (``ratings.csv`` with a header), ``csv``, ``tsv``, ``parquet``
        or ``npz`` (written by :meth:`Interactions.save`).
    sep, header : optional
        For ``csv``/``tsv``: the separator and whether the first line names the columns
        (default: detected from well-known column names).
    user_col, item_col, rating_col : int or str, optional
        Column positions or names (defaults: well-known names, else 0 and 1; no rating).
    min_rating : float, optional
        Keep only pairs rated at least this (e.g. 4 for "liked"). Without it every rated
        pair is a view.

    Returns
    -------
    Interactions

    Raises
    ------
    InputError
        Empty file, malformed line (the message says ``path:line``), non-integer ids in a
        MovieLens file, NaN ratings, unknown columns.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    fmt = guess_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise InputError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "npz":
        inter = Interactions.load(path)
        if min_rating is not None:
            raise InputError(f"{path}: min_rating does not apply to an .npz of interactions")
        return inter
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        if fmt == "parquet":
            return _read_parquet(path, user_col, item_col, rating_col, min_rating)
        lay = _layout(fmt, path, sep, header, user_col, item_col, rating_col)
        return _read_delimited(path, lay, min_rating)
    finally:
        _release_arrow_memory()


def _release_arrow_memory() -> None:
    """Hand the memory pyarrow's allocator kept from the parse back to the system, so that
    the arrays built next can use it (mimalloc/jemalloc keep freed pages otherwise)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


# ----------------------------------------------------------------------------- small tables
@dataclass(frozen=True)
class Table:
    """A delimited file read whole, as text: column names and rows of stripped fields.

    Attributes
    ----------
    path : Path
    names : list of str
        The header's column names, the known names of a header-less file (``u.user``), or
        ``"0"``, ``"1"``... by position.
    rows : list of list of str
    lines : list of int
        1-based line number of each row (for error messages).
    sep : str
    header : bool
    """

    path: Path
    names: list[str]
    rows: list[list[str]]
    lines: list[int]
    sep: str
    header: bool

    def column(self, name: str) -> list[str]:
        """The fields of column ``name`` (every row has it: widths are checked on reading)."""
        k = self.names.index(name)
        return [row[k] for row in self.rows]


def guess_separator(line: str) -> str:
    """The field separator of a data line: ``::``, tab, comma, pipe or semicolon (in that
    order of precedence), else a comma."""
    for sep in ("::", "\t", ",", "|", ";"):
        if sep in line:
            return sep
    return ","


def _checked_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    return path


def read_table(
    path: str | os.PathLike[str],
    *,
    sep: str | None = None,
    header: bool | None = None,
    known: tuple[str, ...] = (),
    named: tuple[int | str | None, ...] = (),
    ragged: bool = False,
) -> Table:
    """Read a small delimited file (user attributes, tag applications) into a :class:`Table`.

    Parameters
    ----------
    path : path-like
    sep : str, optional
        Field separator (default: :func:`guess_separator` on the first line; ``u.user``:
        ``|``). Quoted fields are understood for one-character separators.
    header : bool, optional
        Whether the first line names the columns (default: it does when a column in ``named``
        is a name, or when it holds one of the well-known names ``known``).
    known : tuple of str
        Lower-case column names that identify a header line.
    named : tuple
        The columns the caller will ask for (a name implies a header).
    ragged : bool
        Allow lines of any width (default: every line must have the first line's width).

    Raises
    ------
    InputError
        Missing or empty file, a line of the wrong width (``path:line``), no data line.
    """
    import csv

    path = _checked_file(path)
    first = _first_line(path)
    known_layout = _KNOWN_TABLES.get(path.name.lower())
    if sep is None:
        sep = known_layout[0] if known_layout else guess_separator(first)
    if header is None:
        if known_layout is not None:
            header = False
        else:
            header = any(isinstance(c, str) and not c.isdigit() for c in named) or _sniff_header(
                path, sep, known
            )
    rows: list[list[str]] = []
    lines: list[int] = []
    names: list[str] | None = None
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        if len(sep) == 1:
            records = (
                (reader.line_num, fields)
                for reader in [csv.reader(fh, delimiter=sep)]
                for fields in reader
            )
        else:
            records = ((n, line.rstrip("\r\n").split(sep)) for n, line in enumerate(fh, start=1))
        for lineno, raw in records:
            fields = [f.strip() for f in raw]
            if not any(fields):
                continue
            if header and names is None:
                names = [f.strip('"') for f in fields]
                continue
            if not ragged and rows and len(fields) != len(rows[0]):
                raise InputError(
                    f"{path}:{lineno}: expected {len(rows[0])} fields separated by {sep!r} "
                    f"(as on line {lines[0]}), got {len(fields)}"
                )
            rows.append(fields)
            lines.append(lineno)
    if not rows:
        raise InputError(f"{path}: no data lines")
    if names is None:
        width = max(len(r) for r in rows)
        if known_layout is not None and width == len(known_layout[1]):
            names = list(known_layout[1])
        else:
            names = [str(k) for k in range(width)]
    elif not ragged and len(rows[0]) != len(names):
        raise InputError(
            f"{path}:{lines[0]}: expected {len(names)} fields (as the header), got {len(rows[0])}"
        )
    return Table(path, names, rows, lines, sep, bool(header))


def read_tags(
    path: str | os.PathLike[str],
    *,
    sep: str | None = None,
    header: bool | None = None,
    user_col: int | str | None = None,
    item_col: int | str | None = None,
    tag_col: int | str | None = None,
):  # -> TagData
    """Read tag applications — who put which tag on which item — into a :class:`TagData`.

    Parameters
    ----------
    path : path-like
        A CSV/TSV (any separator) with one application per line, such as MovieLens
        ``tags.csv`` (``userId,movieId,tag,timestamp``), or with several tags per line
        (``user<TAB>item<TAB>tag<TAB>tag…``, with ``tag_col="2:"``).
    sep, header : optional
        As :func:`read_table`; well-known column names (``userId``, ``movieId``, ``tag``...)
        identify a header.
    user_col, item_col : int or str, optional
        Columns by position or name (default: a well-known name, else 0 and 1).
    tag_col : int or str, optional
        The tag column (default: a well-known name such as ``tag``, else 2). ``"N:"`` reads
        every field from position N to the end of the line as a tag (any number per line).

    Returns
    -------
    TagData
        Tags normalised (stripped, lower-case); ids kept as integers when every id is one.

    Raises
    ------
    InputError
        Missing/empty file, unknown column, a line without a user, item or tag field
        (``path:line``).
    """
    from cfcore.tagdata import TagData

    rest = isinstance(tag_col, str) and tag_col.endswith(":")
    if rest:
        start = str(tag_col)[:-1]
        if not start.isdigit():
            raise InputError(f"tag column {tag_col!r}: 'N:' needs a position N, e.g. '2:'")
        tag_col = int(start)
    table = read_table(
        path,
        sep=sep,
        header=header,
        known=_USER_NAMES + _ITEM_NAMES + _TAG_NAMES,
        named=(user_col, item_col, tag_col),
        ragged=rest,
    )
    names = table.names
    picked = [
        _pick_column(table.path, names, user_col, _USER_NAMES, 0, "users"),
        _pick_column(table.path, names, item_col, _ITEM_NAMES, 1, "items"),
        _pick_column(table.path, names, tag_col, _TAG_NAMES, 2, "tags"),
    ]
    if any(p is None for p in picked) or len(set(picked)) < 3:
        raise InputError(
            f"{table.path}: needs three different columns for users, items and tags, got "
            f"{picked} (columns: {names}); choose them with user_col/item_col/tag_col "
            "(--user-col/--item-col/--tag-col)"
        )
    u, i, t = (names.index(p) for p in picked)  # type: ignore[arg-type]
    users: list[str] = []
    items: list[str] = []
    tags: list[str] = []
    for fields, lineno in zip(table.rows, table.lines, strict=True):
        if len(fields) <= max(u, i, t):
            raise InputError(
                f"{table.path}:{lineno}: expected at least {max(u, i, t) + 1} fields separated "
                f"by {table.sep!r}, got {len(fields)}"
            )
        for k, what in ((u, "user id"), (i, "item id"), (t, "tag")):
            if not fields[k]:
                raise InputError(f"{table.path}:{lineno}: empty {what}")
        for tag in fields[t:] if rest else (fields[t],):
            if tag:
                users.append(fields[u])
                items.append(fields[i])
                tags.append(tag)
    return TagData.from_applications(parse_ids(users), parse_ids(items), tags)
