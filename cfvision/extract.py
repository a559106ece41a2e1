"""Penultimate-layer features of item images (Fang §4.3: FC6 of the trained network).

Features are L2-normalised so that inner products are cosine similarities, and saved as an
``item-vectors`` artifact (``item_ids``, ``vectors`` float32) that ``cfcore neighbors`` and
:mod:`cfvision.evaluate` read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cfvision.data import ItemImageDataset, eval_transform, ids_to_array
from cfvision.models import FeatureClassifier

ARTIFACT_KIND = "item-vectors"


@torch.no_grad()
def extract_features(
    model: FeatureClassifier,
    items: Sequence[str],
    index: dict[str, Path],
    image_size: int,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    workers: int = 0,
    cache: dict[str, Any] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """L2-normalised features of ``items``, one row each, in order.

    Parameters
    ----------
    model : FeatureClassifier
        Its ``features`` method (the penultimate layer) is used, in eval mode (no dropout,
        batch-norm running statistics).
    items, index
        Item ids and their image files (all readable: see :func:`cfvision.data.check_images`).
    image_size : int
        Eval transform size (resize short side to 256·s/224, center crop s).

    Returns
    -------
    ndarray, float32, shape (len(items), model.feature_dim)
        ``f / max(‖f‖₂, 1e-12)`` per row.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    ds = ItemImageDataset(items, index, None, eval_transform(image_size), cache)
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    it: Any = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="extracting", unit="batch", leave=False)
    out = np.empty((len(ds), model.feature_dim), dtype=np.float32)
    row = 0
    for x, _ in it:
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        f = model.features(x).float()
        f = torch.nn.functional.normalize(f, p=2, dim=1, eps=1e-12)
        out[row : row + len(f)] = f.cpu().numpy()
        row += len(f)
    return out


def save_item_vectors(
    path: str | os.PathLike[str],
    item_ids: Sequence[str],
    vectors: np.ndarray,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write an ``item-vectors`` artifact atomically (ids as int64 when they are integers)."""
    from cfcore.io import save_artifact

    if len(item_ids) != len(vectors):
        raise ValueError(f"{len(item_ids)} ids but {len(vectors)} vectors")
    return save_artifact(
        path,
        ARTIFACT_KIND,
        {"item_ids": ids_to_array(item_ids), "vectors": np.asarray(vectors, np.float32)},
        {"normalized": True, **(meta or {})},
    )


def load_item_vectors(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Read item vectors: an ``item-vectors`` artifact or a ``factor-model`` (its item factors),
    through :func:`cfcore.vectors.load_vectors` (the one reader of both kinds).

    Returns
    -------
    item_ids : list of str
    vectors : ndarray, float32
    meta : dict
        The file's header (``kind`` …; ``source`` is ``path``).
    """
    from cfcore.errors import InputError, ModelFormatError
    from cfcore.vectors import load_vectors

    try:
        found = load_vectors(path)
    except FileNotFoundError:
        raise InputError(f"vectors file {path}: no such file") from None
    except ModelFormatError as exc:
        raise InputError(str(exc)) from None
    return [str(i) for i in found.ids.tolist()], found.vectors, found.meta
