"""The data layer: one users × items implicit-feedback matrix with its raw ids.

Everything in collabfeat speaks ``user_items``: a users × items ``scipy.sparse.csr_matrix``
of float32 ones (a view, like, purchase...), rows sorted, no duplicates. The raw ids
(integers or strings, as read from the file) are kept alongside so that results can be
reported in the user's own ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore.errors import InputError
from cfcore.ids import as_ids, encode_ids, id_positions
from cfcore.io import load_artifact, require_keys, save_artifact

ARTIFACT_KIND = "interactions"


def binarize(matrix: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """Return ``matrix`` as a canonical binary CSR: float32 ones, sorted, no duplicates.

    Explicit zeros are dropped; any stored non-zero becomes 1. ``indptr`` and ``indices``
    share one index dtype, as scipy requires (with int64 ``indptr`` and int32 ``indices``,
    ``tocoo()`` and ``nonzero()`` fail): int32 while the matrix fits, else int64.
    """
    csr = sp.csr_matrix(matrix, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.data = np.ones_like(csr.data, dtype=np.float32)
    csr = csr.astype(np.float32)
    csr.sort_indices()
    index_dtype = _index_dtype(csr.nnz, csr.shape)
    csr.indptr = csr.indptr.astype(index_dtype)
    csr.indices = csr.indices.astype(index_dtype)
    return csr


def column_counts(matrix: sp.csr_matrix) -> np.ndarray:
    """Stored entries per column of a canonical CSR (an item's number of users), int64.

    Counted a chunk of indices at a time: ``np.bincount`` casts its input to int64, and a
    copy of all the indices would cost 8 bytes per interaction at the peak of a fit. A chunk
    is as long as the counts (at least 65,536), so the copies cost no more than the counts.
    """
    n_columns = matrix.shape[1]
    counts = np.zeros(n_columns, dtype=np.int64)
    chunk = max(n_columns, 1 << 16)
    for start in range(0, matrix.indices.shape[0], chunk):
        counts += np.bincount(matrix.indices[start : start + chunk], minlength=n_columns)
    return counts


def _index_dtype(nnz: int, shape: tuple[int, int]) -> type:
    """int32 while the matrix fits (scipy's own choice), else int64."""
    return np.int64 if max(nnz, *shape) >= np.iinfo(np.int32).max else np.int32


def csr_from_codes(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
) -> tuple[sp.csr_matrix, int]:
    """The canonical binary CSR of (row, column) pairs, and how many pairs were repeats.

    Sorts one int64 key per pair (``row × n_cols + col``) instead of going through COO, so
    the peak is about 17 bytes per pair above the inputs and no copy of the matrix is made.
    """
    n_rows, n_cols = shape
    key = rows.astype(np.int64)
    key *= n_cols
    key += cols
    key.sort()
    n_pairs = len(key)
    if n_pairs > 1:
        new = np.empty(n_pairs, dtype=bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        if not new.all():
            key = key[new]
        del new
    index_dtype = _index_dtype(len(key), shape)
    indptr = np.searchsorted(key, np.arange(n_rows + 1, dtype=np.int64) * n_cols)
    np.remainder(key, n_cols, out=key)
    indices = key.astype(index_dtype)
    del key
    csr = sp.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), indices, indptr.astype(index_dtype)),
        shape=shape,
        copy=False,
    )
    csr.has_sorted_indices = True
    csr.has_canonical_format = True
    return csr, n_pairs - len(indices)


