"""Decode every image once: a memory-mapped ``uint8`` cache of the resized images.

Fang et al. §4.1 (after Krizhevsky et al. 2012) resize each image so that its short side has
``R`` pixels and keep the central ``R × R`` square; training then takes random ``s × s`` crops
(``R = round(256·s/224)``). That square is all training and extraction ever read, so it is
computed once per image file and stored in an ``N × R × R × 3`` ``uint8`` array on disk
(``.npy``, opened with ``mmap_mode="r"``): an epoch reads memory — or the page cache, for image
sets larger than RAM — instead of decoding JPEGs.

The cache is **content-addressed**:

- every image file is identified by a digest of its bytes (BLAKE2b-128), so renaming or moving
  the folder keeps the cache, and changing a file's bytes misses it;
- a cache folder ``r<R>-<key>/`` holds ``images.npy`` (one row per file, in digest order),
  ``digests.npy`` and ``meta.json`` (the files that could not be decoded and why, the images
  converted to RGB); ``key`` hashes the format version, ``R`` and the digests;
- a request is served by any complete cache of the same ``R`` that covers its digests (a cache
  built for every poster also serves a run on a subset of them).

Two runs may share a cache directory: a cache is built in a temporary folder and renamed into
place in one step (readers never see a half-written cache), and builders of the same key wait
on a lock file (``fcntl.flock``) instead of decoding twice. Complete caches are never modified;
delete old ``r*-*`` folders to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError
from cfcore.io import DIGEST_BYTES, file_digest, file_digests  # noqa: F401 - cfvision.data

#: Bump when the stored pixels would change (resize method, crop rule, colour conversion).
CACHE_FORMAT = 1
CACHE_ENV_VAR = "COLLABFEAT_CACHE"
#: Files decoded per chunk while building (bounds the memory held by decoded images).
_CHUNK = 256
_DIGEST_BYTES = DIGEST_BYTES


def default_cache_dir() -> Path:
    """``$COLLABFEAT_CACHE/images`` when set, else ``~/.cache/collabfeat/images``."""
    root = os.environ.get(CACHE_ENV_VAR)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "collabfeat"
    return base / "images"


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# ------------------------------------------------------------------------------ decoding
def decode_square(path: str | os.PathLike[str], size: int) -> tuple[np.ndarray, str]:
    """Decode an image by its content, convert it to RGB, resize the short side to ``size``
    (bilinear, antialiased) and keep the central ``size × size`` square.

    Large JPEGs are decoded at a reduced scale first (Pillow's ``draft``, at least twice the
    target size), which is what makes building the cache of big photos fast.

    Returns
    -------
    (ndarray of uint8, shape (size, size, 3), the image's original mode)

    Raises
    ------
    OSError, ValueError, SyntaxError
        Truncated or corrupt data (Pillow's own errors).
    """
    from PIL import Image

    with Image.open(path) as img:
        mode = img.mode
        if img.format == "JPEG" and min(img.size) >= 4 * size:
            img.draft("RGB", (2 * size, 2 * size))
        img.load()  # decode now: a truncated file fails here
        rgb = img.convert("RGB") if img.mode != "RGB" else img
        w, h = rgb.size
        scale = size / min(w, h)
        new = (max(size, int(round(w * scale))), max(size, int(round(h * scale))))
        rgb = rgb.resize(new, Image.Resampling.BILINEAR)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        square = np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return square, mode


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, str, str | None]:
    from PIL import UnidentifiedImageError

    try:
        arr, mode = decode_square(path, size)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return None, "", f"{type(exc).__name__}: {exc}"
    return arr, mode, None


# ------------------------------------------------------------------------------ the cache
@dataclass
class ImageCache:
    """A complete cache folder: ``images[row]`` is the ``R × R × 3`` square of a file."""

    folder: Path
    size: int
    digests: np.ndarray  # fixed-width bytes, sorted: row order
    unreadable: dict[str, str] = field(default_factory=dict)  # digest → reason
    modes: dict[str, str] = field(default_factory=dict)  # digest → original mode, when not RGB
    _images: np.ndarray | None = field(default=None, repr=False)

    @property
    def images(self) -> np.ndarray:
        """The ``(n, R, R, 3)`` uint8 memory map (opened lazily, once per process)."""
        if self._images is None:
            self._images = np.load(self.folder / "images.npy", mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the map
        return {**self.__dict__, "_images": None}

    def rows(self, digests: Sequence[str | None]) -> np.ndarray:
        """Row of each digest; ``-1`` when the file is not in the cache or was unreadable."""
        keys = np.asarray([d or "" for d in digests], dtype=self.digests.dtype)
        out = np.full(len(keys), -1, dtype=np.int64)
        if len(keys) == 0 or len(self.digests) == 0:
            return out
        pos = np.minimum(np.searchsorted(self.digests, keys), len(self.digests) - 1)
        found = self.digests[pos] == keys
        if self.unreadable:
            found &= ~np.isin(keys, np.asarray(list(self.unreadable), dtype=keys.dtype))
        out[found] = pos[found]
        return out

    def covers(self, digests: Sequence[str]) -> bool:
        """Whether every digest has a row (readable or not) in this cache."""
        keys = np.asarray(list(digests), dtype=self.digests.dtype)
        return bool(np.isin(keys, self.digests).all())

    @classmethod
    def open(cls, folder: Path) -> ImageCache:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise InputError(
                f"image cache {folder}: format {meta.get('format')}, expected {CACHE_FORMAT}"
            )
        digests = np.load(folder / "digests.npy", allow_pickle=False)
        cache = cls(folder, int(meta["size"]), digests, meta["unreadable"], meta["modes"])
        shape = cache.images.shape
        if shape != (len(digests), cache.size, cache.size, 3):
            raise InputError(
                f"image cache {folder}: images.npy has shape {shape}, expected "
                f"{(len(digests), cache.size, cache.size, 3)}; delete the folder to rebuild it"
            )
        return cache


def _key(size: int, digests: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=10)
    h.update(f"collabfeat-image-cache-{CACHE_FORMAT}-{size}\n".encode())
    for d in digests:
        h.update(d.encode())
    return f"r{size:03d}-{h.hexdigest()}"


def _complete_caches(cache_dir: Path, size: int) -> Iterator[Path]:
    if not cache_dir.is_dir():
        return
    for folder in sorted(cache_dir.glob(f"r{size:03d}-*")):
        if folder.is_dir() and (folder / "meta.json").is_file():
            yield folder


def find_cache(cache_dir: Path, size: int, digests: set[str]) -> ImageCache | None:
    """The smallest complete cache of side ``size`` that covers ``digests``, if any."""
    best: ImageCache | None = None
    for folder in _complete_caches(cache_dir, size):
        try:
            cache = ImageCache.open(folder)
        except (OSError, ValueError, KeyError, InputError):
            continue  # another format or damaged: not ours to use (or delete)
        if cache.covers(digests) and (best is None or len(cache.digests) < len(best.digests)):
            best = cache
    return best


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_cache(
    paths: Sequence[Path],
    digests: Sequence[str],
    size: int,
    cache_dir: Path,
    progress: bool = False,
    threads: int | None = None,
) -> ImageCache:
    """Decode ``paths`` (one per distinct digest) into a new cache folder, atomically.

    Raises
    ------
    InputError
        Not enough free space in ``cache_dir`` (the message says how much is needed).
    """
    order = np.argsort(np.asarray(digests))
    sorted_digests = [digests[i] for i in order]
    final = cache_dir / _key(size, sorted_digests)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(cache_dir, os.W_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        raise InputError(
            f"image cache {cache_dir}: cannot write there ({exc.strerror or exc}); "
            "choose another --cache-dir (or set COLLABFEAT_CACHE)"
        ) from None
    with _locked(cache_dir / f".{final.name}.lock"):
        if (final / "meta.json").is_file():  # built meanwhile by another run
            return ImageCache.open(final)
        need = len(digests) * size * size * 3
        free = shutil.disk_usage(cache_dir).free
        if need > free:
            raise InputError(
                f"the image cache needs {need / 2**30:.2f} GiB in {cache_dir}, only "
                f"{free / 2**30:.2f} GiB are free; choose another --cache-dir"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=cache_dir))
        try:
            unreadable, modes = _decode_all(
                [paths[i] for i in order], sorted_digests, size, tmp, progress, threads
            )
            keys = np.asarray(sorted_digests, dtype=f"S{2 * _DIGEST_BYTES}")
            np.save(tmp / "digests.npy", keys, allow_pickle=False)
            meta = {"format": CACHE_FORMAT, "size": size, "unreadable": unreadable, "modes": modes}
            (tmp / "meta.json").write_text(json.dumps(meta))
            os.chmod(tmp, 0o777 & ~_umask())
            os.rename(tmp, final)  # one step: readers see no cache or a complete one
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return ImageCache.open(final)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _decode_all(
    paths: list[Path],
    digests: list[str],
    size: int,
    tmp: Path,
    progress: bool,
    threads: int | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Decode into ``tmp/images.npy`` (a memory map, written chunk by chunk; the row of an
    unreadable file stays zero and is never served)."""
    images = np.lib.format.open_memmap(
        tmp / "images.npy", "w+", np.uint8, (len(paths), size, size, 3)
    )
    unreadable: dict[str, str] = {}
    modes: dict[str, str] = {}
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc=f"caching images ({size}px)", unit="img", leave=False)
    with ThreadPoolExecutor(threads or _threads()) as pool:  # Pillow decodes without the GIL
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            for k, (arr, mode, error) in enumerate(pool.map(_decode, chunk, [size] * len(chunk))):
                digest = digests[start + k]
                if error is not None:
                    unreadable[digest] = error
                    continue
                images[start + k] = arr
                if mode != "RGB":
                    modes[digest] = mode
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    images.flush()
    del images
    return unreadable, modes
