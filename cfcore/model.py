"""The contract every collabfeat factor model keeps, stated once (implicit's ``RecommenderBase``).

A factor model scores user ``u`` and item ``i`` as ``s_ui = x_u · y_i + b_i`` (a user bias,
when a model has one, never changes a ranking). Everything below needs only the learned
tables, so it is shared by every model and by a model loaded from disk; this module is the
one reader, writer and scorer of factor-model files (the CLI, :mod:`cfcore.vectors` and
cfvision call it):

- :meth:`FactorModel.recommend` — top-N items per user, optionally without the items the user
  already has, or for users folded in from their items (``recalculate_user``);
- :meth:`FactorModel.similar_items` — cosine neighbours in the item-factor space (Fang §4.2),
  the item itself first (as implicit) unless ``include_self=False``;
- :meth:`FactorModel.scorer` / :meth:`FactorModel.predict` — scores for :mod:`cfcore.metrics`;
- :meth:`FactorModel.project` — interactions with raw ids moved onto the model's rows and
  columns, refusing another dataset's (:data:`cfcore.ids.MIN_OVERLAP`);
- :meth:`FactorModel.save` / :func:`load_model` — an ``.npz`` artifact of kind
  ``"factor-model"`` (no pickle); loading needs no knowledge of the class that wrote it;
- ``get_params`` / ``set_params`` — the scikit-learn estimator contract
  (:class:`cfcore.estimator.Estimator`, shared with the tag models).

The file: arrays ``user_factors`` (n_users, k) and ``item_factors`` (n_items, k) float32,
``user_ids``/``item_ids`` (raw ids in row order, int64 or str), optional ``user_bias``/
``item_bias``, and whatever the class adds (``Factorizer``: ``item_popularity``); header
``model`` (the class name), ``params`` (the constructor's parameters as given), ``history``,
and the class's own entries (``Factorizer``: ``effective_params``, what the fit ran with).

Rows and ids: ``userids``/``itemids`` arguments are *row indices* (0..n-1) as in implicit;
:meth:`FactorModel.user_rows` / :meth:`FactorModel.item_rows` map raw ids (``user_ids_``,
``item_ids_``) to rows and name any unknown id.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore.errors import InputError, ModelFormatError
from cfcore.estimator import Estimator
from cfcore.ids import MIN_OVERLAP, as_ids, id_positions, reindex, require_overlap
from cfcore.io import load_artifact, require_keys, save_artifact
from cfcore.metrics import top_n

ARTIFACT_KIND = "factor-model"

#: Every FactorModel subclass by name (filled as they are defined), for :func:`load_model`.
_CLASSES: dict[str, type[FactorModel]] = {}
#: The library's own models and their modules, imported when a file names one.
_BUILTIN = {"Factorizer": "cfcore.factorize"}


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


def _check_n(N: Any, n_items: int) -> int:  # noqa: N803 - implicit's name
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise InputError(f"N must be a positive integer, got {N!r}")
    if N > n_items:
        raise InputError(f"N={N} is larger than the catalogue ({n_items} items)")
    return int(N)


def _top(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cfcore.metrics.top_n` with filtered (``-inf``) slots as item ``-1``."""
    ids, vals = top_n(scores, n)
    ids[~np.isfinite(vals)] = -1
    return ids, vals


@dataclass(frozen=True)
class Projection:
    """Interactions with raw ids moved onto a model's rows and columns
    (:meth:`FactorModel.project`).

    Attributes
    ----------
    user_items : csr_matrix, shape (model.n_users, model.n_items)
        The interactions of users the model knows with items it knows (float32 ones).
    new_user_ids : ndarray
        Raw ids of the users the model does not know, in the interactions' order.
    new_user_items : csr_matrix, shape (len(new_user_ids), model.n_items)
        Their interactions with items the model knows (what :meth:`FactorModel.recommend`
        with ``recalculate_user=True`` folds them in from).
    unknown_item_ids : ndarray
        Raw ids of the interactions' items the model does not know.
    total : int
        Interactions given.
    known : int
        Those whose user and item the model knows (in ``user_items``).
    known_items : int
        Those whose item the model knows (in ``user_items`` or ``new_user_items``).
    """

    user_items: sp.csr_matrix
    new_user_ids: np.ndarray
    new_user_items: sp.csr_matrix
    unknown_item_ids: np.ndarray
    total: int
    known: int
    known_items: int

    @property
    def dropped(self) -> int:
        """Interactions left out of ``user_items`` (unknown user or item)."""
        return self.total - self.known