class Interactions:
    """A users × items binary interaction matrix with raw user and item ids.

    Parameters
    ----------
    user_items : sparse matrix or ndarray, shape (n_users, n_items)
        Non-zero entries are interactions; values are turned into float32 ones,
        duplicates collapse to one.
    user_ids, item_ids : array-like, optional
        Raw ids in row / column order (defaults: ``0..n-1``). Must be unique.

    Attributes
    ----------
    user_items : scipy.sparse.csr_matrix
        float32 ones, sorted, no duplicates; ``indptr`` and ``indices`` int32 (int64 for
        matrices with 2**31 or more entries).
    user_ids, item_ids : ndarray
        Raw ids (int64 or str) in row / column order.
    n_duplicates : int
        Input rows that repeated an earlier (user, item) pair and were counted once (set by
        :meth:`from_pairs` and the readers; 0 for a matrix given directly).
    """

    n_duplicates: int = 0

    def __init__(
        self,
        user_items: sp.spmatrix | np.ndarray,
        user_ids: Sequence[Any] | np.ndarray | None = None,
        item_ids: Sequence[Any] | np.ndarray | None = None,
    ) -> None:
        if not sp.issparse(user_items):
            user_items = np.asarray(user_items)
            if user_items.ndim != 2:
                raise InputError(f"user_items: expected a 2-D matrix, got shape {user_items.shape}")
            if not np.all(np.isfinite(user_items)):
                raise InputError("user_items: contains NaN or inf")
        elif user_items.nnz and not np.all(np.isfinite(user_items.data)):
            raise InputError("user_items: contains NaN or inf")
        self.user_items = binarize(user_items)
        n_users, n_items = self.user_items.shape
        self.user_ids = as_ids(user_ids, n_users, "user_ids")
        self.item_ids = as_ids(item_ids, n_items, "item_ids")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pairs(
        cls,
        users: Sequence[Any] | np.ndarray,
        items: Sequence[Any] | np.ndarray,
        ratings: Sequence[float] | np.ndarray | None = None,
        min_rating: float | None = None,
    ) -> Interactions:
        """Build from parallel arrays of raw user ids, item ids and optional ratings.

        Ids are mapped to contiguous rows/columns in sorted order (integers numerically,
        strings lexicographically). With ``min_rating``, only pairs whose rating is
        ``>= min_rating`` count as interactions (users and items that keep no interaction are
        dropped). Duplicate pairs collapse to one; :attr:`n_duplicates` counts the repeats.
        """
        users = np.asarray(users)
        items = np.asarray(items)
        if users.shape != items.shape or users.ndim != 1:
            raise InputError(
                f"users and items must be 1-D arrays of equal length, got {users.shape} and {items.shape}"
            )
        if len(users) == 0:
            raise InputError("no interactions: the input is empty")
        if ratings is not None:
            ratings = np.asarray(ratings, dtype=np.float64)
            if ratings.shape != users.shape:
                raise InputError(f"ratings: expected {users.shape}, got {ratings.shape}")
            bad = np.flatnonzero(~np.isfinite(ratings))
            if len(bad):
                raise InputError(f"ratings: NaN or inf at entry {int(bad[0])}")
            if min_rating is not None:
                keep = ratings >= min_rating
                users, items = users[keep], items[keep]
                if len(users) == 0:
                    raise InputError(f"no interactions left with rating >= {min_rating}")
        user_ids, rows = encode_ids(users, "users")
        item_ids, cols = encode_ids(items, "items")
        return cls._from_codes(rows, cols, user_ids, item_ids)

    @classmethod
    def _from_codes(
        cls, rows: np.ndarray, cols: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray
    ) -> Interactions:
        """From row/column codes into sorted unique raw ids (:func:`cfcore.ids.encode_ids`):
        the matrix is built canonical, so nothing is copied or checked again."""
        matrix, duplicates = csr_from_codes(rows, cols, (len(user_ids), len(item_ids)))
        out = cls.__new__(cls)
        out.user_items, out.user_ids, out.item_ids = matrix, user_ids, item_ids
        out.n_duplicates = duplicates
        return out

    # ------------------------------------------------------------------ basic facts
    @property
    def shape(self) -> tuple[int, int]:
        return self.user_items.shape  # type: ignore[return-value]

    @property
    def n_users(self) -> int:
        return self.user_items.shape[0]

    @property
    def n_items(self) -> int:
        return self.user_items.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.user_items.nnz)

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.n_users * self.n_items)

    def item_popularity(self) -> np.ndarray:
        """Number of distinct users of each item (Fang's p_i), int64, shape (n_items,)."""
        return column_counts(self.user_items)

    def user_activity(self) -> np.ndarray:
        """Number of items of each user, int64, shape (n_users,)."""
        return np.diff(self.user_items.indptr).astype(np.int64)

    def item_users(self) -> sp.csr_matrix:
        """The transpose: items × users CSR (item i's row lists its viewers)."""
        return binarize(self.user_items.T)

    def __repr__(self) -> str:
        n = self.n_duplicates
        repeats = f"; {n} duplicate row{'s' if n > 1 else ''} counted once" if n else ""
        return (
            f"Interactions({self.n_users} users × {self.n_items} items, {self.nnz} interactions, "
            f"density {self.density:.4%}{repeats})"
        )

    # ------------------------------------------------------------------ id lookup
    def user_index(self, user_ids: Any) -> np.ndarray:
        """Rows of the given raw user ids (raises :class:`InputError` for unknown ids)."""
        return id_positions(self.user_ids, user_ids, unknown="unknown user id")

    def item_index(self, item_ids: Any) -> np.ndarray:
        """Columns of the given raw item ids (raises :class:`InputError` for unknown ids)."""
        return id_positions(self.item_ids, item_ids, unknown="unknown item id")

    # ------------------------------------------------------------------ subsets
    def subset(
        self, users: np.ndarray | None = None, items: np.ndarray | None = None
    ) -> Interactions:
        """Keep the given rows and/or columns (integer positions or boolean masks)."""
        m = self.user_items
        uid, iid = self.user_ids, self.item_ids
        if users is not None:
            m, uid = m[users], uid[users]
        if items is not None:
            m, iid = m[:, items], iid[items]
        return Interactions(m, uid, iid)

    def with_matrix(self, user_items: sp.spmatrix) -> Interactions:
        """A new container with the same ids and another matrix of the same shape."""
        if user_items.shape != self.shape:
            raise InputError(f"matrix shape {user_items.shape} != {self.shape}")
        return Interactions(user_items, self.user_ids, self.item_ids)

    def filter_counts(
        self,
        min_count: int = 10,
        max_count: int = 20000,
        min_user_count: int | None = None,
        max_user_count: int | None = None,
        iterate: bool = True,
    ) -> Interactions:
        """Fang et al. §3: keep items and users whose interaction counts lie in [min, max].

        Parameters
        ----------
        min_count, max_count : int
            Bounds for items (and for users unless given separately). The paper used 10 and
            20000 views.
        min_user_count, max_user_count : int, optional
            Separate bounds for users.
        iterate : bool
            Dropping items lowers user counts and vice versa; repeat until both hold (the
            paper applies the filter once; ``iterate=False`` does that).
        """
        umin = min_count if min_user_count is None else min_user_count
        umax = max_count if max_user_count is None else max_user_count
        if min_count > max_count or umin > umax:
            raise InputError("filter_counts: min must not exceed max")
        out = self
        while True:
            pop = out.item_popularity()
            items = (pop >= min_count) & (pop <= max_count)
            step = out.subset(items=items)
            act = step.user_activity()
            users = (act >= umin) & (act <= umax)
            step = step.subset(users=users)
            changed = step.shape != out.shape
            out = step
            if not iterate or not changed:
                break
        if out.nnz == 0:
            raise InputError(
                f"filter_counts({min_count}, {max_count}) left no interactions; loosen the bounds"
            )
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as a collabfeat ``.npz`` (CSR arrays + ids), atomically, without pickle."""
        m = self.user_items
        return save_artifact(
            path,
            ARTIFACT_KIND,
            {
                "indptr": m.indptr,
                "indices": m.indices,
                "shape": np.asarray(m.shape, dtype=np.int64),
                "user_ids": self.user_ids,
                "item_ids": self.item_ids,
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Interactions:
        """Load an ``.npz`` written by :meth:`save`."""
        arrays, _ = load_artifact(path, ARTIFACT_KIND)
        require_keys(path, arrays, ["indptr", "indices", "shape", "user_ids", "item_ids"])
        shape = tuple(int(s) for s in arrays["shape"])
        data = np.ones(len(arrays["indices"]), dtype=np.float32)
        m = sp.csr_matrix((data, arrays["indices"], arrays["indptr"]), shape=shape)
        return cls(m, arrays["user_ids"], arrays["item_ids"])
