"""The run directory of a pipeline job: one folder per stage, a manifest, a lock.

Layout::

    RUN/
      .lock                 held (fcntl.flock) by the job running here; names its pid
      job.json              the validated job the stages read (written at every start)
      job.toml              a copy of the job file as it was at the last start
      manifest.json         every finished stage's record, written atomically after each stage
      <stage>/              a finished stage's outputs and its stage.json record
      <stage>.partial/      a stage at work (removed and restarted by the next run)

A stage writes only into ``<stage>.partial/``. When its process succeeds the runner hashes its
outputs, writes ``stage.json`` (inputs' content hashes, parameters, package versions, timings,
outputs' hashes) into that folder and renames it onto ``<stage>/`` — so a finished stage is a
complete folder and a killed one leaves only a ``.partial`` folder that the next run discards.
A stage is up to date when its ``stage.json`` holds the key the job now computes (the
parameters, the collabfeat version, the content hashes of external inputs and the signatures
of the stages it reads) and its outputs are still the files it wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfcore.errors import CollabfeatError
from cfcore.io import atomic_write_json, file_digest, path_digest

LOCK = ".lock"
JOB = "job.json"
MANIFEST = "manifest.json"
RECORD = "stage.json"
RESULT = "result.json"
PARTIAL = ".partial"
#: The key of the run a ``.partial`` folder belongs to (hidden: not an output).
PARTIAL_KEY = ".key"

#: Packages whose versions every stage record lists.
PACKAGES = ("collabfeat", "numpy", "scipy", "numba", "faiss-cpu", "torch", "torchvision")


class RunLockedError(CollabfeatError, RuntimeError):
    """Another job holds the run directory."""


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages are left out) and Python's."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def digest_json(value: Any) -> str:
    """Digest of a JSON-serialisable value (keys sorted: the same value, the same digest)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class RunDir:
    """Paths and records of one run directory."""

    root: Path

    def stage(self, name: str) -> Path:
        return self.root / name

    def partial(self, name: str) -> Path:
        return self.root / f"{name}{PARTIAL}"

    def record(self, name: str) -> dict[str, Any] | None:
        """The ``stage.json`` of a finished stage, or None."""
        return _read_json(self.stage(name) / RECORD)

    def manifest(self) -> dict[str, Any] | None:
        return _read_json(self.root / MANIFEST)

    # -------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[int]:
        """Hold the run directory for this job; yields the lock's file descriptor.

        A second job pointed at the same folder fails at once with :class:`RunLockedError`
        naming the holder. The lock is the kernel's (``flock``): it goes when the holder's
        process dies, however it dies — pass the descriptor to child processes so that it
        lasts as long as they do.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                raise RunLockedError(
                    f"{self.root}: in use by another job ({holder}); wait for it to finish "
                    "or give this job another run directory (--run-dir)"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0
            )
            yield fd
        finally:
            os.close(fd)  # releases the flock (children holding a copy keep it)

    # -------------------------------------------------------------- stages
    def begin(self, name: str, key: str, resumable: bool = False) -> bool:
        """Prepare ``<name>.partial/`` for a run of the stage with ``key``.

        What a killed run left there is removed — unless the stage is ``resumable`` (it
        continues from its own checkpoints) and that run had the same key. Returns whether
        the folder was kept.
        """
        part = self.partial(name)
        marker = part / PARTIAL_KEY
        if resumable and marker.is_file() and marker.read_text() == key:
            return True
        if part.exists():
            shutil.rmtree(part)
        part.mkdir(parents=True)
        marker.write_text(key)
        return False

    def commit(self, name: str, record: Mapping[str, Any]) -> Path:
        """Write ``record`` into ``<name>.partial/`` and rename the folder onto ``<name>/``."""
        part, final = self.partial(name), self.stage(name)
        atomic_write_json(part / RECORD, dict(record))
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=self.root))
            os.replace(final, old / name)
            os.replace(part, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(part, final)
        return final

    def recover(self, name: str, key: str) -> bool:
        """Commit a ``.partial`` folder that already holds its record for ``key`` (a run
        killed between writing the record and renaming the folder)."""
        part = self.partial(name)
        record = _read_json(part / RECORD)
        if record is None or record.get("key") != key:
            return False
        self.commit(name, record)
        return True

    def clean(self) -> None:
        """Remove leftovers of interrupted commits (``.<stage>.*.old`` folders)."""
        for old in self.root.glob(".*.old"):
            shutil.rmtree(old, ignore_errors=True)

    def write_manifest(self, data: Mapping[str, Any]) -> None:
        atomic_write_json(self.root / MANIFEST, dict(data))


def output_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {digest, size, mtime_ns}}`` of every file under ``folder`` but the
    record itself and hidden files."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.as_posix() == RECORD:
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        st = path.stat()
        out[rel.as_posix()] = {
            "digest": file_digest(path),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
    return out


def outputs_intact(folder: Path, outputs: Mapping[str, Mapping[str, Any]]) -> bool:
    """Every recorded output is still there with its bytes (size and mtime unchanged, or
    else the same digest)."""
    for rel, entry in outputs.items():
        path = folder / rel
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size != entry["size"]:
            return False
        if st.st_mtime_ns != entry["mtime_ns"] and file_digest(path) != entry["digest"]:
            return False
    return True


def signature(record: Mapping[str, Any]) -> str:
    """What downstream stages key on: the stage's key and its outputs' digests."""
    outputs = {k: v["digest"] for k, v in record.get("outputs", {}).items()}
    return digest_json({"key": record.get("key"), "outputs": outputs})


class DigestCache:
    """Content digests of external inputs, each computed once per run."""

    def __init__(self) -> None:
        self._cache: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        path = Path(path)
        if path not in self._cache:
            self._cache[path] = path_digest(path)
        return self._cache[path]