class FactorModel(Estimator):
    """Base class: learned ``user_factors_`` (n_users, k) and ``item_factors_`` (n_items, k).

    Subclasses implement ``fit`` (and ``fold_in``); their ``__init__`` only stores its
    keyword parameters (scikit-learn contract), which ``get_params`` reads back by name.
    ``FactorModel`` itself is what :func:`load_model` returns for a file whose class is
    unknown here: every method below works on it.

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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

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

    def project(
        self,
        interactions: Any,
        min_overlap: float = MIN_OVERLAP,
        new_users: bool = False,
        what: str = "interactions",
    ) -> Projection:
        """Move an :class:`~cfcore.interactions.Interactions` (raw ids) onto the model's rows
        and columns.

        Parameters
        ----------
        interactions : Interactions
        min_overlap : float, default :data:`cfcore.ids.MIN_OVERLAP`
            Refuse (:class:`InputError`) interactions of which fewer than this share involve
            a user and an item the model knows — with ``new_users``, an item it knows (its
            users may be new: they can be folded in). Another dataset's interactions fall
            far below it (an ml-100k model and ml-latest-small: 34%); ``0`` accepts anything.
        new_users : bool, default False
            Whether users the model does not know are expected (see ``min_overlap``).
        what : str
            Names the interactions in the error.

        Returns
        -------
        Projection
        """
        self._check_fitted()
        matrix = getattr(interactions, "user_items", None)
        if matrix is None or not hasattr(interactions, "user_ids"):
            raise InputError(
                f"{what}: expected an Interactions (raw ids), got {type(interactions).__name__}"
            )
        user_ids, item_ids = np.asarray(interactions.user_ids), np.asarray(interactions.item_ids)
        known, kept, user_at, item_at = reindex(
            matrix, user_ids, item_ids, self.user_ids_, self.item_ids_
        )
        new = np.flatnonzero(user_at < 0)
        new_items, _, _, _ = reindex(
            sp.csr_matrix(matrix)[new], None, item_ids, None, self.item_ids_
        )
        cols = sp.coo_matrix(matrix).col
        out = Projection(
            user_items=known,
            new_user_ids=user_ids[new],
            new_user_items=new_items,
            unknown_item_ids=item_ids[item_at < 0],
            total=len(kept),
            known=int(kept.sum()),
            known_items=int((item_at[cols] >= 0).sum()),
        )
        if new_users:
            require_overlap(
                out.known_items,
                out.total,
                f"{what}: interactions with items of the model",
                min_overlap,
            )
        else:
            require_overlap(
                out.known,
                out.total,
                f"{what}: interactions with users and items of the model",
                min_overlap,
            )
        return out

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

    def fold_in(self, user_items_rows: sp.spmatrix) -> np.ndarray:
        """Factors for new users from their items (subclasses that can implement it)."""
        raise InputError(f"{type(self).__name__} cannot fold in new users (a Factorizer model can)")

    def recommend(
        self,
        userids: Any,
        user_items: sp.spmatrix | None = None,
        N: int = 10,  # noqa: N803 - implicit's name
        filter_already_liked_items: bool = True,
        filter_items: Any = None,
        recalculate_user: bool = False,
        *,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``N`` items for each user, best first.

        Ranks every item by ``s_ui = x_u · y_i + b_i``.

        Parameters
        ----------
        userids : int or array of int
            User rows (see :meth:`user_rows` for raw ids).
        user_items : sparse matrix, shape (len(userids), n_items), optional
            The items each user already has, one row per entry of ``userids`` in the same
            order (implicit's contract; any other number of rows is an :class:`InputError`,
            a ``ValueError``). Needed when ``filter_already_liked_items`` or
            ``recalculate_user`` is True.
        N : int
            Number of items; must be between 1 and ``n_items`` (fewer come back when a user
            has fewer unseen items).
        filter_already_liked_items : bool
            Leave out the items in the user's row of ``user_items``.
        filter_items : array of int, optional
            Item rows never recommended (implicit's ``filter_items``).
        recalculate_user : bool
            Score with factors folded in from ``user_items`` (:meth:`fold_in`) instead of
            the stored ones — for users the model has not seen (``userids`` is then only
            checked to be integers, as implicit does).

        Returns
        -------
        ids, scores : ndarray, shape (len(userids), N) — or (N,) for a scalar ``userids``
            Item rows (int64) and scores (float32). Filtered slots that cannot be filled are
            ``-1`` with score ``-inf``.
        """
        self._check_fitted()
        limit = np.iinfo(np.int64).max if recalculate_user else self.n_users
        rows, scalar = _rows_argument(userids, limit, "userids")
        N = _check_n(N, self.n_items)  # noqa: N806
        liked = None
        if filter_already_liked_items or recalculate_user:
            if user_items is None:
                raise InputError(
                    "user_items: required with filter_already_liked_items or recalculate_user"
                )
            liked = sp.csr_matrix(user_items)
            if liked.shape != (len(rows), self.n_items):
                raise InputError(
                    f"user_items: expected shape ({len(rows)}, {self.n_items}) — one row per "
                    f"requested user, in the order of userids, and one column per item — got "
                    f"{liked.shape}"
                )
        if recalculate_user:
            from cfcore.metrics import factor_scorer

            score = factor_scorer(self.fold_in(liked), self.item_factors_, self.item_bias_)
            at = np.arange(len(rows))
        else:
            score, at = self.scorer(), rows
        banned = None
        if filter_items is not None:
            banned = _rows_argument(filter_items, self.n_items, "filter_items")[0]
        ids = np.empty((len(rows), N), dtype=np.int64)
        vals = np.empty((len(rows), N), dtype=np.float32)
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            s = score(at[start:stop]).astype(np.float32, copy=True)
            if banned is not None:
                s[:, banned] = -np.inf
            if filter_already_liked_items:
                block = liked[start:stop].tocoo()
                s[block.row, block.col] = -np.inf
            ids[start:stop], vals[start:stop] = _top(s, N)
        if scalar:
            return ids[0], vals[0]
        return ids, vals

    def similar_items(
        self,
        itemids: Any,
        N: int = 10,  # noqa: N803 - implicit's name
        *,
        filter_items: Any = None,
        include_self: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` most similar items by cosine of the item factors, best first.

        ``cos(i, j) = y_i · y_j / (‖y_i‖ ‖y_j‖)`` (Fang §4.2: neighbours in latent space;
        a zero vector has cosine 0 with everything). As in implicit, an item is its own
        nearest neighbour and comes first (cosine 1; also when other items tie with it)
        unless ``include_self=False``; ``cfcore similar`` keeps the same default and
        ``--exclude-self``.

        Parameters
        ----------
        itemids : int or array of int
            Item rows (see :meth:`item_rows` for raw ids).
        N : int
            Neighbours per item, between 1 and ``n_items``.
        filter_items : array of int, optional
            Item rows never returned (implicit's ``filter_items``).
        include_self : bool, default True
            Whether each item may be among its own neighbours.

        Returns
        -------
        ids, scores : ndarray, shape (len(itemids), N) — or (N,) for a scalar ``itemids``
            Item rows (int64) and cosines (float32); slots that cannot be filled (too many
            items filtered) are ``-1`` with score ``-inf``.
        """
        self._check_fitted()
        rows, scalar = _rows_argument(itemids, self.n_items, "itemids")
        N = _check_n(N, self.n_items)  # noqa: N806
        norms = np.linalg.norm(self.item_factors_, axis=1)
        unit = self.item_factors_ / np.where(norms > 0, norms, 1.0)[:, None]
        unit = unit.astype(np.float32)
        sims = unit[rows] @ unit.T
        at = np.arange(len(rows))
        own = sims[at, rows].copy()  # 1 (0 for an all-zero vector)
        sims[at, rows] = -np.inf  # the others first; the item itself is put in front below
        if filter_items is not None:
            banned = _rows_argument(filter_items, self.n_items, "filter_items")[0]
            sims[:, banned] = -np.inf
            own[np.isin(rows, banned)] = -np.inf
        ids, vals = _top(sims, N)
        if include_self:  # the item itself, then its N - 1 nearest others
            ids = np.concatenate([np.where(np.isfinite(own), rows, -1)[:, None], ids], axis=1)
            vals = np.concatenate([own[:, None], vals], axis=1)
            # a filtered item itself leaves its slot to the next neighbour
            order = np.argsort(ids < 0, axis=1, kind="stable")[:, :N]
            ids = np.take_along_axis(ids, order, axis=1)
            vals = np.take_along_axis(vals, order, axis=1)
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

    def _artifact_meta(self) -> dict[str, Any]:
        """Hook for subclasses: more header entries (JSON-serialisable)."""
        return {}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` (``.npz``, kind ``"factor-model"``, atomically).

        Arrays ``user_factors``, ``item_factors`` (float32), ``user_ids``, ``item_ids`` (raw
        ids in row order), optional ``user_bias``/``item_bias``; header ``params`` (the
        constructor parameters), ``history`` and ``model`` (the class name), plus what the
        class adds (see the module docstring).
        """
        self._check_fitted()
        meta = {
            "model": type(self).__name__,
            "params": self.get_params(),
            "history": getattr(self, "history_", []),
            **self._artifact_meta(),
        }
        return save_artifact(path, ARTIFACT_KIND, self._artifact_arrays(), meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FactorModel:
        """Read a model written by :meth:`save`, as an instance of the class that wrote it.

        ``FactorModel.load`` (or :func:`load_model`) reads any factor model; on a subclass
        (``Factorizer.load``) the file must hold that class (or one without a class name).

        Raises
        ------
        ModelFormatError
            Not a collabfeat factor-model file; its arrays are missing, inconsistent or not
            finite; or it holds another class than ``cls``.
        """
        arrays, header = load_artifact(path, ARTIFACT_KIND)
        return cls.from_artifact(path, arrays, header)

    @classmethod
    def from_artifact(
        cls, path: str | os.PathLike[str], arrays: dict[str, np.ndarray], header: dict[str, Any]
    ) -> FactorModel:
        """The model in an artifact already read by :func:`cfcore.io.load_artifact` (kind
        ``"factor-model"``); :meth:`load` without the reading. ``path`` names it in errors."""
        name = header.get("model")
        written_by = _model_class(name)
        if written_by is FactorModel or written_by is None:
            written_by = cls  # no (known) class: what the caller asked for
        elif not issubclass(written_by, cls):
            raise ModelFormatError(f"{path}: holds a {name}, not a {cls.__name__}")
        require_keys(path, arrays, ["user_factors", "item_factors", "user_ids", "item_ids"])
        uf, itf = arrays["user_factors"], arrays["item_factors"]
        if uf.ndim != 2 or itf.ndim != 2 or uf.shape[1] != itf.shape[1]:
            raise ModelFormatError(
                f"{path}: factor shapes do not match: users {uf.shape}, items {itf.shape}"
            )
        tables: dict[str, np.ndarray | None] = {"user_factors": uf, "item_factors": itf}
        for key, n in (("user_bias", len(uf)), ("item_bias", len(itf))):
            bias = arrays.get(key)
            if bias is not None and bias.shape != (n,):
                raise ModelFormatError(f"{path}: {key} has shape {bias.shape}, expected ({n},)")
            tables[key] = bias
        for key, value in tables.items():
            if value is None:
                continue
            if value.dtype.kind not in "fiu" or not np.all(np.isfinite(value)):
                raise ModelFormatError(f"{path}: {key} contains NaN or inf (a diverged fit?)")
            tables[key] = np.ascontiguousarray(value, dtype=np.float32)
        try:
            user_ids = as_ids(arrays["user_ids"], len(uf), "user_ids")
            item_ids = as_ids(arrays["item_ids"], len(itf), "item_ids")
        except InputError as exc:
            raise ModelFormatError(f"{path}: {exc}") from None
        params = header.get("params", {})
        renamed = getattr(written_by, "_renamed_params", {})
        params = {renamed.get(k, k): v for k, v in params.items()}
        valid = set(written_by._param_names())
        model = written_by(**{k: v for k, v in params.items() if k in valid})
        model.user_factors_, model.item_factors_ = tables["user_factors"], tables["item_factors"]
        model.user_bias_, model.item_bias_ = tables["user_bias"], tables["item_bias"]
        model.user_ids_, model.item_ids_ = user_ids, item_ids
        model.history_ = list(header.get("history", []))
        model._load_extra(arrays, header)
        return model

    def _load_extra(self, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        """Hook for subclasses that store more than the shared arrays."""


def _model_class(name: Any) -> type[FactorModel] | None:
    """The class a file names (importing the library's own models on demand), or None."""
    if not isinstance(name, str):
        return None
    if name not in _CLASSES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    return _CLASSES.get(name, FactorModel if name == "FactorModel" else None)


def load_model(path: str | os.PathLike[str]) -> FactorModel:
    """Read any factor-model file, as the class that wrote it (``FactorModel.load``)."""
    return FactorModel.load(path)
