"""Raw ids — integers or strings, as read from a file — and the rows they name.

Every artifact keeps its raw ids in row order; these functions are the one place that parses
them from text (:func:`parse_ids`, :func:`parse_integer_text`: one rule for what an integer
is), checks them (:func:`as_ids`), numbers them (:func:`encode_ids`: sorted order, numeric for
integers) and maps them back to rows (:func:`id_positions`). Integer ids given as text (from a
command line or a CSV) match integer ids: ``"9"`` finds the row of ``9``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from cfcore.errors import InputError


def as_ids(ids: Any, n: int, name: str = "ids") -> np.ndarray:
    """Return ``ids`` as a 1-D int64 or str array of length ``n`` with unique entries.

    ``None`` gives ``arange(n)``. Raises :class:`InputError` naming ``name`` otherwise.
    """
    if ids is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n:
        raise InputError(f"{name}: expected {n} ids (one per row), got shape {arr.shape}")
    if arr.dtype == object:
        arr = arr.astype(str)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "U":
        raise InputError(f"{name}: ids must be integers or strings, got dtype {arr.dtype}")
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != n:
        raise InputError(
            f"{name}: ids must be unique; {uniq[counts > 1][0].item()!r} appears more than once"
        )
    return arr


def _code_dtype(n: int) -> type:
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def encode_ids(values: Any, name: str = "ids") -> tuple[np.ndarray, np.ndarray]:
    """Number raw ids by their sorted order: ``(unique_ids, codes)`` with
    ``unique_ids[codes] == values``.

    Parameters
    ----------
    values : 1-D array of integers or strings, or a list of 1-D integer arrays
        The ids; a list is taken as consecutive chunks of one column (as a reader collects
        them), numbered without concatenating them when they are dense (see Notes).
        Integers sort numerically (``2 < 10``), strings lexicographically.
    name : str
        What the ids are, for the error message.

    Returns
    -------
    unique_ids : ndarray
        int64 for integer input, else str; sorted, unique.
    codes : ndarray
        int32 (int64 past 2**31 - 1 distinct ids), the position of each value in
        ``unique_ids``.

    Raises
    ------
    InputError
        ``values`` are neither integers nor strings (e.g. floats).

    Notes
    -----
    Integer ids spanning a range no wider than the number of values (the usual ``1..n``)
    are numbered in O(n) with a presence table instead of a sort.
    """
    chunks = [np.asarray(c) for c in values] if isinstance(values, list) else [np.asarray(values)]
    chunks = [c.astype(str) if c.dtype == object else c for c in chunks]
    kinds = {c.dtype.kind for c in chunks}
    if not kinds <= {"i", "u"} and kinds != {"U"}:
        raise InputError(f"{name}: ids must be integers or strings, got dtype {chunks[0].dtype}")
    n = sum(len(c) for c in chunks)
    if kinds <= {"i", "u"} and n:
        lo = min(int(c.min()) for c in chunks if len(c))
        hi = max(int(c.max()) for c in chunks if len(c))
        if hi - lo < max(n, 1 << 16):
            present = np.zeros(hi - lo + 1, dtype=bool)
            for c in chunks:
                present[c - lo] = True
            uniq = np.flatnonzero(present).astype(np.int64) + lo
            lookup = np.cumsum(present, dtype=_code_dtype(len(uniq)))
            del present
            lookup -= 1
            codes = np.empty(n, dtype=lookup.dtype)
            at = 0
            for c in chunks:
                codes[at : at + len(c)] = lookup[c - lo]
                at += len(c)
            return uniq, codes
    arr = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64, copy=False)
    uniq, codes = np.unique(arr, return_inverse=True)
    return uniq, codes.astype(_code_dtype(len(uniq)), copy=False)


#: The rule for ids read as text: an id is an integer when it is written the way the integer
#: prints (``7``, ``-7``), or as an integral float from a spreadsheet (``7.0``); surrounding
#: whitespace is ignored. Zero-padded (``007``), signed (``+7``) or ``-0`` ids stay text: the
#: integer would print differently, and ``007`` and ``7`` would become one id.
_INTEGER = re.compile(r"(?:0|-?[1-9][0-9]*)(?:\.0)?\Z")


def parse_ids(values: Any) -> np.ndarray:
    """Ids read as text → int64 when every one is an integer (see ``_INTEGER``), else a str
    array. The result never has dtype object (artifacts are saved without pickle).
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    text = [str(v).strip() for v in arr.ravel().tolist()]
    if all(_INTEGER.match(t) for t in text):
        return np.asarray([int(t.removesuffix(".0")) for t in text], dtype=np.int64)
    return np.asarray(text, dtype=str)


_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)


