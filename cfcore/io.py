"""Atomic writes and self-describing ``.npz`` artifacts (never pickled).

Every artifact collabfeat writes is an ``.npz`` holding a ``__collabfeat__`` entry: a JSON
header ``{"kind": ..., "version": ...}`` plus any metadata. :func:`load_artifact` checks the
kind, so a model file from another tool (or a labels file passed where a model is expected)
gets a clear error instead of a ``KeyError`` deep inside.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import ModelFormatError

HEADER_KEY = "__collabfeat__"
FORMAT_VERSION = 1


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Readers never see a half-written file: either the old file (or none) or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_artifact(
    path: str | os.PathLike[str],
    kind: str,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
    compress: bool = False,
) -> Path:
    """Save ``arrays`` and a JSON header to an ``.npz`` atomically.

    Parameters
    ----------
    path : path-like
        Destination; ``.npz`` is *not* appended (the exact name is used).
    kind : str
        Artifact kind, e.g. ``"factor-model"``, ``"interactions"``, ``"pseudo-labels"``.
    arrays : mapping of str to ndarray
        The payload. Object arrays are refused (they would need pickle).
    meta : mapping, optional
        JSON-serialisable metadata stored in the header.
    compress : bool
        Use ``np.savez_compressed``.
    """
    header = {"kind": kind, "version": FORMAT_VERSION, **(meta or {})}
    payload: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype == object:
            arr = arr.astype(str)
        payload[name] = arr
    payload[HEADER_KEY] = np.array(json.dumps(header))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **payload)
    return path


def load_artifact(
    path: str | os.PathLike[str], kind: str | tuple[str, ...] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load an artifact written by :func:`save_artifact`.

    Returns
    -------
    arrays : dict of str to ndarray
    header : dict
        The JSON header (``kind``, ``version`` and metadata).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelFormatError
        The file is not a collabfeat ``.npz`` artifact, or not of the expected ``kind``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(f"{path}: not a readable .npz file ({exc})") from None
    if HEADER_KEY not in arrays:
        raise ModelFormatError(
            f"{path}: not a collabfeat artifact (no '{HEADER_KEY}' header); "
            "was it written by another tool?"
        )
    try:
        header = json.loads(str(arrays.pop(HEADER_KEY)))
    except json.JSONDecodeError:
        raise ModelFormatError(f"{path}: corrupt collabfeat header") from None
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and header.get("kind") not in wanted:
        raise ModelFormatError(
            f"{path}: expected a {' or '.join(wanted)} file, found a {header.get('kind')!r} file"
        )
    return arrays, header


def require_keys(path: str | os.PathLike[str], arrays: Mapping[str, Any], keys: list[str]) -> None:
    """Raise :class:`ModelFormatError` naming ``path`` when any of ``keys`` is missing."""
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ModelFormatError(f"{path}: missing arrays {missing}")


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, paths as strings, tuples as lists and
    NaN/inf as None, recursively (for JSON headers and reports)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
