"""Atomic writes and self-describing ``.npz`` artifacts (never pickled).

Every artifact collabfeat writes is an ``.npz`` holding a ``__collabfeat__`` entry: a JSON
header ``{"kind": ..., "version": ...}`` plus any metadata. :func:`load_artifact` checks the
kind, so a model file from another tool (or a labels file passed where a model is expected)
gets a clear error instead of a ``KeyError`` deep inside.

Every file is written through :func:`atomic_path` (a temporary file renamed into place, with
the permissions ``open()`` would give it), and every command checks *all* the files it will
write — side files included — with :func:`check_outputs` before it does any work: none may be
one of its inputs, a side file may not replace a file collabfeat did not write, and each
location must be writable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from cfcore.errors import ModelFormatError, OutputError

HEADER_KEY = "__collabfeat__"
FORMAT_VERSION = 1

#: Header entry listing the names of the side files written beside an artifact (e.g. the
#: ``item_id,label`` CSV beside a pseudo-labels ``.npz``): the files a later run may replace.
SIDE_FILES_KEY = "side_files"

PathLike = str | os.PathLike[str]
#: A path, or an open binary file object (``io.BytesIO``, ``open(..., "rb"/"wb")``): what
#: implicit's ``save``/``load`` take.
PathOrFile = PathLike | IO[bytes]


def is_file_object(target: Any) -> bool:
    """Whether ``target`` is an open file object rather than a path."""
    return hasattr(target, "read") or hasattr(target, "write")


def _name(target: Any) -> Path | str:
    """How errors name ``target``: its path, or a file object's ``name`` if it has one."""
    if is_file_object(target):
        name = getattr(target, "name", None)
        return name if isinstance(name, str) else f"<{type(target).__name__}>"
    return Path(target)


