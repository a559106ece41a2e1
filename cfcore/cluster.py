"""Pseudo-classes: k-means of item factors with faiss (Fang et al. 2015, §2.2, eq. 4).

The class of item *i* is the cluster of its latent factor y_i. Fang et al. cluster the item
factors into K ∈ {200, 500, 1000, 2000, 3000, 5000} clusters (2000 worked best) and train a
K-way softmax CNN on the result; :class:`PseudoLabels` is that contract between ``cfcore`` and
``cfvision`` (artifact kind ``"pseudo-labels"``, plus an ``item_id,label`` CSV beside it).

Spherical k-means is the default: the factors are L2-normalised and the centroids are
re-normalised after every update, so items are grouped by cosine similarity — the same
similarity used for latent-space neighbours (§4.2). Optional PCA whitening
(``faiss.PCAMatrix`` with eigen-power −½) equalises the factor dimensions first.

faiss traps handled here:

* ``max_points_per_centroid`` (faiss default 256) silently subsamples the training set to
  K × 256 points. We set it to ⌈n / K⌉ so every item is used, unless the caller asks for
  subsampling explicitly.
* faiss prints "please provide at least 39 × K training points" to stderr and carries on.
  We check first and raise a :class:`ClusterWarning` that suggests a K.
* Empty clusters: faiss splits large clusters to refill empty ones during training, but the
  final assignment can still leave clusters empty; they are counted and reported.
* Cluster ids are an arbitrary permutation between runs; labels are renumbered in the order in
  which clusters first occur in item order, so identical partitions get identical labels.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError, ModelFormatError
from cfcore.io import (
    SIDE_FILES_KEY,
    atomic_write_text,
    load_artifact,
    require_keys,
    save_artifact,
)
from cfcore.vectors import ItemVectors, as_item_vectors, check_vectors, l2_normalize

ARTIFACT_KIND = "pseudo-labels"
#: faiss's ``min_points_per_centroid``: below this many points per centroid it warns.
MIN_POINTS_PER_CENTROID = 39


class ClusterWarning(UserWarning):
    """K is too large for the data, or some clusters came out empty."""


#: below this many multiply-adds, ``threads=0`` runs faiss on one thread: OpenMP's barriers
#: cost more than the work (measured: 320 × 8 k-means took 0.5 s on 2 busy cores, 0.6 ms on 1)
SMALL_WORK = 50_000_000


@contextlib.contextmanager
def faiss_threads(threads: int, work: float | None = None) -> Iterator[None]:
    """Run faiss with ``threads`` OpenMP threads, then restore the previous setting.

    ``threads=0`` keeps faiss's default (all cores), except that a small job (``work``, the
    number of multiply-adds, below :data:`SMALL_WORK`) runs on one thread; more threads than
    cores are clamped with a :class:`cfcore.threads.ThreadsWarning`
    (:func:`cfcore.threads.resolve_threads`).
    """
    import faiss

    from cfcore.threads import resolve_threads

    if threads != 0:
        threads = resolve_threads(threads, stacklevel=5)
    before = faiss.omp_get_max_threads()
    if threads == 0 and work is not None and work < SMALL_WORK:
        threads = 1
    if threads:
        faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def suggest_k(n_items: int) -> int:
    """The largest K that gives faiss at least 39 points per centroid (at least 1)."""
    return max(1, n_items // MIN_POINTS_PER_CENTROID)


# --------------------------------------------------------------------------- statistics
def gini(sizes: np.ndarray) -> float:
    """Gini coefficient of cluster sizes: 0 = perfectly balanced, → 1 = one cluster has all.

    G = Σ_i Σ_j |s_i − s_j| / (2 K² · mean(s)), computed from the sorted sizes as
    G = (2 Σ_i i·s_(i)) / (K Σ s) − (K + 1) / K with i = 1..K.
    """
    s = np.sort(np.asarray(sizes, dtype=np.float64))
    k, total = len(s), s.sum()
    if k == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, k + 1, dtype=np.float64)
    return float(2.0 * np.dot(ranks, s) / (k * total) - (k + 1.0) / k)


def normalized_mutual_info(labels_a: Any, labels_b: Any) -> float:
    """Normalised mutual information between two labelings of the same items.

    NMI(A, B) = I(A; B) / ((H(A) + H(B)) / 2) (arithmetic normalisation, as
    ``sklearn.metrics.normalized_mutual_info_score``), with
    I(A; B) = Σ_ab p(a, b) log(p(a, b) / (p(a) p(b))) and H the entropy. It is 1 for the same
    partition under any renumbering and ≈ 0 for independent ones. Two one-cluster labelings
    give 1.

    Parameters
    ----------
    labels_a, labels_b : array-like of int or str, shape (n,)
    """
    a = np.asarray(labels_a)
    b = np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise InputError(
            f"labels: expected two 1-D arrays of equal length, got {a.shape} and {b.shape}"
        )
    n = len(a)
    if n == 0:
        raise InputError("labels: empty")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = int(ai.max()) + 1, int(bi.max()) + 1
    if na == nb == 1:
        return 1.0
    pair, n_ab = np.unique(ai.astype(np.int64) * nb + bi, return_counts=True)
    n_a = np.bincount(ai, minlength=na).astype(np.float64)
    n_b = np.bincount(bi, minlength=nb).astype(np.float64)
    n_ab = n_ab.astype(np.float64)
    mi = float(np.sum(n_ab / n * (np.log(n_ab * n) - np.log(n_a[pair // nb] * n_b[pair % nb]))))
    h_a = float(-np.sum(n_a / n * np.log(n_a / n)))
    h_b = float(-np.sum(n_b / n * np.log(n_b / n)))
    denom = (h_a + h_b) / 2.0
    if denom <= 0:
        return 1.0
    return float(min(1.0, max(0.0, mi / denom)))


def imbalance_stats(sizes: np.ndarray) -> dict[str, float | int]:
    """Largest / smallest / empty cluster counts, Gini and faiss's imbalance factor.

    The imbalance factor is K Σ s_k² / n² (1 = perfectly balanced).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    nonempty = sizes[sizes > 0]
    return {
        "k": len(sizes),
        "items": n,
        "largest": int(sizes.max()) if len(sizes) else 0,
        "smallest": int(sizes.min()) if len(sizes) else 0,
        "smallest_nonempty": int(nonempty.min()) if len(nonempty) else 0,
        "median": float(np.median(sizes)) if len(sizes) else 0.0,
        "empty": int((sizes == 0).sum()),
        "gini": round(gini(sizes), 6),
        "imbalance_factor": round(
            float(len(sizes) * np.sum(sizes.astype(np.float64) ** 2) / n**2), 6
        )
        if n
        else 0.0,
    }


