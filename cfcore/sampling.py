"""Negative sampling for implicit feedback (Fang et al. 2015, Algorithm 1).

Implicit feedback only says what a user *did* view. Fang et al. turn the missing entries
into negatives by sampling: for each user ``j``, ``n_j = neg_ratio × |positives_j|`` (paper:
2) items the user has not viewed, drawn with probability ∝ ``w(p_i)`` where ``p_i`` is
the item's popularity (number of viewers, eq. 1–2) — "in practice we take the logarithm",
read here as ``w = log(1 + p)``. Those entries then become ``V_ij = 0`` for the factorizer.

>>> from cfcore import load_movielens, sample_negatives
>>> views = load_movielens("ml-100k")
>>> neg = sample_negatives(views.user_items, neg_ratio=2.0, neg_weighting="log-popularity")
>>> neg.to_csr()            # users × items, float32 ones at the sampled negatives
>>> neg.save("negatives.npz")

For resampling every epoch pass ``epoch=e``: each (seed, epoch) pair gives fresh,
reproducible negatives, identical for any number of threads.

Vocabulary (the same in :class:`cfcore.Factorizer` and on the command line): ``neg_ratio``
(``--neg-ratio``) is the number of negatives per positive, ``neg_weighting``
(``--neg-weighting``) the item weight ``w(p_i)``; :func:`check_neg_ratio` and
:func:`check_neg_weighting` are their one validator each. The old names (``ratio``,
``weighting``, ``neg_weight``) still work with a ``DeprecationWarning``.

:class:`SamplingPlan` holds what a draw needs that does not change between epochs (weights,
alias table, per-user counts): :class:`cfcore.Factorizer` builds it once per fit and its SGD
kernel draws each user's negatives from it when it visits the user, so they are never
stored. The kernels live in
:mod:`cfcore._kernels.sampling` (alias-table rejection with an Efraimidis–Spirakis fallback;
see there for the exact distribution and the numerics). Speed, one busy 2-core machine,
MovieLens-1M shape (1M positives → 2M negatives): ~45–70 M samples per CPU-second per
thread, so an epoch's resampling costs a fraction of an SGD epoch over the same entries.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore._kernels.sampling import (
    DEFAULT_SWITCH,
    build_alias,
    negative_counts,
    pack_alias,
    sample_into,
)
from cfcore.errors import InputError, ModelFormatError
from cfcore.ids import as_ids
from cfcore.interactions import column_counts
from cfcore.io import atomic_path, load_artifact, require_keys, save_artifact
from cfcore.threads import numba_threads, resolve_threads

ARTIFACT_KIND = "negatives"
#: The choices of ``neg_weighting`` (``w(p_i) = p_i``, ``log(1 + p_i)``, ``1``).
WEIGHTINGS = ("popularity", "log-popularity", "uniform")


class NegativeShortfallWarning(UserWarning):
    """Some users have fewer candidate negatives than ``ratio × |positives|``."""


@dataclass(eq=False)
class NegativeSample:
    """Sampled negatives: a users × items CSR pattern (no values) plus bookkeeping.

    Attributes
    ----------
    indptr : ndarray of int64, shape (n_users + 1,)
        User ``j``'s negatives are ``indices[indptr[j]:indptr[j+1]]``.
    indices : ndarray of int32
        Item columns, ascending within each user, no duplicates, never a positive.
    shape : tuple of int
        ``(n_users, n_items)`` of the matrix the negatives were drawn for.
    n_short : int
        Users that got fewer negatives than requested (they have too few candidates:
        items of non-zero weight they have not interacted with); they got all of them.
    requested : int
        Total requested, ``Σ_j round(ratio × |positives_j|)``; ``requested - nnz`` is the
        total shortfall.
    weighting, ratio, seed, epoch : provenance (``None`` when unknown).
    user_ids, item_ids : ndarray or None
        Raw ids of the rows and columns (from the :class:`~cfcore.interactions.Interactions`
        the negatives were drawn for; ``None`` for a plain matrix, and in files written
        before ids were stored).
    """

    indptr: np.ndarray
    indices: np.ndarray
    shape: tuple[int, int]
    n_short: int = 0
    requested: int = 0
    weighting: str | None = None
    ratio: float | None = None
    seed: int | None = None
    epoch: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    @property
    def nnz(self) -> int:
        """Number of sampled (user, item) negatives."""
        return int(self.indices.shape[0])

    @property
    def counts(self) -> np.ndarray:
        """Negatives per user (int64, length ``n_users``)."""
        return np.diff(self.indptr)

    def __repr__(self) -> str:
        return (
            f"NegativeSample(shape={self.shape}, nnz={self.nnz}, requested={self.requested}, "
            f"n_short={self.n_short}, weighting={self.weighting!r}, ratio={self.ratio}, "
            f"seed={self.seed}, epoch={self.epoch})"
        )

    def to_csr(self) -> sp.csr_matrix:
        """The negatives as a users × items ``csr_matrix`` of float32 ones (sorted, canonical)."""
        big = max(self.nnz, *self.shape) >= np.iinfo(np.int32).max
        index_dtype = np.int64 if big else np.int32
        csr = sp.csr_matrix(
            (
                np.ones(self.nnz, dtype=np.float32),
                self.indices.astype(index_dtype, copy=False),
                self.indptr.astype(index_dtype, copy=False),
            ),
            shape=self.shape,
        )
        csr.has_sorted_indices = True
        csr.has_canonical_format = True
        return csr

    def to_coo(self) -> tuple[np.ndarray, np.ndarray]:
        """The negatives as parallel ``(users, items)`` arrays (int64, int32), user-major."""
        users = np.repeat(np.arange(self.shape[0], dtype=np.int64), self.counts)
        return users, self.indices

    def to_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The negatives as parallel ``(user_ids, item_ids)`` arrays of raw ids, user-major
        (row and column indices when the sample has no ids)."""
        users, items = self.to_coo()
        if self.user_ids is not None:
            users = self.user_ids[users]
        if self.item_ids is not None:
            items = self.item_ids[items]
        return users, items

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write ``user_id,item_id`` rows of raw ids (:meth:`to_pairs`), with that header,
        atomically; :func:`cfcore.readers.read_interactions` reads the file back."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        users, items = self.to_pairs()
        table = pa.table({"user_id": users, "item_id": items})
        options = pcsv.WriteOptions(include_header=False, quoting_style="needed")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(b"user_id,item_id\n")
            pcsv.write_csv(table, fh, options)
        return Path(path)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``.npz`` artifact of kind ``"negatives"`` atomically (with the raw ids of
        its rows and columns when it has them)."""
        meta = {
            "shape": [int(s) for s in self.shape],
            "n_short": int(self.n_short),
            "requested": int(self.requested),
            "weighting": self.weighting,
            "ratio": self.ratio,
            "seed": self.seed,
            "epoch": self.epoch,
            **self.meta,
        }
        arrays = {"indptr": self.indptr, "indices": self.indices}
        for name in ("user_ids", "item_ids"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        return save_artifact(path, ARTIFACT_KIND, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NegativeSample:
        """Read a ``"negatives"`` artifact written by :meth:`save`.

        Raises
        ------
        ModelFormatError
            Not a negatives file, or its arrays are inconsistent.
        """
        arrays, header = load_artifact(path, ARTIFACT_KIND)
        require_keys(path, arrays, ["indptr", "indices"])
        indptr = arrays["indptr"].astype(np.int64, copy=False)
        indices = arrays["indices"].astype(np.int32, copy=False)
        try:
            n_users, n_items = (int(s) for s in header["shape"])
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(f"{path}: header has no valid 'shape'") from None
        if (
            indptr.ndim != 1
            or indptr.shape[0] != n_users + 1
            or indptr[0] != 0
            or indptr[-1] != indices.shape[0]
            or np.any(np.diff(indptr) < 0)
            or (indices.size and (indices.min() < 0 or indices.max() >= n_items))
        ):
            raise ModelFormatError(f"{path}: indptr/indices do not form a {n_users}×{n_items} CSR")
        ids = {}
        for name, n in (("user_ids", n_users), ("item_ids", n_items)):
            if name in arrays:  # files written before ids were stored have none
                try:
                    ids[name] = as_ids(arrays[name], n, f"{path}: {name}")
                except InputError as exc:
                    raise ModelFormatError(str(exc)) from None
        known = {
            "kind",
            "version",
            "shape",
            "n_short",
            "requested",
            "weighting",
            "ratio",
            "seed",
            "epoch",
        }
        return cls(
            indptr=indptr,
            indices=indices,
            shape=(n_users, n_items),
            n_short=int(header.get("n_short", 0)),
            requested=int(header.get("requested", 0)),
            weighting=header.get("weighting"),
            ratio=header.get("ratio"),
            seed=header.get("seed"),
            epoch=header.get("epoch"),
            meta={k: v for k, v in header.items() if k not in known},
            **ids,
        )


# ---------------------------------------------------------------------------- validation
def _as_positives(user_items: Any) -> sp.csr_matrix:
    """``user_items`` as a canonical CSR (sorted, no duplicates, no explicit zeros)."""
    matrix = getattr(user_items, "user_items", user_items)  # an Interactions
    if not sp.issparse(matrix):
        raise InputError(
            "user_items: expected a scipy.sparse users × items matrix (or an Interactions), "
            f"got {type(user_items).__name__}"
        )
    if matrix.ndim != 2:
        raise InputError(f"user_items: expected a 2-D matrix, got shape {matrix.shape}")
    csr = matrix.tocsr() if matrix.format != "csr" else matrix
    data = csr.data
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InputError("user_items: contains NaN or inf")
    if not csr.has_canonical_format or np.count_nonzero(data) != data.size:
        csr = csr.copy()
        csr.sum_duplicates()
        csr.eliminate_zeros()
    return csr


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if not 0 <= value < 2**63:
        raise InputError(f"{name}: must be in [0, 2**63), got {value}")
    return value


def check_neg_ratio(value: Any, name: str = "neg_ratio") -> float:
    """``neg_ratio`` as a float: finite and > 0, or :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}: expected a positive number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise InputError(f"{name}: must be a finite number > 0, got {value}")
    return value


