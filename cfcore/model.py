"""The contract every collabfeat factor model keeps, stated once (implicit's ``RecommenderBase``).

A factor model scores user ``u`` and item ``i`` as ``s_ui = x_u · y_i + b_i`` (a user bias,
when a model has one, never changes a ranking). Everything below needs only the learned
tables, so it is shared by every model and by a model loaded from disk:

- :meth:`FactorModel.recommend` — top-N items per user, optionally without the items the user
  already has;
- :meth:`FactorModel.similar_items` — cosine neighbours in the item-factor space (Fang §4.2);
- :meth:`FactorModel.scorer` — a scorer for :mod:`cfcore.metrics`;
- :meth:`FactorModel.save` / :meth:`FactorModel.load` — an ``.npz`` artifact of kind
  ``"factor-model"`` (no pickle);
- ``get_params`` / ``set_params`` — the scikit-learn estimator contract.

Rows and ids: ``userids``/``itemids`` arguments are *row indices* (0..n-1) as in implicit;
:meth:`FactorModel.user_rows` / :meth:`FactorModel.item_rows` map raw ids (``user_ids_``,
``item_ids_``) to rows and name any unknown id.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore.errors import InputError, ModelFormatError
from cfcore.ids import id_positions
from cfcore.io import load_artifact, require_keys, save_artifact
from cfcore.metrics import top_n

ARTIFACT_KIND = "factor-model"


def _rows_argument(values: Any, n: int, name: str) -> tuple[np.ndarray, bool]:
    """Validate row indices; return (int64 array, was_scalar)."""
    arr = np.asarray(values)
    scalar = arr.ndim == 0
    arr = np.atleast_1d(arr)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InputError(f"{name}: expected integer row indices, got {arr.dtype} shape {arr.shape}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise InputError(f"{name}: row {int(arr[bad][0])} out of range [0, {n})")
    return arr, scalar


class FactorModel:
    """Base class: learned ``user_factors_`` (n_users, k) and ``item_factors_`` (n_items, k).

    Subclasses implement ``fit`` (and ``fold_in``); their ``__init__`` only stores its
    keyword parameters (scikit-learn contract), which ``get_params`` reads back by name.

    Attributes
    ----------
    user_factors_, item_factors_ : ndarray of float32
    user_bias_, item_bias_ : ndarray of float32 or None
    user_ids_, item_ids_ : ndarray
        Raw ids in row order (``arange`` when fit on a bare matrix).
    history_ : list of dict
        Per-epoch training record (loss, validation metrics, seconds).
    """

    user_factors_: np.ndarray
    item_factors_: np.ndarray
    user_bias_: np.ndarray | None = None
    item_bias_: np.ndarray | None = None
    user_ids_: np.ndarray
    item_ids_: np.ndarray
    history_: list[dict[str, Any]]

    # ------------------------------------------------------------------ sklearn contract
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters by name (scikit-learn contract)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> FactorModel:
        """Set constructor parameters; unknown names raise :class:`InputError`."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise InputError(
                    f"{name}: not a parameter of {type(self).__name__} ({sorted(valid)})"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitted state
    @property
    def is_fitted(self) -> bool:
        return getattr(self, "item_factors_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return self.user_factors_.shape[0]

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return self.item_factors_.shape[0]

    def user_rows(self, user_ids: Any) -> np.ndarray:
        """Rows of raw user ids; :class:`InputError` naming the first unknown id."""
        return self._lookup(self.user_ids_, user_ids, "user_ids")

    def item_rows(self, item_ids: Any) -> np.ndarray:
        """Rows of raw item ids; :class:`InputError` naming the first unknown id."""
        return self._lookup(self.item_ids_, item_ids, "item_ids")

    def _lookup(self, known: np.ndarray, ids: Any, name: str) -> np.ndarray:
        self._check_fitted()
        return id_positions(known, ids, unknown=f"{name}: unknown id")

    # ------------------------------------------------------------------ scoring
    def scorer(self) -> Callable[[np.ndarray], np.ndarray]:
        """A scorer for :mod:`cfcore.metrics`: user rows → ``x_u · Yᵀ + b`` (float32)."""
        from cfcore.metrics import factor_scorer

        self._check_fitted()
        return factor_scorer(self.user_factors_, self.item_factors_, self.item_bias_)

    def predict(self, userids: Any, itemids: Any) -> np.ndarray:
        """``s_ui = x_u · y_i (+ b_u + b_i)`` for parallel arrays of rows (float32)."""
        self._check_fitted()
        u, _ = _rows_argument(userids, self.n_users, "userids")
        i, _ = _rows_argument(itemids, self.n_items, "itemids")
        if u.shape != i.shape:
            raise InputError(f"userids and itemids differ in length: {len(u)} vs {len(i)}")
        out = np.einsum("ij,ij->i", self.user_factors_[u], self.item_factors_[i])
        if self.user_bias_ is not None:
            out += self.user_bias_[u]
        if self.item_bias_ is not None:
            out += self.item_bias_[i]
        return out.astype(np.float32)

    def recommend(
        self,
        userids: Any,
        user_items: sp.spmatrix | None = None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``N`` items for each user, best first.

        Ranks every item by ``s_ui = x_u · y_i + b_i``.

        Parameters
        ----------
        userids : int or array of int
            User rows (see :meth:`user_rows` for raw ids).
        user_items : sparse matrix, optional
            The items each user already has: either one row per entry of ``userids``
            (implicit's convention) or the whole (n_users, n_items) training matrix. Needed
            when ``filter_already_liked_items`` is True.
        N : int
            Number of items; must be between 1 and ``n_items`` (fewer come back when a user
            has fewer unseen items).
        filter_already_liked_items : bool
            Leave out the items in the user's row of ``user_items``.

        Returns
        -------
        ids, scores : ndarray, shape (len(userids), N) — or (N,) for a scalar ``userids``
            Item rows (int64) and scores (float32). Filtered slots that cannot be filled are
            ``-1`` with score ``-inf``.
        """
        self._check_fitted()
        rows, scalar = _rows_argument(userids, self.n_users, "userids")
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise InputError(f"N must be a positive integer, got {N!r}")
        if N > self.n_items:
            raise InputError(f"N={N} is larger than the catalogue ({self.n_items} items)")
        liked = None
        if filter_already_liked_items:
            if user_items is None:
                raise InputError("user_items: required when filter_already_liked_items=True")
            liked = sp.csr_matrix(user_items)
            if liked.shape[1] != self.n_items:
                raise InputError(
                    f"user_items: has {liked.shape[1]} columns, the model has {self.n_items} items"
                )
            if liked.shape[0] == len(rows):
                pass
            elif liked.shape[0] == self.n_users:
                liked = liked[rows]
            else:
                raise InputError(
                    f"user_items: expected {len(rows)} rows (one per user) or {self.n_users} "
                    f"(all users), got {liked.shape[0]}"
                )
        score = self.scorer()
        ids = np.empty((len(rows), N), dtype=np.int64)
        vals = np.empty((len(rows), N), dtype=np.float32)
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            s = score(rows[start:stop]).astype(np.float32, copy=True)
            if liked is not None:
                block = liked[start:stop].tocoo()
                s[block.row, block.col] = -np.inf
            top, top_s = top_n(s, N)
            top[~np.isfinite(top_s)] = -1
            ids[start:stop], vals[start:stop] = top, top_s
        if scalar:
            return ids[0], vals[0]
        return ids, vals

    def similar_items(self, itemids: Any, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` most similar items by cosine of the item factors (the item itself first).

        ``cos(i, j) = y_i · y_j / (‖y_i‖ ‖y_j‖)`` (Fang §4.2: neighbours in latent space;
        a zero vector has cosine 0 with everything).

        Returns
        -------
        ids, scores : ndarray, shape (len(itemids), N) — or (N,) for a scalar ``itemids``
        """
        self._check_fitted()
        rows, scalar = _rows_argument(itemids, self.n_items, "itemids")
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise InputError(f"N must be a positive integer, got {N!r}")
        if N > self.n_items:
            raise InputError(f"N={N} is larger than the catalogue ({self.n_items} items)")
        norms = np.linalg.norm(self.item_factors_, axis=1)
        unit = self.item_factors_ / np.where(norms > 0, norms, 1.0)[:, None]
        unit = unit.astype(np.float32)
        ids, vals = top_n(unit[rows] @ unit.T, N)
        if scalar:
            return ids[0], vals[0]
        return ids, vals

    # ------------------------------------------------------------------ persistence
    def _artifact_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "user_ids": self.user_ids_,
            "item_ids": self.item_ids_,
        }
        if self.user_bias_ is not None:
            arrays["user_bias"] = self.user_bias_
        if self.item_bias_ is not None:
            arrays["item_bias"] = self.item_bias_
        return arrays

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` (``.npz``, kind ``"factor-model"``, atomically).

        Arrays ``user_factors``, ``item_factors`` (float32), ``user_ids``, ``item_ids`` (raw
        ids in row order), optional ``user_bias``/``item_bias``; header ``params`` (the
        constructor parameters), ``history`` and ``model`` (the class name).
        """
        self._check_fitted()
        meta = {
            "model": type(self).__name__,
            "params": self.get_params(),
            "history": getattr(self, "history_", []),
            **self._artifact_meta(),
        }
        return save_artifact(path, ARTIFACT_KIND, self._artifact_arrays(), meta)

    def _artifact_meta(self) -> dict[str, Any]:
        """Hook for subclasses: more header entries (JSON-serialisable)."""
        return {}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FactorModel:
        """Read a model written by :meth:`save`.

        Raises
        ------
        ModelFormatError
            Not a collabfeat factor-model file, or its arrays are missing or inconsistent.
        """
        arrays, header = load_artifact(path, ARTIFACT_KIND)
        require_keys(path, arrays, ["user_factors", "item_factors", "user_ids", "item_ids"])
        params = header.get("params", {})
        renamed = getattr(cls, "_renamed_params", {})
        params = {renamed.get(k, k): v for k, v in params.items()}
        valid = set(cls._param_names())
        model = cls(**{k: v for k, v in params.items() if k in valid})
        uf = np.ascontiguousarray(arrays["user_factors"], dtype=np.float32)
        itf = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        if uf.ndim != 2 or itf.ndim != 2 or uf.shape[1] != itf.shape[1]:
            raise ModelFormatError(
                f"{path}: factor shapes do not match: users {uf.shape}, items {itf.shape}"
            )
        if len(arrays["user_ids"]) != uf.shape[0] or len(arrays["item_ids"]) != itf.shape[0]:
            raise ModelFormatError(f"{path}: id arrays do not match the factor tables")
        model.user_factors_, model.item_factors_ = uf, itf
        model.user_ids_, model.item_ids_ = arrays["user_ids"], arrays["item_ids"]
        model.user_bias_ = arrays.get("user_bias")
        model.item_bias_ = arrays.get("item_bias")
        for name in ("user_bias_", "item_bias_"):
            value = getattr(model, name)
            if value is not None:
                setattr(model, name, np.ascontiguousarray(value, dtype=np.float32))
        model.history_ = list(header.get("history", []))
        model._load_extra(arrays, header)
        return model

    def _load_extra(self, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        """Hook for subclasses that store more than the shared arrays."""