# --------------------------------------------------------------------------- result
@dataclass
class PseudoLabels:
    """Items clustered into K pseudo-classes.

    Attributes
    ----------
    item_ids : ndarray, shape (n,)
        Raw item ids in the order of the input vectors.
    labels : ndarray of int64, shape (n,)
        Pseudo-class of each item, ``0..K-1``; numbered in order of first occurrence, so
        empty clusters (if any) have the highest labels.
    centroids : ndarray of float32, shape (K, d')
        Cluster centres in the space that was clustered (after whitening and normalisation;
        d' is the PCA output dimension when whitening was used).
    sizes : ndarray of int64, shape (K,)
        Items per cluster.
    params : dict
        How they were made: ``k, seed, spherical, niter, nredo, pca, max_points_per_centroid,
        source``, and ``objective``.
    transform : tuple of (A, b) or None
        The PCA whitening ``x ↦ A x + b`` applied before clustering, or ``None``.
    """

    item_ids: np.ndarray
    labels: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    transform: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def k(self) -> int:
        return int(len(self.sizes))

    def __len__(self) -> int:
        return int(len(self.labels))

    def __repr__(self) -> str:
        st = self.imbalance()
        return (
            f"PseudoLabels({len(self)} items → K={self.k}, largest {st['largest']}, "
            f"smallest {st['smallest']}, empty {st['empty']}, Gini {st['gini']:.3f})"
        )

    def imbalance(self) -> dict[str, float | int]:
        """Cluster-size statistics; see :func:`imbalance_stats`."""
        return imbalance_stats(self.sizes)

    def prepare(self, vectors: Any) -> np.ndarray:
        """Map raw vectors into the clustered space (whitening, then L2 if spherical)."""
        x = check_vectors(vectors)
        if self.transform is not None:
            a, b = self.transform
            if x.shape[1] != a.shape[1]:
                raise InputError(f"vectors: expected dimension {a.shape[1]}, got {x.shape[1]}")
            x = np.ascontiguousarray(x @ a.T + b, dtype=np.float32)
        elif x.shape[1] != self.centroids.shape[1]:
            raise InputError(
                f"vectors: expected dimension {self.centroids.shape[1]}, got {x.shape[1]}"
            )
        if self.params.get("spherical", True):
            x = l2_normalize(x)
        return x

    def assign(self, vectors: Any, threads: int = 0) -> np.ndarray:
        """Pseudo-class of new vectors: the nearest centroid (cosine when spherical), int64."""
        import faiss

        x = self.prepare(vectors)
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(np.ascontiguousarray(self.centroids, dtype=np.float32))
        with faiss_threads(threads, work=float(len(x)) * self.k * x.shape[1]):
            _, nearest = index.search(x, 1)
        return nearest[:, 0].astype(np.int64)

    # ----------------------------------------------------------------- persistence
    @staticmethod
    def csv_path(path: str | os.PathLike[str]) -> Path:
        """The ``item_id,label`` CSV :meth:`save` writes beside ``path``: the same stem with
        the suffix ``.csv`` (``labels.npz`` → ``labels.csv``)."""
        return Path(path).with_suffix(".csv")

    def save(self, path: str | os.PathLike[str], csv: bool = True) -> Path:
        """Write the ``"pseudo-labels"`` ``.npz`` and, with ``csv``, ``item_id,label`` beside it.

        The CSV is :meth:`csv_path` (``labels.npz`` → ``labels.csv``); the ``.npz`` header
        lists it under ``side_files``, which is how ``cfcore cluster`` knows that a later run
        may replace it. Both files are written atomically.
        """
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "item_ids": self.item_ids,
            "labels": self.labels.astype(np.int64),
            "centroids": self.centroids.astype(np.float32),
            "sizes": self.sizes.astype(np.int64),
        }
        if self.transform is not None:
            arrays["transform_A"], arrays["transform_b"] = self.transform
        meta = {**self.params, "k": self.k, "imbalance": self.imbalance()}
        if csv:
            meta[SIDE_FILES_KEY] = [self.csv_path(path).name]
        save_artifact(path, ARTIFACT_KIND, arrays, meta)
        if csv:
            self.to_csv(self.csv_path(path))
        return path

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write ``item_id,label`` rows (with that header), atomically."""
        lines = ["item_id,label"]
        lines += [
            f"{i},{lab}"
            for i, lab in zip(self.item_ids.tolist(), self.labels.tolist(), strict=True)
        ]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PseudoLabels:
        """Read a file written by :meth:`save`."""
        arrays, header = load_artifact(path, ARTIFACT_KIND)
        require_keys(path, arrays, ["item_ids", "labels", "centroids", "sizes"])
        labels = arrays["labels"].astype(np.int64)
        sizes = arrays["sizes"].astype(np.int64)
        if len(labels) != len(arrays["item_ids"]) or (len(labels) and labels.max() >= len(sizes)):
            raise ModelFormatError(f"{path}: labels do not match item_ids/sizes")
        transform = None
        if "transform_A" in arrays:
            transform = (arrays["transform_A"], arrays["transform_b"])
        params = {
            k: v
            for k, v in header.items()
            if k not in ("kind", "version", "imbalance", SIDE_FILES_KEY)
        }
        return cls(arrays["item_ids"], labels, arrays["centroids"], sizes, params, transform)


# --------------------------------------------------------------------------- k-means
def _whiten(x: np.ndarray, dim: int | None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """PCA whitening with faiss.PCAMatrix (eigen-power −½): decorrelated, unit-variance axes."""
    import faiss

    n, d = x.shape
    d_out = d if dim is None else int(dim)
    if not 1 <= d_out <= d:
        raise InputError(f"pca_dim: must be between 1 and the vector dimension {d}, got {dim}")
    if n < d_out:
        raise InputError(f"pca: need at least {d_out} items to whiten {d_out} dimensions, got {n}")
    pca = faiss.PCAMatrix(d, d_out, -0.5, False)
    pca.train(x)
    a = faiss.vector_to_array(pca.A).reshape(d_out, d).astype(np.float32)
    b = faiss.vector_to_array(pca.b).astype(np.float32)
    y = pca.apply(x)
    if not np.all(np.isfinite(y)):
        raise InputError(
            "pca: whitening produced NaN/inf (rank-deficient vectors?); "
            "use a smaller pca_dim or no whitening"
        )
    return np.ascontiguousarray(y, dtype=np.float32), (a, b)


def _canonical(labels: np.ndarray, k: int) -> np.ndarray:
    """Permutation old → new label: clusters numbered by first occurrence, empties last."""
    _, first = np.unique(labels, return_index=True)
    seen = labels[np.sort(first)]
    order = np.concatenate([seen, np.setdiff1d(np.arange(k), seen)])
    perm = np.empty(k, dtype=np.int64)
    perm[order] = np.arange(k)
    return perm


def cluster_items(
    vectors: Any,
    k: int,
    ids: Any = None,
    *,
    spherical: bool = True,
    pca: bool = False,
    pca_dim: int | None = None,
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    threads: int = 0,
    max_points_per_centroid: int | None = None,
    verbose: bool = False,
) -> PseudoLabels:
    """Cluster item vectors into ``k`` pseudo-classes with faiss k-means (Fang et al. eq. 4).

    min over centroids c and assignment a of Σ_i ‖ŷ_i − c_{a(i)}‖², where ŷ_i is the item's
    factor, optionally PCA-whitened, and (``spherical``) L2-normalised with unit-norm
    centroids — i.e. maximising Σ_i cos(y_i, c_{a(i)}).

    Parameters
    ----------
    vectors : ndarray (n, d), ItemVectors, path, or a fitted model with ``item_factors_``
        Item factors (or any item vectors). A path may be a factor-model or item-vectors file.
    k : int
        Number of pseudo-classes. Fang et al. tried 200…5000 on 1.9M items (2000 best);
        faiss wants ≥ 39 items per centroid.
    ids : array-like, optional
        Raw item ids (taken from the file/model when not given; default ``0..n-1``).
    spherical : bool
        Cosine k-means (default). ``False`` clusters the raw vectors in Euclidean space.
    pca, pca_dim : bool, int
        Whiten with PCA first (to ``pca_dim`` dimensions; default: all).
    niter, nredo : int
        Lloyd iterations per run and number of runs (the best objective is kept).
    seed : int
        Seeds faiss's random choice of initial centroids (K items drawn uniformly, as
        faiss's default initialisation; the paper does not specify one) and, when
        ``max_points_per_centroid`` forces it, its subsample.
    threads : int
        OpenMP threads for faiss (0 = faiss's default, all cores).
    max_points_per_centroid : int, optional
        ``None`` (default) uses every item. A number lets faiss train on a uniform random
        subsample of K × that many items (then every item is still assigned).
    verbose : bool
        Let faiss print its per-iteration log.

    Returns
    -------
    PseudoLabels

    Raises
    ------
    InputError
        ``k`` < 1 or larger than the number of items, NaN/inf or all-zero vectors, bad params.

    Warns
    -----
    ClusterWarning
        Fewer than 39 items per centroid (with a suggested K), or empty clusters.
    """
    import faiss

    iv: ItemVectors = as_item_vectors(vectors, ids)
    x, n = iv.vectors, len(iv)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputError(f"k: expected an integer number of clusters, got {k!r}")
    k = int(k)
    if k < 1:
        raise InputError(f"k: must be >= 1, got {k}")
    if k > n:
        raise InputError(
            f"k: {k} clusters for only {n} items; k must not exceed the number of items "
            f"(suggested k <= {suggest_k(n)}, at least {MIN_POINTS_PER_CENTROID} items per cluster)"
        )
    for name, value in (("niter", niter), ("nredo", nredo)):
        if value < 1:
            raise InputError(f"{name}: must be >= 1, got {value}")
    if max_points_per_centroid is not None and max_points_per_centroid < 1:
        raise InputError(f"max_points_per_centroid: must be >= 1, got {max_points_per_centroid}")
    if k > suggest_k(n):  # i.e. n < 39 k, faiss's own threshold (k = 1 is always fine)
        warnings.warn(
            f"k={k} leaves {n / k:.1f} items per cluster on average, fewer than the "
            f"{MIN_POINTS_PER_CENTROID} faiss needs for stable centroids; suggested k <= "
            f"{suggest_k(n)} for {n} items",
            ClusterWarning,
            stacklevel=2,
        )

    transform = None
    if pca:
        x, transform = _whiten(x, pca_dim)
    if spherical:
        x = l2_normalize(x, iv.ids, "vectors")

    mppc = math.ceil(n / k) if max_points_per_centroid is None else int(max_points_per_centroid)
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=int(niter),
        nredo=int(nredo),
        seed=int(seed) & 0x7FFFFFFF,
        spherical=bool(spherical),
        max_points_per_centroid=mppc,
        min_points_per_centroid=1,
        verbose=bool(verbose),
    )
    with faiss_threads(threads, work=float(min(n, k * mppc)) * k * x.shape[1] * niter * nredo):
        objective = float(km.train(x))
        _, nearest = km.index.search(x, 1)
    raw = nearest[:, 0].astype(np.int64)
    perm = _canonical(raw, k)
    labels = perm[raw]
    centroids = np.empty_like(km.centroids)
    centroids[perm] = km.centroids
    sizes = np.bincount(labels, minlength=k).astype(np.int64)
    empty = int((sizes == 0).sum())
    if empty:
        warnings.warn(
            f"{empty} of {k} clusters are empty after the final assignment (labels "
            f"{k - empty}..{k - 1}); consider a smaller k (suggested k <= {suggest_k(n)})",
            ClusterWarning,
            stacklevel=2,
        )
    params = {
        "k": k,
        "seed": int(seed),
        "spherical": bool(spherical),
        "pca": bool(pca),
        "pca_dim": None if not pca else int(x.shape[1]),
        "niter": int(niter),
        "nredo": int(nredo),
        "max_points_per_centroid": max_points_per_centroid,
        "objective": objective,
        "source": str(iv.meta.get("source", "")),
    }
    return PseudoLabels(iv.ids, labels, centroids.astype(np.float32), sizes, params, transform)


def stability(
    vectors: Any,
    k: int,
    seeds: tuple[int, int] = (0, 1),
    ids: Any = None,
    **kwargs: Any,
) -> float:
    """NMI between the pseudo-classes of two k-means runs that differ only in the seed.

    1.0 means the partition does not depend on the initialisation; low values mean the
    pseudo-classes are mostly an artefact of it (too large a K, or no cluster structure).

    Parameters
    ----------
    vectors, k, ids, **kwargs
        As for :func:`cluster_items`.
    seeds : pair of int
        The two seeds.
    """
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise InputError(f"seeds: expected two different seeds, got {seeds!r}")
    iv = as_item_vectors(vectors, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClusterWarning)
        a = cluster_items(iv, k, seed=seeds[0], **kwargs)
        b = cluster_items(iv, k, seed=seeds[1], **kwargs)
    return normalized_mutual_info(a.labels, b.labels)
