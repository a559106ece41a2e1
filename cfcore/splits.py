"""Seeded, reproducible train/test splits of an :class:`~cfcore.interactions.Interactions`.

- :func:`holdout_split` — per-user random holdout of a fraction of entries (80/20).
- :func:`item_split` — hold out whole items (Fang §4.1: 95/5; Bibas et al.: 30%).
- :func:`leave_k_out` — k random entries of each user.

The same ``seed`` always gives the same split (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cfcore.errors import InputError
from cfcore.interactions import Interactions


def _split_rows(
    inter: Interactions, n_test: np.ndarray, seed: int
) -> tuple[Interactions, Interactions]:
    """Move ``n_test[u]`` random entries of each row u to the test matrix."""
    m = inter.user_items
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(inter.n_users), np.diff(m.indptr))
    keys = rng.random(m.nnz)
    order = np.lexsort((keys, rows))  # rows stay grouped (CSR order); random order within a row
    rank = np.empty(m.nnz, dtype=np.int64)
    rank[order] = np.arange(m.nnz) - m.indptr[rows[order]]
    is_test = rank < n_test[rows]

    def part(mask: np.ndarray) -> Interactions:
        sub = sp.csr_matrix(
            (m.data[mask], (rows[mask], m.indices[mask])), shape=m.shape, dtype=np.float32
        )
        return inter.with_matrix(sub)

    return part(~is_test), part(is_test)


def holdout_split(
    inter: Interactions, test_fraction: float = 0.2, seed: int = 0, min_train: int = 1
) -> tuple[Interactions, Interactions]:
    """Hold out a random ``test_fraction`` of each user's entries.

    Each user keeps at least ``min_train`` entries in train; users with too few entries
    contribute nothing to test. Both results keep the full id spaces (same shape).

    Returns
    -------
    train, test : Interactions
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    counts = inter.user_activity()
    n_test = np.minimum(
        np.rint(counts * test_fraction).astype(np.int64), np.maximum(counts - min_train, 0)
    )
    return _split_rows(inter, n_test, seed)


def leave_k_out(
    inter: Interactions, k: int = 1, seed: int = 0
) -> tuple[Interactions, Interactions]:
    """Hold out ``k`` random entries of every user that has more than ``k``.

    Returns
    -------
    train, test : Interactions
    """
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    counts = inter.user_activity()
    n_test = np.where(counts > k, k, 0)
    return _split_rows(inter, n_test, seed)


@dataclass(frozen=True)
class ItemSplit:
    """Result of :func:`item_split`.

    Attributes
    ----------
    train, test : Interactions
        The same users; ``train`` has only the train items as columns, ``test`` only the
        held-out ones (so a model fit on ``train`` never saw a test item).
    train_items, test_items : ndarray
        Column positions of each part in the original matrix.
    """

    train: Interactions
    test: Interactions
    train_items: np.ndarray
    test_items: np.ndarray


def item_split(inter: Interactions, test_fraction: float = 0.05, seed: int = 0) -> ItemSplit:
    """Hold out a random ``test_fraction`` of the items with all their interactions.

    Fang et al. §4.1 keep 95% of images for training; Bibas et al. hold out 30% ("new
    images" with no interactions at training time).
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(inter.n_items)
    n_test = max(1, int(round(inter.n_items * test_fraction)))
    if n_test >= inter.n_items:
        raise InputError(f"test_fraction {test_fraction} leaves no train items")
    test_items = np.sort(perm[:n_test])
    train_items = np.sort(perm[n_test:])
    return ItemSplit(
        inter.subset(items=train_items), inter.subset(items=test_items), train_items, test_items
    )
