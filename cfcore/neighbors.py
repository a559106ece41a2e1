"""Cosine k-nearest neighbours over item vectors with faiss (Fang et al. 2015, §4.2).

Latent-space neighbours are the items whose factors have the highest cosine similarity —
"no pixels involved". The same index serves CNN features later (any ``(ids, vectors)``).

Vectors are L2-normalised, so the inner product *is* the cosine. Index types:

* ``"exact"`` (default) — ``faiss.IndexFlatIP``, brute force, exact.
* ``"ivf"`` — ``faiss.IndexIVFFlat`` with an inner-product coarse quantiser (``nlist`` lists,
  ``nprobe`` visited per query); approximate, for millions of items.
* ``"hnsw"`` — ``faiss.IndexHNSWFlat`` (graph, ``M`` links, ``ef_search``); approximate.

An approximate index can return fewer than k hits for a query (an IVF probe that visits
small lists); those queries are answered again exactly, so every row is complete.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cfcore.cluster import faiss_threads
from cfcore.errors import InputError, ModelFormatError
from cfcore.ids import as_ids, id_positions
from cfcore.io import load_artifact, require_keys, save_artifact
from cfcore.vectors import ItemVectors, as_item_vectors, check_vectors, l2_normalize

ARTIFACT_KIND = "neighbors"
#: queries per faiss search call (bounds the temporary result and drives the progress bar)
_QUERY_BATCH = 65_536
METHODS = ("exact", "ivf", "hnsw")


@dataclass
class Neighbors:
    """Ranked neighbours of a set of queries.

    Attributes
    ----------
    query_ids : ndarray, shape (Q,)
        Raw ids of the queries.
    neighbor_ids : ndarray, shape (Q, k)
        Raw ids of the neighbours, best first.
    scores : ndarray of float32, shape (Q, k)
        Cosine similarities, non-increasing along each row.
    meta : dict
        How they were found (method, k, source file...).
    positions : ndarray of int64, shape (Q, k), optional
        Rows of the neighbours in the index they came from (not saved).
    """

    query_ids: np.ndarray
    neighbor_ids: np.ndarray
    scores: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    positions: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.neighbor_ids = np.asarray(self.neighbor_ids)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.query_ids = np.asarray(self.query_ids)
        if self.neighbor_ids.ndim != 2 or self.neighbor_ids.shape != self.scores.shape:
            raise InputError(
                f"neighbors: neighbor_ids {self.neighbor_ids.shape} and scores "
                f"{self.scores.shape} must be matching (queries × k) arrays"
            )
        if self.query_ids.shape != (self.neighbor_ids.shape[0],):
            raise InputError(
                f"neighbors: {len(self.query_ids)} query ids for {self.neighbor_ids.shape[0]} rows"
            )

    @property
    def k(self) -> int:
        return int(self.neighbor_ids.shape[1])

    def __len__(self) -> int:
        return int(len(self.query_ids))

    def __repr__(self) -> str:
        return f"Neighbors({len(self)} queries × k={self.k}, method={self.meta.get('method', '?')})"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a ``"neighbors"`` artifact (``query_ids``, ``neighbor_ids``, ``scores``)."""
        meta = {k: v for k, v in self.meta.items() if k not in ("kind", "version")}
        return save_artifact(
            path,
            ARTIFACT_KIND,
            {"query_ids": self.query_ids, "neighbor_ids": self.neighbor_ids, "scores": self.scores},
            meta,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Neighbors:
        """Read a file written by :meth:`save`."""
        arrays, header = load_artifact(path, ARTIFACT_KIND)
        require_keys(path, arrays, ["query_ids", "neighbor_ids", "scores"])
        try:
            return cls(
                arrays["query_ids"],
                arrays["neighbor_ids"],
                arrays["scores"],
                {k: v for k, v in header.items() if k not in ("kind", "version")},
            )
        except InputError as exc:
            raise ModelFormatError(f"{path}: {exc}") from None


class NeighborIndex:
    """Cosine k-NN index over ``(ids, vectors)``.

    Parameters
    ----------
    vectors : ndarray (n, d), ItemVectors, path, or a fitted model with ``item_factors_``
        The items to search among. A path may be an item-vectors or factor-model file.
    ids : array-like, optional
        Raw item ids (default: from the file/model, else ``0..n-1``).
    method : {"exact", "ivf", "hnsw"}
        Index type (see the module docstring). ``"flat"`` is accepted for ``"exact"``.
    nlist : int, optional
        IVF lists (default ≈ 4√n, at most n / 39 so each list trains on enough points).
    nprobe : int, optional
        IVF lists visited per query (default max(8, nlist // 8), at most nlist).
    hnsw_m, ef_search, ef_construction : int
        HNSW graph degree and search / construction breadth.
    threads : int
        faiss OpenMP threads (0 = default, all cores).
    seed : int
        Seed of IVF training's k-means (its initial centroids are drawn at random).

    Examples
    --------
    >>> index = NeighborIndex("model.npz")                 # doctest: +SKIP
    >>> nn = index.search(["50", "172"], k=10)             # doctest: +SKIP
    >>> nn.neighbor_ids[0], nn.scores[0]                   # doctest: +SKIP
    """

    def __init__(
        self,
        vectors: Any,
        ids: Any = None,
        *,
        method: str = "exact",
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 200,
        threads: int = 0,
        seed: int = 0,
    ) -> None:
        import faiss

        method = "exact" if method == "flat" else method
        if method not in METHODS:
            raise InputError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
        self.items: ItemVectors = as_item_vectors(vectors, ids)
        self.method = method
        self.threads = int(threads)
        self._unit = l2_normalize(self.items.vectors, self.items.ids, "vectors")
        n, d = self._unit.shape
        with faiss_threads(self.threads, work=float(n) * d * (1 if method == "exact" else 1000)):
            if method == "exact":
                index = faiss.IndexFlatIP(d)
            elif method == "hnsw":
                if hnsw_m < 2:
                    raise InputError(f"hnsw_m: must be >= 2, got {hnsw_m}")
                index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = int(ef_construction)
                index.hnsw.efSearch = int(ef_search)
            else:
                if nlist is None:
                    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
                if not 1 <= nlist <= n:
                    raise InputError(
                        f"nlist: must be between 1 and the number of items {n}, got {nlist}"
                    )
                quantizer = faiss.IndexFlatIP(d)
                index = faiss.IndexIVFFlat(quantizer, d, int(nlist), faiss.METRIC_INNER_PRODUCT)
                index.cp.seed = int(seed) & 0x7FFFFFFF
                index.cp.min_points_per_centroid = 1
                index.cp.max_points_per_centroid = max(256, math.ceil(n / nlist))
                index.train(self._unit)
                index.nprobe = int(nprobe) if nprobe else min(nlist, max(8, nlist // 8))
                self._quantizer = quantizer  # keep the quantiser alive as long as the index
            index.add(self._unit)
        self.index = index
        if method == "exact":  # share faiss's copy of the unit vectors instead of keeping two
            self._unit = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"NeighborIndex({len(self)} items × {self.items.dim} dims, method={self.method!r})"

    @property
    def ids(self) -> np.ndarray:
        return self.items.ids

    def _lookup(self, ids: Any, strict: bool) -> np.ndarray:
        """Rows of raw ids; −1 if unknown and not ``strict``, else :class:`InputError`."""
        unknown = "queries: unknown item id" if strict else None
        return id_positions(self.items.ids, ids, unknown=unknown)

    def positions(self, ids: Any) -> np.ndarray:
        """Rows of the given raw ids; unknown ids raise :class:`InputError`."""
        return self._lookup(ids, strict=True)

    def search(
        self,
        queries: Any = None,
        k: int = 10,
        exclude_self: bool = True,
        query_ids: Any = None,
        progress: bool = True,
    ) -> Neighbors:
        """The ``k`` most cosine-similar indexed items of each query.

        score(q, i) = ⟨q / ‖q‖, y_i / ‖y_i‖⟩, ranked in decreasing order.

        Parameters
        ----------
        queries : None, 1-D array-like of ids, 2-D array of vectors, or ItemVectors
            ``None``: every indexed item queries the others. 1-D: raw ids of indexed items.
            2-D: query vectors of the same dimension (e.g. CNN features of test items querying
            train items, Fang §4.3).
        k : int
            Neighbours per query.
        exclude_self : bool
            Drop a hit whose id equals the query's id (for id queries, and for vector queries
            given ``query_ids``), so an item is not its own nearest neighbour.
        query_ids : array-like, optional
            Ids of vector queries (default ``0..Q-1``; taken from an ItemVectors).
        progress : bool
            tqdm bar over query batches (shown only when there is more than one batch).

        Returns
        -------
        Neighbors
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k: expected a positive integer, got {k!r}")
        k = int(k)
        self_pos: np.ndarray | None = None
        if queries is None:
            qpos = np.arange(len(self), dtype=np.int64)
            x, qids, self_pos = self._unit, self.items.ids, qpos
        elif isinstance(queries, ItemVectors) or (
            not isinstance(queries, (str, bytes)) and np.ndim(queries) == 2
        ):
            if isinstance(queries, ItemVectors):
                qv, qids = queries.vectors, queries.ids
            else:
                qv = check_vectors(queries, "queries")
                qids = as_ids(query_ids, len(qv), "query_ids")
            if qv.shape[1] != self.items.dim:
                raise InputError(
                    f"queries: dimension {qv.shape[1]} does not match the index's {self.items.dim}"
                )
            x = l2_normalize(qv, qids, "queries")
            if query_ids is not None or isinstance(queries, ItemVectors):
                self_pos = self._lookup(qids, strict=False)
                if (self_pos < 0).all():  # queries are not indexed items: nothing to exclude
                    self_pos = None
        else:
            qpos = self.positions(queries)
            x, qids, self_pos = self._unit[qpos], self.items.ids[qpos], qpos
        if not exclude_self:
            self_pos = None
        available = len(self) - (1 if self_pos is not None else 0)
        if k > available:
            raise InputError(
                f"k: {k} neighbours requested but only {available} items can be returned "
                f"({len(self)} indexed{', minus the query itself' if self_pos is not None else ''})"
            )
        extra = 1 if self_pos is not None else 0
        work = float(len(x)) * len(self) * self.items.dim if self.method == "exact" else None
        scores = np.empty((len(x), k + extra), dtype=np.float32)
        pos = np.empty((len(x), k + extra), dtype=np.int64)
        starts = range(0, len(x), _QUERY_BATCH)
        with faiss_threads(self.threads, work=work):
            for start in tqdm(
                starts, desc="neighbours", unit="batch", disable=not progress or len(starts) < 2
            ):
                stop = min(start + _QUERY_BATCH, len(x))
                scores[start:stop], pos[start:stop] = self.index.search(x[start:stop], k + extra)
            missing = (pos < 0).any(axis=1)
            if missing.any():  # approximate index returned short lists: redo those exactly
                scores[missing], pos[missing] = self._exact(x[missing], k + extra)
        if self_pos is not None:
            pos, scores = _drop_self(pos, scores, self_pos, k)
        pos = pos[:, :k]
        scores = scores[:, :k]
        meta = {
            "method": self.method,
            "k": k,
            "exclude_self": bool(exclude_self),
            "source": str(self.items.meta.get("source", "")),
        }
        return Neighbors(qids, self.items.ids[pos], scores.astype(np.float32), meta, positions=pos)

    def _exact(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        flat = faiss.IndexFlatIP(self._unit.shape[1])
        flat.add(self._unit)
        return flat.search(x, k)


def _drop_self(
    pos: np.ndarray, scores: np.ndarray, self_pos: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own position (wherever it ranks); keep the first k of the rest.

    Duplicate vectors tie with the query, so the query is not always ranked first.
    """
    hit = pos == self_pos[:, None]
    # rows where the query is not among the hits: drop the last column instead
    none = ~hit.any(axis=1)
    hit[none, -1] = True
    keep = ~hit
    # exactly one column dropped per row (a position occurs at most once per row)
    q = pos.shape[0]
    new_pos = pos[keep].reshape(q, -1)[:, :k]
    new_scores = scores[keep].reshape(q, -1)[:, :k]
    return new_pos, new_scores
