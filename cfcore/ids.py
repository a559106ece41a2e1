"""Raw ids — integers or strings, as read from a file — and the rows they name.

Every artifact keeps its raw ids in row order; these functions are the one place that parses
them from text, checks them and maps them back to rows. Integer ids given as text (from a
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


def parse_ids(values: Any) -> np.ndarray:
    """Ids read as text → int64 when every one is an integer, else a str array.

    Integral floats written by spreadsheet tools (``"7.0"``) count as integers; surrounding
    whitespace is ignored. The result never has dtype object (artifacts are saved without
    pickle).
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    text = [str(v).strip() for v in arr.ravel().tolist()]
    if all(_INTEGER.match(t) for t in text):
        return np.asarray([int(t.removesuffix(".0")) for t in text], dtype=np.int64)
    return np.asarray(text, dtype=str)


_INTEGER = re.compile(r"[+-]?[0-9]+(\.0)?\Z")


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