def check_neg_weighting(value: Any, name: str = "neg_weighting") -> str:
    """``neg_weighting`` in its canonical spelling (one of :data:`WEIGHTINGS`; case and
    ``_``/``-`` do not matter: ``"Log_Popularity"`` is ``"log-popularity"``), or
    :class:`InputError` naming ``name``."""
    canonical = value.strip().lower().replace("_", "-") if isinstance(value, str) else None
    if canonical not in WEIGHTINGS:
        raise InputError(f"{name}: expected one of {', '.join(WEIGHTINGS)}; got {value!r}")
    return canonical


def renamed_arguments(given: dict[str, Any], where: str, renamed: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments ``given`` under an old name, under the current one.

    Each old name in ``renamed`` (old → new) warns once with a ``DeprecationWarning``;
    any other keyword is a ``TypeError``, as Python would raise for ``where(**given)``.
    """
    out: dict[str, Any] = {}
    for old, value in given.items():
        new = renamed.get(old)
        if new is None:
            raise TypeError(f"{where}() got an unexpected keyword argument {old!r}")
        warnings.warn(
            f"{where}: {old!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=3
        )
        out[new] = value
    return out


def item_weights(popularity: np.ndarray, neg_weighting: str = "log-popularity") -> np.ndarray:
    """Sampling weight of every item (float64), Fang eq. 2 up to normalisation.

    Parameters
    ----------
    popularity : ndarray, shape (n_items,)
        ``p_i ≥ 0``, e.g. the number of users who viewed item ``i``.
    neg_weighting : {"popularity", "log-popularity", "uniform"}
        ``w_i = p_i``; ``w_i = log(1 + p_i)`` (Fang: "in practice we take the logarithm");
        ``w_i = 1``. Items with ``w_i = 0`` (popularity 0 under the first two) are never drawn.

    Returns
    -------
    ndarray of float64, shape (n_items,)
    """
    weighting = check_neg_weighting(neg_weighting)
    p = np.asarray(popularity, dtype=np.float64)
    if weighting == "popularity":
        return p.copy()
    if weighting == "log-popularity":
        return np.log1p(p)
    return np.ones_like(p)


def _check_popularity(popularity: Any, n_items: int) -> np.ndarray:
    try:
        p = np.asarray(popularity, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("popularity: expected a numeric array of item popularities") from None
    if p.shape != (n_items,):
        raise InputError(f"popularity: expected shape ({n_items},) (one per item), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise InputError("popularity: contains NaN or inf")
    if np.any(p < 0):
        raise InputError(f"popularity: must be >= 0 (item {int(np.argmin(p))} is {p.min()})")
    return p


def _check_user_index(user_index: Any, n_users: int) -> np.ndarray:
    """The random stream of every row: ``user_index`` checked (int64, >= 0), or ``arange``."""
    if user_index is None:
        return np.arange(n_users, dtype=np.int64)
    index = np.asarray(user_index)
    if index.shape != (n_users,) or (index.size and index.dtype.kind not in "iu"):
        raise InputError(
            f"user_index: expected {n_users} integer user indices (one per row), got "
            f"{index.dtype} of shape {index.shape}"
        )
    if index.size and index.min() < 0:
        raise InputError(f"user_index: must be >= 0, got {int(index.min())}")
    return index.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------- public API


@dataclass(eq=False)
class SamplingPlan:
    """Everything Algorithm 1 needs before it draws: checked positives, the item weights,
    their alias table and each user's number of negatives — the same for every epoch.

    :func:`sample_negatives` draws from it into a CSR; :class:`cfcore.Factorizer` hands its
    tables to the SGD kernel, which draws each user's negatives when it visits the user
    (the same negatives, without storing them). Build with :meth:`of`.

    Attributes
    ----------
    indptr, indices : int64 / int32 arrays, the positives (canonical CSR)
    shape : (n_users, n_items)
    weights : float64 array (n_items), the item weights ``w(p_i)``
    alias_table : uint64 array (n_items), their packed alias table
    out_indptr : int64 array (n_users + 1), prefix sum of the users' negative counts
    streams : int64 array (n_users), each row's random stream (its user's index)
    n_short, requested : users short of candidates; negatives requested in all
    weighting, ratio : the checked ``neg_weighting`` and ``neg_ratio``
    """

    indptr: np.ndarray
    indices: np.ndarray
    shape: tuple[int, int]
    weights: np.ndarray
    alias_table: np.ndarray
    out_indptr: np.ndarray
    streams: np.ndarray
    n_short: int
    requested: int
    weighting: str
    ratio: float

    @property
    def nnz(self) -> int:
        """Number of negatives one draw gives."""
        return int(self.out_indptr[-1])

    @classmethod
    def of(
        cls,
        user_items: sp.spmatrix | Any,
        neg_ratio: float = 2.0,
        neg_weighting: str = "log-popularity",
        popularity: np.ndarray | None = None,
        *,
        user_index: np.ndarray | None = None,
    ) -> SamplingPlan:
        """Check the arguments (as :func:`sample_negatives` documents them) and build the
        tables; :class:`InputError` naming a bad one."""
        positives = _as_positives(user_items)
        ratio = check_neg_ratio(neg_ratio)
        weighting = check_neg_weighting(neg_weighting)
        n_users, n_items = positives.shape
        streams = _check_user_index(user_index, n_users)
        if n_items >= np.iinfo(np.int32).max:
            raise InputError(f"user_items: {n_items} items is more than int32 indices can hold")
        if popularity is None:
            p = column_counts(positives).astype(np.float64)
        else:
            p = _check_popularity(popularity, n_items)
        weights = item_weights(p, weighting)
        del p  # every array not needed by the kernel is freed before the output is allocated
        with np.errstate(over="ignore"):
            overflow = not np.isfinite(weights.sum())
        if overflow:
            raise InputError("popularity: values so large that the item weights overflow float64")
        alias_prob = np.empty(n_items, dtype=np.float64)
        alias_idx = np.empty(n_items, dtype=np.int32)
        build_alias(weights, alias_prob, alias_idx)
        alias_table = np.empty(n_items, dtype=np.uint64)
        pack_alias(alias_prob, alias_idx, alias_table)
        del alias_prob, alias_idx
        indptr = positives.indptr.astype(np.int64, copy=False)
        indices = positives.indices.astype(np.int32, copy=False)
        counts = np.empty(n_users, dtype=np.int64)
        wanted = np.empty(n_users, dtype=np.int64)
        n_short = int(negative_counts(indptr, indices, weights, ratio, counts, wanted))
        out_indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=out_indptr[1:])
        return cls(
            indptr=indptr,
            indices=indices,
            shape=(n_users, n_items),
            weights=weights,
            alias_table=alias_table,
            out_indptr=out_indptr,
            streams=streams,
            n_short=n_short,
            requested=int(wanted.sum()),
            weighting=weighting,
            ratio=ratio,
        )

    def warn_shortfall(self, stacklevel: int = 2) -> None:
        """A :class:`NegativeShortfallWarning` when some users get fewer than requested."""
        if self.n_short:
            warnings.warn(
                f"{self.n_short} of {self.shape[0]} users have fewer candidate negatives than "
                f"neg_ratio × positives ({self.requested - self.nnz} of {self.requested} "
                "negatives missing); they got every candidate",
                NegativeShortfallWarning,
                stacklevel=stacklevel + 1,
            )


def sample_negatives(
    user_items: sp.spmatrix | Any,
    neg_ratio: float = 2.0,
    neg_weighting: str = "log-popularity",
    seed: int = 0,
    threads: int = 0,
    popularity: np.ndarray | None = None,
    *,
    epoch: int = 0,
    warn_short: bool = True,
    user_index: np.ndarray | None = None,
    **deprecated: Any,
) -> NegativeSample:
    """Draw negatives per user as in Fang et al. (2015), Algorithm 1.

    For each user ``j`` with positives ``P_j`` (the stored non-zeros of row ``j``) this draws
    ``n_j = round(neg_ratio · |P_j|)`` (half up) distinct items from the candidates
    ``C_j = {i ∉ P_j : w_i > 0}`` by successive weighted sampling without replacement: the
    first with ``P(i) = w_i / Σ_{k∈C_j} w_k`` (Fang eq. 2), each next one ∝ ``w`` over the
    candidates not drawn yet. Users with ``|C_j| < n_j`` get all of ``C_j`` and are counted
    in ``n_short``.

    Parameters
    ----------
    user_items : scipy.sparse matrix, shape (n_users, n_items), or Interactions
        Positives; any stored non-zero counts, duplicates count once.
    neg_ratio : float, default 2.0
        Negatives per positive (Fang: 2). Must be finite and > 0 (:func:`check_neg_ratio`).
    neg_weighting : {"log-popularity", "popularity", "uniform"}
        ``w_i = log(1 + p_i)`` (Fang's "in practice"), ``w_i = p_i`` (eq. 1–2) or ``w_i = 1``
        (:func:`check_neg_weighting`). Items with weight 0 — popularity 0 under the first
        two — are never drawn.
    seed : int, default 0
        Non-negative. User ``j`` draws from the stream ``(seed, epoch, j)``, so the result
        does not depend on ``threads``.
    threads : int, default 0
        Numba threads (0 = all cores; more than there are is clamped with a
        :class:`cfcore.threads.ThreadsWarning`); the previous setting is restored afterwards.
    popularity : ndarray, shape (n_items,), optional
        ``p_i ≥ 0``; default: the column counts of ``user_items`` (number of viewers).
    epoch : int, default 0
        Non-negative; a fresh reproducible draw per epoch for per-epoch resampling.
    warn_short : bool, default True
        Emit a :class:`NegativeShortfallWarning` when some users got fewer than requested.
    user_index : ndarray of int, shape (n_users,), optional
        Index of each row's user in a larger matrix whose rows are split up (default: the
        row number). Row ``r`` draws from the stream ``(seed, epoch, user_index[r])``, so
        with ``popularity`` (and the columns) of the whole matrix, each part gets exactly
        the negatives the whole matrix would give its users — how the Spark backend
        (:mod:`cfcore.spark.sampling`) samples one partition at a time.
    **deprecated
        ``ratio`` and ``weighting``: the old names of ``neg_ratio`` and ``neg_weighting``.

    Returns
    -------
    NegativeSample
        CSR arrays of the negatives (sorted per user), ``n_short`` and ``requested``; the
        raw ``user_ids``/``item_ids`` when ``user_items`` is an Interactions.

    Raises
    ------
    InputError
        Bad ``user_items``, ``neg_ratio``, ``neg_weighting``, ``seed``, ``epoch``,
        ``threads`` or ``popularity`` (the message names which).
    """
    old = renamed_arguments(
        deprecated, "sample_negatives", {"ratio": "neg_ratio", "weighting": "neg_weighting"}
    )
    plan = SamplingPlan.of(
        user_items,
        old.get("neg_ratio", neg_ratio),
        old.get("neg_weighting", neg_weighting),
        popularity,
        user_index=user_index,
    )
    seed = _check_int(seed, "seed")
    epoch = _check_int(epoch, "epoch")
    threads = resolve_threads(threads)
    out_indices = np.empty(plan.nnz, dtype=np.int32)
    with numba_threads(threads):
        sample_into(
            plan.indptr,
            plan.indices,
            plan.weights,
            plan.alias_table,
            seed,
            epoch,
            plan.streams,
            plan.out_indptr,
            out_indices,
            threads,
            DEFAULT_SWITCH,
        )
    if warn_short:
        plan.warn_shortfall(stacklevel=2)
    sample = NegativeSample(
        indptr=plan.out_indptr,
        indices=out_indices,
        shape=plan.shape,
        n_short=plan.n_short,
        requested=plan.requested,
        weighting=plan.weighting,
        ratio=plan.ratio,
        seed=seed,
        epoch=epoch,
    )
    # An Interactions names its rows and columns: the sample keeps the names.
    sample.user_ids = getattr(user_items, "user_ids", None)
    sample.item_ids = getattr(user_items, "item_ids", None)
    return sample
