"""The contract every collabfeat factor model keeps, stated once (implicit's ``RecommenderBase``).

A factor model scores user ``u`` and item ``i`` as ``s_ui = x_u · y_i + b_i`` (a user bias,
when a model has one, never changes a ranking). Everything below needs only the learned
tables, so it is shared by every model and by a model loaded from disk; this module is the
one reader, writer and scorer of factor-model files (the CLI, :mod:`cfcore.vectors` and
cfvision call it).

implicit's recommender contract (``implicit.recommender_base.RecommenderBase``) holds as
implicit spells it, so code written for ``implicit.bpr.BayesianPersonalizedRanking`` or
``implicit.als.AlternatingLeastSquares`` — ``implicit.evaluation`` included — runs on a
collabfeat model unchanged:

- :meth:`FactorModel.recommend` — top-N items per user (``filter_already_liked_items``,
  ``filter_items``, ``items``, ``recalculate_user`` through the model's fold-in);
- :meth:`FactorModel.similar_items` / :meth:`FactorModel.similar_users` — cosine neighbours
  in the factor space (Fang §4.2), the item (user) itself first, as implicit, unless
  ``include_self=False``; ``recalculate_item`` folds items in from ``item_users``;
- ``user_factors`` / ``item_factors`` — implicit's names of ``user_factors_`` /
  ``item_factors_``;
- :meth:`FactorModel.save` / :meth:`FactorModel.load` — a path or a binary file object,
  fitted or not; instances pickle (``pickle.dumps(model)``) for job queues and
  multiprocessing;
- ids come back int32, scores float32; bad shapes raise :class:`~cfcore.errors.InputError`,
  a ``ValueError``; ``N`` beyond the candidates returns what exists.

What collabfeat adds: :meth:`FactorModel.scorer` / :meth:`FactorModel.predict` (scores for
:mod:`cfcore.metrics`), :meth:`FactorModel.project` (interactions with raw ids moved onto the
model's rows and columns, refusing another dataset's, :data:`cfcore.ids.MIN_OVERLAP`),
:meth:`FactorModel.user_rows` / :meth:`FactorModel.item_rows` (raw ids → rows), the
``history_`` of the fit, and ``get_params`` / ``set_params`` (the scikit-learn contract,
:class:`cfcore.estimator.Estimator`, shared with the tag models).

The file (``save``; :func:`load_model` needs no knowledge of the class that wrote it): arrays
``user_factors`` (n_users, k) and ``item_factors`` (n_items, k) float32, ``user_ids``/
``item_ids`` (raw ids in row order, int64 or str), optional ``user_bias``/``item_bias``, and
whatever the class adds (``Factorizer``: ``item_popularity``); header ``model`` (the class
name), ``params`` (the constructor's parameters as given), ``fitted`` (false: parameters
only), ``history``, and the class's own entries (``Factorizer``: ``effective_params``, what
the fit ran with).

Rows and ids: ``userid``/``itemid`` arguments are *row indices* (0..n-1) as in implicit;
:meth:`FactorModel.user_rows` / :meth:`FactorModel.item_rows` map raw ids (``user_ids_``,
``item_ids_``) to rows and name any unknown id.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore.errors import InputError, ModelFormatError
from cfcore.estimator import Estimator
from cfcore.ids import MIN_OVERLAP, as_ids, id_positions, reindex, require_overlap
from cfcore.io import PathOrFile, load_artifact, require_keys, save_artifact
from cfcore.metrics import factor_scorer, top_n

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


def _candidates(
    rows: Any,
    banned: Any,
    n: int,
    N: Any,
    name: str,
    banned_name: str,  # noqa: N803
) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """implicit's ``items``/``filter_items`` (``users``/``filter_users``), one or the other:
    the sorted unique rows to rank (None: all ``n``), the rows never returned (None: none),
    and ``N`` validated and capped at the candidates there are (implicit returns what exists)."""
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise InputError(f"N must be a positive integer, got {N!r}")
    if rows is not None and banned is not None:
        raise InputError(f"{name} and {banned_name}: give one or the other, not both (as implicit)")
    if rows is not None:
        rows = np.unique(_rows_argument(rows, n, name)[0])
        if not len(rows):
            raise InputError(f"{name}: is empty; leave it out to rank every row")
        return rows, None, min(int(N), len(rows))
    if banned is not None:
        banned = _rows_argument(banned, n, banned_name)[0]
    return None, banned, min(int(N), n)


def _one_row_each(matrix: Any, n_rows: int, n_cols: int, name: str, of: str) -> sp.csr_matrix:
    """``matrix`` as CSR, checked to hold one row per requested ``of`` and ``n_cols`` columns
    (implicit's contract for ``user_items``/``item_users``; :class:`InputError`, a
    ``ValueError``, otherwise)."""
    if matrix is None:
        raise InputError(f"{name}: required here (one row per requested {of})")
    if sp.issparse(matrix) and matrix.ndim == 1:  # a row of a scipy sparse *array*
        matrix = matrix.reshape(1, -1)
    try:
        matrix = sp.csr_matrix(matrix)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected a scipy.sparse matrix ({exc})") from None
    if matrix.shape != (n_rows, n_cols):
        raise InputError(
            f"{name}: expected shape ({n_rows}, {n_cols}) — one row per requested {of}, in "
            f"the order given, and {n_cols} columns — got {matrix.shape}"
        )
    return matrix


def _top(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cfcore.metrics.top_n` as implicit's dtypes (int32 ids, float32 scores), with
    filtered (``-inf``) slots as id ``-1``."""
    ids, vals = top_n(scores, n)
    ids = ids.astype(np.int32)
    ids[~np.isfinite(vals)] = -1
    return ids, vals.astype(np.float32, copy=False)