def _umask() -> int:
    """The process umask (from ``/proc/self/status`` where it can be read without changing it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """Permission bits ``open(path, "w")`` would leave: the existing file's, else 0o666 & ~umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Readers never see a half-written file: either the old file (or none) or the new one.
    The file gets the permissions ``open()`` would give it (an existing file's, else
    ``0o666`` less the umask), not the ``0o600`` of a private temporary file. An ``OSError``
    names ``path``, never the temporary file.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp_path = Path(tmp)
        try:
            os.fchmod(fd, _new_file_mode(path))
        finally:
            os.close(fd)
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.errno is None or exc.filename == str(path):
            raise
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def atomic_write_json(path: PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (plus a newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_artifact(
    path: PathOrFile,
    kind: str,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
    compress: bool = False,
) -> Path | None:
    """Save ``arrays`` and a JSON header to an ``.npz`` atomically.

    Parameters
    ----------
    path : path-like or binary file object
        Destination; ``.npz`` is *not* appended (the exact name is used). A path is written
        atomically; an open file object (``io.BytesIO``, ``open(name, "wb")``) is written
        from its current position, and left open.
    kind : str
        Artifact kind, e.g. ``"factor-model"``, ``"interactions"``, ``"pseudo-labels"``.
    arrays : mapping of str to ndarray
        The payload. Object arrays are refused (they would need pickle).
    meta : mapping, optional
        JSON-serialisable metadata stored in the header.
    compress : bool
        Use ``np.savez_compressed``.

    Returns
    -------
    Path, or None for a file object
    """
    header = {"kind": kind, "version": FORMAT_VERSION, **(meta or {})}
    payload: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype == object:
            arr = arr.astype(str)
        payload[name] = arr
    payload[HEADER_KEY] = np.array(json.dumps(header))
    write = np.savez_compressed if compress else np.savez
    if is_file_object(path):
        write(path, **payload)
        return None
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            write(fh, **payload)
    return path


def _open_npz(path: Path | IO[bytes]) -> Any:
    """``np.load`` of an ``.npz`` without pickle; a clear error for anything that is not one.
    ``path`` may be an open binary file object (read from its current position)."""
    name = _name(path)
    if is_file_object(path):
        start = path.tell()
        magic = path.read(4)
        path.seek(start)
    else:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip archive (or an empty one)
        raise ModelFormatError(f"{name}: not an .npz file (an .npz is a zip archive; this is not)")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(f"{name}: not a readable .npz file ({exc})") from None


def _read_member(path: Path | str, npz: Any, name: str) -> np.ndarray:
    try:
        return npz[name]
    except ValueError:  # an object array: it would need pickle, which collabfeat never uses
        raise ModelFormatError(
            f"{path}: entry {name!r} holds Python objects (pickled); collabfeat artifacts "
            "hold only numbers and strings, and pickled data is never loaded"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFormatError(f"{path}: entry {name!r} is unreadable ({exc})") from None


def _parse_header(path: Path | str, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if HEADER_KEY not in arrays:
        raise ModelFormatError(
            f"{path}: not a collabfeat artifact (no '{HEADER_KEY}' header); "
            "was it written by another tool?"
        )
    try:
        header = json.loads(str(arrays[HEADER_KEY]))
    except json.JSONDecodeError:
        raise ModelFormatError(f"{path}: corrupt collabfeat header") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path}: corrupt collabfeat header")
    return header


def load_artifact(
    path: PathOrFile, kind: str | tuple[str, ...] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load an artifact written by :func:`save_artifact` (from a path, or an open binary file
    object at the artifact's start).

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
        The file is not a collabfeat ``.npz`` artifact (not a zip archive at all, pickled
        entries, no header), or not of the expected ``kind``.
    """
    source, path = path, _name(path)
    if not is_file_object(source) and not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with _open_npz(source) as npz:
        arrays = {k: _read_member(path, npz, k) for k in npz.files}
    header = _parse_header(path, arrays)
    del arrays[HEADER_KEY]
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and header.get("kind") not in wanted:
        raise ModelFormatError(
            f"{path}: expected a {' or '.join(wanted)} file, found a {header.get('kind')!r} file"
        )
    return arrays, header


def read_header(path: PathLike) -> dict[str, Any] | None:
    """The JSON header of a collabfeat artifact (reading nothing else), or None for any other
    file (missing, not an ``.npz``, no header)."""
    path = Path(path)
    try:
        with _open_npz(path) as npz:
            if HEADER_KEY not in npz.files:
                return None
            return _parse_header(path, {HEADER_KEY: _read_member(path, npz, HEADER_KEY)})
    except (ModelFormatError, OSError):
        return None


# ---------------------------------------------------------------------------- digests
DIGEST_BYTES = 16


def file_digest(path: PathLike) -> str | None:
    """Hex BLAKE2b-128 of a file's bytes, or ``None`` when it cannot be read."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def file_digests(paths: Sequence[PathLike], threads: int | None = None) -> list[str | None]:
    """:func:`file_digest` of every path (I/O bound: read by a few threads)."""
    threads = threads or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(file_digest, paths))


def path_digest(path: PathLike) -> str:
    """Content digest of a file, or of a folder: its files' relative names and bytes.

    Hidden entries (names starting with ``.``: temporary files, locks) are left out of a
    folder's digest. Raises ``FileNotFoundError`` naming ``path`` when it does not exist.
    """
    path = Path(path)
    if path.is_file():
        digest = file_digest(path)
        if digest is None:
            raise FileNotFoundError(f"{path}: cannot be read")
        return digest
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for rel, digest in zip(files, file_digests(files), strict=True):
        h.update(f"{rel.relative_to(path).as_posix()}\0{digest}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------- output checks
def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _check_location(path: Path) -> None:
    """``path`` can become a file: not a directory, under a writable directory (created here
    when missing, as the write would), probed by creating and removing a temporary file."""
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{path}: cannot be written, {parent} is a file, not a directory")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc})") from None


def check_outputs(
    outputs: Iterable[PathLike | None],
    inputs: Iterable[PathLike | None] = (),
    *,
    side_files: Mapping[PathLike, PathLike] | None = None,
    force: bool = False,
) -> None:
    """Check, before any work, every file a command will write.

    Parameters
    ----------
    outputs : iterable of path-like (``None`` entries are skipped)
        The files the caller named (``-o``, ``--json``...). An existing one is replaced, as
        the user asked for.
    inputs : iterable of path-like (``None`` entries, and entries that are not existing
        paths — a dataset name, a list of ids — are skipped)
        Everything the command reads. No output may be one of them, even with ``force``.
    side_files : mapping of path-like to path-like, optional
        Files written beside an output without being named by the user, each mapped to the
        output it accompanies (``{"labels.csv": "labels.npz"}``). An existing side file is
        replaced only when that output is a collabfeat artifact listing it in its header's
        ``side_files`` (a previous run wrote the pair), or with ``force``.
    force : bool
        Replace existing side files that collabfeat did not write.

    Raises
    ------
    OutputError
        Naming the file: it is an input, it would be written twice, it is a side file that
        would replace someone else's file, or its location is not writable (a directory, a
        file where a folder should be, no permission, a read-only file system).
    """
    writes: list[tuple[Path, Path | None]] = [(Path(p), None) for p in outputs if p is not None]
    writes += [(Path(s), Path(o)) for s, o in (side_files or {}).items()]
    read = [Path(p) for p in inputs if p is not None and os.path.isfile(p)]
    for k, (path, beside) in enumerate(writes):
        what = str(path) if beside is None else f"{path} (written beside {beside})"
        for other, _ in writes[:k]:
            if _same_file(path, other):
                raise OutputError(f"{what}: would be written twice (it is also {other})")
        for source in read:
            if _same_file(path, source):
                raise OutputError(
                    f"{what}: is one of this command's inputs and would be overwritten; "
                    "choose another output name"
                )
        if beside is not None and path.exists() and not force:
            header = read_header(beside)
            if header is None or path.name not in header.get(SIDE_FILES_KEY, ()):
                raise OutputError(
                    f"{path}: exists and was not written by collabfeat beside {beside}; "
                    "refusing to replace it (choose another output name, or --force)"
                )
        _check_location(path)


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
