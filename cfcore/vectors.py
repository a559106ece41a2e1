"""``(ids, vectors)`` files: item factors, CNN features, anything with one row per item.

Two artifact kinds are accepted wherever collabfeat wants vectors:

* ``"item-vectors"`` — arrays ``item_ids`` (raw ids, row order) and ``vectors`` (float32,
  n × d). Written by :func:`save_vectors` and by ``cfvision extract``.
* ``"factor-model"`` — a model written by ``cfcore factorize`` / ``Factorizer.save``, read
  by its one reader, :class:`cfcore.model.FactorModel`; its ``item_factors_`` and
  ``item_ids_`` are the vectors (Fang et al. §4.2: the latent space).

Every loader checks what a distance computation would otherwise turn into silent garbage:
2-D shape, one id per row, unique ids, finite values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError, ModelFormatError
from cfcore.ids import as_ids
from cfcore.io import load_artifact, save_artifact
from cfcore.model import ARTIFACT_KIND as MODEL_KIND
from cfcore.model import FactorModel

VECTORS_KIND = "item-vectors"


@dataclass
class ItemVectors:
    """One vector per item, with the items' raw ids.

    Attributes
    ----------
    ids : ndarray, shape (n,)
        Raw item ids (int64 or str), unique, in row order.
    vectors : ndarray, shape (n, d)
        float32, C-contiguous, finite.
    meta : dict
        Header of the file they came from (``kind``, ``source``...), empty when built in memory.
    """

    ids: np.ndarray
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = check_vectors(self.vectors, "vectors")
        self.ids = as_ids(self.ids, len(self.vectors), "ids")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``"item-vectors"`` artifact (see :func:`save_vectors`)."""
        return save_vectors(path, self.ids, self.vectors, self.meta)


def check_vectors(vectors: Any, name: str = "vectors") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 (n, d) array, or raise :class:`InputError`.

    Refuses anything that is not 2-D, empty, or holds NaN/inf (naming the first bad row).
    """
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not a numeric array ({exc})") from None
    if arr.ndim != 2:
        raise InputError(
            f"{name}: expected a 2-D array (items × dimensions), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name}: empty array of shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        n_bad = int((~finite.all(axis=1)).sum())
        raise InputError(
            f"{name}: {n_bad} row(s) contain NaN or inf (first: row {row}); "
            "did the factorization diverge?"
        )
    return np.ascontiguousarray(arr)


def save_vectors(
    path: str | os.PathLike[str],
    ids: Any,
    vectors: Any,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Save ``(ids, vectors)`` as an ``"item-vectors"`` artifact, atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.npz``.
    ids : array-like, shape (n,)
        Raw item ids, unique.
    vectors : array-like, shape (n, d)
        Stored as float32.
    meta : dict, optional
        JSON-serialisable metadata (e.g. ``{"source": "resnet18 pool"}``).
    """
    vectors = check_vectors(vectors)
    ids = as_ids(ids, len(vectors))
    meta = {k: v for k, v in (meta or {}).items() if k not in ("kind", "version")}
    return save_artifact(path, VECTORS_KIND, {"item_ids": ids, "vectors": vectors}, meta)


def load_vectors(path: str | os.PathLike[str]) -> ItemVectors:
    """Load ``(ids, vectors)`` from an ``"item-vectors"`` file or a ``"factor-model"`` file.

    Parameters
    ----------
    path : path-like
        An ``.npz`` written by :func:`save_vectors`, ``cfvision extract`` or a factor model.

    Returns
    -------
    ItemVectors
        ``meta["kind"]`` tells which kind of file it was; ``meta["source"]`` is ``path``.

    Raises
    ------
    ModelFormatError
        Not a collabfeat vectors/model file, or arrays are missing; a factor model that
        :meth:`cfcore.model.FactorModel.load` refuses (e.g. NaN/inf factors).
    InputError
        Mismatched ids, NaN/inf values in an item-vectors file.
    """
    arrays, header = load_artifact(path, (VECTORS_KIND, MODEL_KIND))
    if header["kind"] == MODEL_KIND:
        model = FactorModel.from_artifact(path, arrays, header)
        if not model.is_fitted:
            raise ModelFormatError(
                f"{path}: holds an unfitted {type(model).__name__}: no item factors"
            )
        meta = {"kind": MODEL_KIND, "model": type(model).__name__, "source": str(path)}
        return ItemVectors(model.item_ids_, model.item_factors_, meta)
    vec_key, id_key = "vectors", "item_ids"
    if vec_key not in arrays and "features" in arrays:  # tolerate cfvision's older name
        vec_key = "features"
    if vec_key not in arrays:
        raise ModelFormatError(f"{path}: missing array {vec_key!r}")
    vectors = check_vectors(arrays[vec_key], f"{path}: {vec_key}")
    ids = as_ids(arrays.get(id_key), len(vectors), f"{path}: {id_key}")
    meta = {k: v for k, v in header.items() if k not in ("params", "history")}
    meta["source"] = str(path)
    return ItemVectors(ids, vectors, meta)


def as_item_vectors(obj: Any, ids: Any = None) -> ItemVectors:
    """Accept a path, an :class:`ItemVectors`, a fitted model with ``item_factors_``, or an array."""
    if isinstance(obj, ItemVectors):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return load_vectors(obj)
    if hasattr(obj, "item_factors_"):
        model_ids = getattr(obj, "item_ids_", None)
        return ItemVectors(
            model_ids if ids is None else ids, obj.item_factors_, {"source": type(obj).__name__}
        )
    return ItemVectors(ids, obj)


def l2_normalize(
    vectors: np.ndarray, ids: np.ndarray | None = None, name: str = "vectors"
) -> np.ndarray:
    """Rows divided by their L2 norm (float32 copy); a zero row raises :class:`InputError`.

    Cosine similarity is undefined for a zero vector, so it is refused rather than silently
    scored 0 (an item never seen in training can end up with an all-zero factor).
    """
    norms = np.linalg.norm(vectors, axis=1)
    zero = norms <= np.finfo(np.float32).tiny
    if zero.any():
        first = int(np.flatnonzero(zero)[0])
        who = f"item {ids[first].item()!r}" if ids is not None else f"row {first}"
        raise InputError(
            f"{name}: {int(zero.sum())} all-zero vector(s) (first: {who}); cosine similarity "
            "is undefined for them — drop those items first"
        )
    return np.ascontiguousarray(vectors / norms[:, None], dtype=np.float32)