def _unit_rows(table: np.ndarray) -> np.ndarray:
    """Rows divided by their norm (float32; an all-zero row stays zero: cosine 0)."""
    norms = np.linalg.norm(table, axis=1)
    return (table / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)


def _result(ids: np.ndarray, vals: np.ndarray, scalar: bool) -> tuple[np.ndarray, np.ndarray]:
    """The batch as returned: one user/item's row, without unfilled slots, for a scalar query."""
    if not scalar:
        return ids, vals
    kept = ids[0] >= 0
    return ids[0][kept], vals[0][kept]


def _cosine_neighbours(
    table: np.ndarray,
    query: np.ndarray,
    rows: np.ndarray | None,
    N: int,  # noqa: N803 - implicit's name
    candidates: np.ndarray | None,
    banned: np.ndarray | None,
    include_self: bool,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``N`` rows of ``table`` nearest each ``query`` vector by cosine, best first.

    ``rows``: the queries' own rows in ``table`` (None for vectors not in it). A query's own
    row is put first whatever ties with it (``include_self``) or left out, so the order never
    depends on rounding or on another row with the same direction. ``candidates``: the sorted
    rows that may be returned (None: all); ``banned``: rows never returned. Unfilled slots:
    row ``-1``, score ``-inf``.
    """
    unit = _unit_rows(table)
    pool = np.arange(len(table)) if candidates is None else candidates
    pool_unit = unit[pool]
    ids = np.empty((len(query), N), dtype=np.int32)
    vals = np.empty((len(query), N), dtype=np.float32)
    for start in range(0, len(query), batch_size):
        stop = min(start + batch_size, len(query))
        sims = _unit_rows(query[start:stop]) @ pool_unit.T
        at = np.arange(stop - start)
        own = np.full(stop - start, -np.inf, dtype=np.float32)
        if rows is not None:  # the query's own row: set aside, put in front below
            pos = np.searchsorted(pool, rows[start:stop]).clip(max=len(pool) - 1)
            mine = pool[pos] == rows[start:stop]
            own[mine] = sims[at[mine], pos[mine]]
            sims[at[mine], pos[mine]] = -np.inf
            if banned is not None:
                own[np.isin(rows[start:stop], banned)] = -np.inf
        if banned is not None:
            sims[:, banned] = -np.inf
        top, best = _top(sims, N)
        top = np.where(top >= 0, pool[top], -1).astype(np.int32)
        if rows is not None and include_self:  # itself, then its N - 1 nearest others
            top = np.concatenate(
                [np.where(np.isfinite(own), rows[start:stop], -1)[:, None], top], 1
            )
            best = np.concatenate([own[:, None], best], axis=1)
            order = np.argsort(top < 0, axis=1, kind="stable")[:, :N]  # unfilled slots last
            top = np.take_along_axis(top, order, axis=1).astype(np.int32)
            best = np.take_along_axis(best, order, axis=1)
        ids[start:stop], vals[start:stop] = top, best
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

    Subclasses implement ``fit(user_items, show_progress=True, callback=None)`` (implicit's
    signature) and ``fold_in`` / ``fold_in_items``; their ``__init__`` only stores its
    keyword parameters (scikit-learn contract), which ``get_params`` reads back by name.
    ``FactorModel`` itself is what :func:`load_model` returns for a file whose class is
    unknown here: every method below works on it.

    Attributes
    ----------
    user_factors_, item_factors_ : ndarray of float32
        Also as ``user_factors`` / ``item_factors`` (implicit's names; ``None`` before fit).
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

    user_factors = property(
        lambda self: getattr(self, "user_factors_", None),
        lambda self, value: setattr(self, "user_factors_", value),
        doc="implicit's name of ``user_factors_`` (``None`` before ``fit``).",
    )
    item_factors = property(
        lambda self: getattr(self, "item_factors_", None),
        lambda self, value: setattr(self, "item_factors_", value),
        doc="implicit's name of ``item_factors_`` (``None`` before ``fit``).",
    )

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

    def fold_in_items(self, item_users_rows: sp.spmatrix) -> np.ndarray:
        """Factors for new items from their users (subclasses that can implement it)."""
        raise InputError(f"{type(self).__name__} cannot fold in new items (a Factorizer model can)")

    def recommend(
        self,
        userid: Any,
        user_items: sp.spmatrix | None = None,
        N: int = 10,  # noqa: N803 - implicit's name
        filter_already_liked_items: bool = True,
        filter_items: Any = None,
        recalculate_user: bool = False,
        items: Any = None,
        *,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``N`` items for each user, best first (implicit's ``recommend``).

        Ranks the items by ``s_ui = x_u · y_i + b_i``.

        Parameters
        ----------
        userid : int or array of int
            User rows (see :meth:`user_rows` for raw ids).
        user_items : sparse matrix, shape (len(userid), n_items), optional
            The items each user already has, one row per entry of ``userid`` in the same
            order (implicit's contract: ``user_items[userid]`` of the training matrix; any
            other shape is an :class:`InputError`, a ``ValueError``). Needed when
            ``filter_already_liked_items`` or ``recalculate_user`` is True.
        N : int, default 10
            Number of items (at least 1). More than there are candidates returns them all.
        filter_already_liked_items : bool, default True
            Leave out the items in the user's row of ``user_items``.
        filter_items : array of int, optional
            Item rows never recommended.
        recalculate_user : bool, default False
            Score with factors folded in from ``user_items`` (:meth:`fold_in`) instead of
            the stored ones — for users the model has not seen (``userid`` is then only
            checked to be integers, as implicit does).
        items : array of int, optional
            Rank only these item rows (implicit's ``items``; not with ``filter_items``).

        Returns
        -------
        ids, scores : ndarray, shape (len(userid), N) — or (N,) for a scalar ``userid``
            Item rows (int32) and scores (float32), as implicit. A user with fewer than
            ``N`` items left gets them all: a scalar ``userid`` gets a shorter array, a
            batch's row is padded with id ``-1`` and score ``-inf``.
        """
        self._check_fitted()
        limit = np.iinfo(np.int64).max if recalculate_user else self.n_users
        rows, scalar = _rows_argument(userid, limit, "userid")
        pool, banned, N = _candidates(  # noqa: N806
            items, filter_items, self.n_items, N, "items", "filter_items"
        )
        liked = None
        if filter_already_liked_items or recalculate_user:
            liked = _one_row_each(user_items, len(rows), self.n_items, "user_items", "user")
        if recalculate_user:
            users, at = self.fold_in(liked), np.arange(len(rows))
        else:
            users, at = self.user_factors_, rows
        item_factors, bias = self.item_factors_, self.item_bias_
        if pool is not None:  # rank the chosen items only; ids are mapped back below
            item_factors = item_factors[pool]
            bias = None if bias is None else bias[pool]
            position = np.full(self.n_items, -1, dtype=np.int64)
            position[pool] = np.arange(len(pool))
        score = factor_scorer(users, item_factors, bias)
        ids = np.empty((len(rows), N), dtype=np.int32)
        vals = np.empty((len(rows), N), dtype=np.float32)
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            s = score(at[start:stop]).astype(np.float32, copy=True)
            if banned is not None:
                s[:, banned] = -np.inf
            if filter_already_liked_items:
                block = liked[start:stop].tocoo()
                cols = block.col if pool is None else position[block.col]
                s[block.row[cols >= 0], cols[cols >= 0]] = -np.inf
            ids[start:stop], vals[start:stop] = _top(s, N)
        if pool is not None:
            ids = np.where(ids >= 0, pool[ids], -1).astype(np.int32)
        return _result(ids, vals, scalar)

    def similar_items(
        self,
        itemid: Any,
        N: int = 10,  # noqa: N803 - implicit's name
        recalculate_item: bool = False,
        item_users: sp.spmatrix | None = None,
        filter_items: Any = None,
        items: Any = None,
        *,
        include_self: bool = True,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` most similar items by cosine of the item factors, best first
        (implicit's ``similar_items``).

        ``cos(i, j) = y_i · y_j / (‖y_i‖ ‖y_j‖)`` (Fang §4.2: neighbours in latent space;
        a zero vector has cosine 0 with everything). As in implicit, an item is its own
        nearest neighbour and comes first (cosine 1) — always, also when another item has
        the same direction and ties with it — unless ``include_self=False``; ``cfcore
        similar`` has the same default and ``--exclude-self``.

        Parameters
        ----------
        itemid : int or array of int
            Item rows (see :meth:`item_rows` for raw ids).
        N : int, default 10
            Neighbours per item (at least 1); more than there are candidates returns them all.
        recalculate_item : bool, default False
            Use factors folded in from ``item_users`` (:meth:`fold_in_items`) instead of the
            stored ones — for items the model has not seen (``itemid`` is then only checked
            to be integers, and there is no "itself" to put first).
        item_users : sparse matrix, shape (len(itemid), n_users), optional
            Each item's users, one row per entry of ``itemid``; needed with
            ``recalculate_item``.
        filter_items : array of int, optional
            Item rows never returned.
        items : array of int, optional
            Return only these item rows (not with ``filter_items``).
        include_self : bool, default True
            Whether each item comes first among its own neighbours.

        Returns
        -------
        ids, scores : ndarray, shape (len(itemid), N) — or (N,) for a scalar ``itemid``
            Item rows (int32) and cosines (float32); as in :meth:`recommend`, a scalar
            query gets the neighbours that exist, a batch's unfilled slots are ``-1``/``-inf``.
        """
        self._check_fitted()
        limit = np.iinfo(np.int64).max if recalculate_item else self.n_items
        rows, scalar = _rows_argument(itemid, limit, "itemid")
        pool, banned, N = _candidates(  # noqa: N806
            items, filter_items, self.n_items, N, "items", "filter_items"
        )
        if recalculate_item:
            folded = _one_row_each(item_users, len(rows), self.n_users, "item_users", "item")
            query, own = self.fold_in_items(folded), None
        else:
            query, own = self.item_factors_[rows], rows
        ids, vals = _cosine_neighbours(
            self.item_factors_, query, own, N, pool, banned, include_self, batch_size
        )
        return _result(ids, vals, scalar)

    def similar_users(
        self,
        userid: Any,
        N: int = 10,  # noqa: N803 - implicit's name
        filter_users: Any = None,
        users: Any = None,
        *,
        include_self: bool = True,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` most similar users by cosine of the user factors, best first
        (implicit's ``similar_users``); the user itself first, as :meth:`similar_items`.

        Parameters
        ----------
        userid : int or array of int
            User rows (see :meth:`user_rows` for raw ids).
        N : int, default 10
            Neighbours per user (at least 1); more than there are candidates returns them all.
        filter_users : array of int, optional
            User rows never returned.
        users : array of int, optional
            Return only these user rows (not with ``filter_users``).
        include_self : bool, default True
            Whether each user comes first among its own neighbours.

        Returns
        -------
        ids, scores : ndarray, shape (len(userid), N) — or (N,) for a scalar ``userid``
            User rows (int32) and cosines (float32), as :meth:`similar_items`.
        """
        self._check_fitted()
        rows, scalar = _rows_argument(userid, self.n_users, "userid")
        pool, banned, N = _candidates(  # noqa: N806
            users, filter_users, self.n_users, N, "users", "filter_users"
        )
        ids, vals = _cosine_neighbours(
            self.user_factors_,
            self.user_factors_[rows],
            rows,
            N,
            pool,
            banned,
            include_self,
            batch_size,
        )
        return _result(ids, vals, scalar)

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

    def save(self, file: PathOrFile) -> Path | None:
        """Write the model to ``file``: a path (written atomically, the exact name — no
        ``.npz`` appended) or an open binary file object (implicit's ``save``).

        An ``.npz`` of kind ``"factor-model"``, no pickle: arrays ``user_factors``,
        ``item_factors`` (float32), ``user_ids``, ``item_ids`` (raw ids in row order),
        optional ``user_bias``/``item_bias``; header ``params`` (the constructor parameters),
        ``history``, ``model`` (the class name) and ``fitted``, plus what the class adds (see
        the module docstring). An unfitted model saves its parameters only (``fitted``
        false) and loads back unfitted.

        Returns
        -------
        Path, or None for a file object
        """
        meta = {
            "model": type(self).__name__,
            "params": self.get_params(),
            "fitted": self.is_fitted,
            "history": getattr(self, "history_", []),
            **(self._artifact_meta() if self.is_fitted else {}),
        }
        arrays = self._artifact_arrays() if self.is_fitted else {}
        return save_artifact(file, ARTIFACT_KIND, arrays, meta)

    @classmethod
    def load(cls, file: PathOrFile) -> FactorModel:
        """Read a model written by :meth:`save` (from a path or an open binary file object),
        as an instance of the class that wrote it — fitted or not, as it was saved.

        ``FactorModel.load`` (or :func:`load_model`) reads any factor model; on a subclass
        (``Factorizer.load``) the file must hold that class (or one without a class name).

        Raises
        ------
        ModelFormatError
            Not a collabfeat factor-model file; its arrays are missing, inconsistent or not
            finite; or it holds another class than ``cls``.
        """
        arrays, header = load_artifact(file, ARTIFACT_KIND)
        return cls.from_artifact(getattr(file, "name", file), arrays, header)

    @classmethod
    def from_artifact(
        cls, path: Any, arrays: dict[str, np.ndarray], header: dict[str, Any]
    ) -> FactorModel:
        """The model in an artifact already read by :func:`cfcore.io.load_artifact` (kind
        ``"factor-model"``); :meth:`load` without the reading. ``path`` names it in errors."""
        name = header.get("model")
        written_by = _model_class(name)
        if written_by is FactorModel or written_by is None:
            written_by = cls  # no (known) class: what the caller asked for
        elif not issubclass(written_by, cls):
            raise ModelFormatError(f"{path}: holds a {name}, not a {cls.__name__}")
        params = header.get("params", {})
        renamed = getattr(written_by, "_renamed_params", {})
        params = {renamed.get(k, k): v for k, v in params.items()}
        valid = set(written_by._param_names())
        model = written_by(**{k: v for k, v in params.items() if k in valid})
        if header.get("fitted", True) is False:  # saved before fit: its parameters only
            return model
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


def load_model(file: PathOrFile, *, fitted: bool = True) -> FactorModel:
    """Read any factor-model file, as the class that wrote it (``FactorModel.load``).

    With ``fitted`` (the default; what the CLI and every tool that scores need), a file
    holding a model saved before ``fit`` is a :class:`ModelFormatError` naming the file.
    """
    model = FactorModel.load(file)
    if fitted and not model.is_fitted:
        raise ModelFormatError(
            f"{getattr(file, 'name', file)}: holds an unfitted {type(model).__name__} (saved "
            "before fit): it has no factors to use"
        )
    return model