def parse_integer_text(text: Any) -> np.ndarray | None:
    """:func:`parse_ids`'s rule, vectorised for a pyarrow string array (a reader's batch):
    the int64 values when every entry is an integer, else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cfcore._arrow import numpy_view

    def plain(strings: Any) -> np.ndarray | None:  # integers written exactly as they print
        try:
            values = numpy_view(pc.cast(strings, pa.int64()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        digits = np.searchsorted(_POWERS_OF_TEN, np.abs(values), side="right")
        np.maximum(digits, 1, out=digits)
        digits += values < 0
        return values if np.array_equal(numpy_view(pc.binary_length(strings)), digits) else None

    values = plain(text)
    if values is None:  # the slow path: whitespace, "7.0"
        trimmed = pc.utf8_trim_whitespace(text)
        values = plain(pc.replace_substring_regex(trimmed, r"\.0\z", ""))
    return values


def _as_known_kind(known: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``wanted`` in the dtype of ``known`` and a mask of the entries that could be converted."""
    if known.dtype.kind not in "iu":
        return wanted.astype(str), np.ones(len(wanted), dtype=bool)
    if wanted.dtype.kind in "iu":
        return wanted.astype(np.int64), np.ones(len(wanted), dtype=bool)
    out = np.zeros(len(wanted), dtype=np.int64)
    ok = np.zeros(len(wanted), dtype=bool)
    for k, value in enumerate(wanted.tolist()):
        try:
            out[k] = int(str(value).strip())
            ok[k] = True
        except ValueError:
            pass
    return out, ok


def id_positions(known: np.ndarray, wanted: Any, unknown: str | None = None) -> np.ndarray:
    """Row of each id of ``wanted`` in ``known`` (int64), ``-1`` where it is not known.

    Parameters
    ----------
    known : ndarray
        Raw ids in row order (int64 or str), as stored in every collabfeat artifact.
    wanted : array-like or scalar
        Raw ids to look up.
    unknown : str, optional
        When given, an unknown id raises ``InputError(f"{unknown} {id!r}")`` for the first
        one (e.g. ``unknown="unknown user id"``) instead of giving ``-1``.
    """
    known = np.asarray(known)
    raw = np.atleast_1d(np.asarray(wanted))
    if raw.dtype == object:
        raw = raw.astype(str)
    if len(raw) == 0 or len(known) == 0:
        out = np.full(len(raw), -1, dtype=np.int64)
    else:
        keys, ok = _as_known_kind(known, raw)
        order = np.argsort(known, kind="stable")
        sorted_known = known[order]
        pos = np.minimum(np.searchsorted(sorted_known, keys), len(known) - 1)
        found = ok & (sorted_known[pos] == keys)
        out = np.where(found, order[pos], -1).astype(np.int64)
    if unknown is not None and (out < 0).any():
        raise InputError(f"{unknown} {raw[out < 0][0].item()!r}")
    return out


#: Below this share of matching interactions two artifacts are taken to describe different
#: datasets (``cfcore evaluate``/``recommend`` with another dataset's interactions).
MIN_OVERLAP = 0.5


def require_overlap(
    matched: int, total: int, what: str, min_share: float, first_unknown: Any = None
) -> None:
    """The one check that two artifacts name the same things.

    Raises :class:`InputError` when fewer than ``min_share`` of ``total`` (ids, or
    interactions) were found in the other artifact: ``what`` says which, e.g.
    ``"ratings.csv: interactions with users and items of the model"``. ``min_share=1.0``
    requires every one; ``0`` accepts anything.
    """
    if total == 0 or matched >= min_share * total:
        return
    first = "" if first_unknown is None else f", first unknown: {first_unknown!r}"
    need = "all" if min_share >= 1.0 else f"at least {min_share:.0%}"
    raise InputError(
        f"{what}: only {matched} of {total} ({matched / total:.0%}) match ({need} must{first}); "
        "do they come from the same dataset?"
    )


def reindex(
    matrix: Any,
    row_ids: np.ndarray | None,
    col_ids: np.ndarray,
    to_row_ids: np.ndarray | None,
    to_col_ids: np.ndarray,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Move the entries of a sparse ``matrix`` (rows ``row_ids``, columns ``col_ids``) to the
    rows ``to_row_ids`` and columns ``to_col_ids`` of another artifact, by raw id.

    ``row_ids``/``to_row_ids`` ``None`` keeps the rows as they are. Entries whose row or
    column id is unknown there are dropped; stored values become 1 (duplicates count once).

    Returns
    -------
    matrix : scipy.sparse.csr_matrix of float32, shape (len(to_row_ids), len(to_col_ids))
    kept : bool ndarray, one per stored entry of ``matrix`` (COO order): moved
    row_at, col_at : int64 ndarray: each row's / column's new position (``-1``: unknown)
    """
    import scipy.sparse as sp

    coo = sp.coo_matrix(matrix)
    n_rows = coo.shape[0]
    row_at = np.arange(n_rows, dtype=np.int64)
    if row_ids is not None and to_row_ids is not None:
        row_at = id_positions(to_row_ids, row_ids)
        n_rows = len(to_row_ids)
    col_at = id_positions(to_col_ids, col_ids)
    r, c = row_at[coo.row], col_at[coo.col]
    kept = (r >= 0) & (c >= 0)
    out = sp.csr_matrix(
        (np.ones(int(kept.sum()), dtype=np.float32), (r[kept], c[kept])),
        shape=(n_rows, len(to_col_ids)),
    )
    out.sum_duplicates()
    out.data[:] = 1.0
    return out, kept, row_at, col_at
