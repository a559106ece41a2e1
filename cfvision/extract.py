"""Penultimate-layer features of item images (Fang §4.3: FC6 of the trained network).

Features are L2-normalised so that inner products are cosine similarities, and saved as an
``item-vectors`` artifact (:func:`cfcore.vectors.save_vectors`: ``item_ids``, ``vectors``
float32) that ``cfcore neighbors``, ``cfcore cluster`` and :mod:`cfvision.evaluate` read.
Images come from the uint8 cache (:func:`cfvision.data.prepare_images`), centre-cropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cfvision.data import ItemImages
from cfvision.loader import CachedImages, channels_last_for, make_loader, to_model_input
from cfvision.models import FeatureClassifier


@torch.no_grad()
def extract_features(
    model: FeatureClassifier,
    images: ItemImages,
    image_size: int,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    workers: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """L2-normalised features of every item of ``images``, one row each, in order.

    Parameters
    ----------
    model : FeatureClassifier
        Its ``features`` method (the penultimate layer) is used, in eval mode (no dropout,
        batch-norm running statistics).
    images : ItemImages
        From :func:`cfvision.data.prepare_images` with ``size = resize_size(image_size)``.
    image_size : int
        Side of the centre crop.

    Returns
    -------
    ndarray, float32, shape (len(images), model.feature_dim)
        ``f / max(‖f‖₂, 1e-12)`` per row.
    """
    device = torch.device(device)
    channels_last = channels_last_for(device)
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_loader(CachedImages(images, crop=image_size), batch_size, device, workers=workers)
    it: Any = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="extracting", unit="batch", leave=False)
    out = np.empty((len(images), model.feature_dim), dtype=np.float32)
    row = 0
    for x, _ in it:
        f = model.features(to_model_input(x, device, channels_last)).float()
        f = torch.nn.functional.normalize(f, p=2, dim=1, eps=1e-12)
        out[row : row + len(f)] = f.cpu().numpy()
        row += len(f)
    return out
