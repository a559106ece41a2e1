"""Benchmark datasets by name, split once 80/20 per user and cached for every method.

Names
-----
- ``ml-100k``, ``ml-latest-small``, ``ml-1m`` — MovieLens from the data directory
  (:func:`cfcore.datasets.load_movielens`; every rating is a view);
- ``synth-ml1m`` — MovieLens-1M's shape (6,040 × 3,706, 1 M interactions) from the power-law
  generator (:mod:`bench.synthetic`); ``synth-<N>`` — ``N`` interactions (``1m``, ``16m``,
  ``100m``…) over ``N/80`` users × ``N/160`` items (at least 1,000 × 500);
  ``synth-<N>@<U>x<I>`` — ``N`` interactions over ``U`` users × ``I`` items;
- ``lowrank-ml1m``, ``lowrank-<N>`` — the same shapes with planted low-rank structure (soft
  topic memberships; :data:`bench.synthetic.LOW_RANK`), for ranking quality;
- ``file:<path>`` (or any existing path) — a user file through
  :func:`cfcore.readers.read_interactions` (format guessed from the name).

All methods of a run see the same split: :func:`cfcore.splits.holdout_split` with 20% of each
user's entries held out (seeded). The split is cached as an artifact (kind ``bench-split``)
under ``<results>/cache`` so that the methods' subprocesses load it instead of regenerating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.synthetic import SyntheticSpec, is_synthetic, power_law_interactions, spec_for
from cfcore.errors import InputError
from cfcore.interactions import Interactions
from cfcore.io import load_artifact, save_artifact
from cfcore.splits import holdout_split

MOVIELENS = ("ml-100k", "ml-latest-small", "ml-1m")
TEST_FRACTION = 0.2
CACHE_KIND = "bench-split"


@dataclass
class Split:
    """A train/test split of one dataset (users × items CSR, float32 ones)."""

    name: str
    train: sp.csr_matrix
    test: sp.csr_matrix
    meta: dict

    @property
    def shape(self) -> tuple[int, int]:
        return self.train.shape  # type: ignore[return-value]


def synthetic_spec(name: str, seed: int = 0) -> SyntheticSpec:
    """Like :func:`bench.synthetic.spec_for`, with a floor of 1,000 × 500 for tiny sizes."""
    spec = spec_for(name, seed)
    if "@" in name:  # an explicit shape is taken as given
        return spec
    return replace(spec, n_users=max(1000, spec.n_users), n_items=max(500, spec.n_items))


#: Measured peak RSS per interaction: generating + splitting (16 M: 1.1 GB), and fitting —
#: libmf copies positives + 2× negatives as (row, col, value) three more times (16 M: 2.6 GB).
BYTES_PER_INTERACTION = {"prepare": 80, "libmf-squared": 200, "default": 70}


def estimate_bytes(name: str, what: str = "prepare") -> int | None:
    """Rough peak memory to prepare a dataset or fit a method on it (None: unknown size)."""
    if not is_synthetic(name):
        return None
    per = BYTES_PER_INTERACTION.get(what, BYTES_PER_INTERACTION["default"])
    return per * synthetic_spec(name).nnz


def _load(name: str, seed: int) -> tuple[Interactions, dict]:
    if name in MOVIELENS:
        from cfcore.datasets import load_movielens

        return load_movielens(name), {"source": "movielens"}
    if is_synthetic(name):
        spec = synthetic_spec(name, seed)
        return power_law_interactions(spec), {"source": "synthetic", "spec": spec.__dict__}
    path = Path(name[len("file:") :] if name.startswith("file:") else name)
    if not path.exists():
        raise InputError(
            f"unknown dataset {name!r}: use ml-100k, ml-latest-small, ml-1m, synth-ml1m, "
            "synth-<N> (e.g. synth-16m), lowrank-ml1m, lowrank-<N> or file:<path>"
        )
    from cfcore.readers import read_interactions

    return read_interactions(path), {"source": "file", "path": str(path)}


def cache_path(cache_dir: Path, name: str, seed: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return cache_dir / f"{safe}-seed{seed}.npz"


def load_split(name: str, seed: int = 0, cache_dir: Path | None = None) -> Split:
    """The dataset ``name`` split 80/20 per user (seeded), from the cache when present.

    Parameters
    ----------
    name : str
        A dataset name (see the module docstring).
    seed : int
        Seed of the generator (synthetic) and of the split.
    cache_dir : Path, optional
        Where split artifacts are kept; None disables caching.
    """
    path = cache_path(cache_dir, name, seed) if cache_dir is not None else None
    if path is not None and path.exists():
        arrays, header = load_artifact(path, CACHE_KIND)
        shape = tuple(int(x) for x in header["shape"])

        def csr(prefix: str) -> sp.csr_matrix:
            ind = arrays[prefix + "_indices"]
            return sp.csr_matrix(
                (np.ones(len(ind), dtype=np.float32), ind, arrays[prefix + "_indptr"]), shape=shape
            )

        return Split(name, csr("train"), csr("test"), header["meta"])
    inter, meta = _load(name, seed)
    train, test = holdout_split(inter, TEST_FRACTION, seed=seed)
    meta = {
        **meta,
        "n_users": inter.n_users,
        "n_items": inter.n_items,
        "nnz": inter.nnz,
        "train_nnz": train.nnz,
        "test_nnz": test.nnz,
        "split": f"holdout_split(test_fraction={TEST_FRACTION}, seed={seed})",
    }
    split = Split(name, train.user_items, test.user_items, meta)
    if path is not None:
        save_artifact(
            path,
            CACHE_KIND,
            {
                "train_indptr": split.train.indptr,
                "train_indices": split.train.indices,
                "test_indptr": split.test.indptr,
                "test_indices": split.test.indices,
            },
            {"shape": list(split.shape), "meta": meta},
        )
    return split


#: Interaction files the reader jobs time: format → file name (the name picks the format).
FILE_FORMATS = {
    "csv": "interactions.csv",
    "u.data": "u.data",
    "ratings.dat": "ratings.dat",
    "parquet": "interactions.parquet",
}


def interaction_file(name: str, fmt: str, cache_dir: Path, seed: int = 0) -> Path:
    """Dataset ``name`` written as an interaction file in format ``fmt`` (cached).

    Every interaction becomes one row ``user, item, rating, timestamp`` (the dataset's ids,
    integers for the synthetic ones), in a seeded random order, with random ratings 1–5 and
    timestamps: ``csv``
    (a generic CSV with a ``user_id,item_id,rating,timestamp`` header), ``u.data`` (tab),
    ``ratings.dat`` (``::``) or ``parquet``.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from cfcore.io import atomic_path

    if fmt not in FILE_FORMATS:
        raise InputError(f"unknown file format {fmt!r}; choose from {', '.join(FILE_FORMATS)}")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    path = cache_dir / "files" / f"{safe}-seed{seed}" / FILE_FORMATS[fmt]
    if path.exists():
        return path
    inter, _ = _load(name, seed)
    coo = inter.user_items.tocoo()
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(coo.nnz)
    table = pa.table(
        {
            "user_id": inter.user_ids[coo.row][order],
            "item_id": inter.item_ids[coo.col][order],
            "rating": rng.integers(1, 6, coo.nnz),
            "timestamp": rng.integers(874_724_710, 893_286_638, coo.nnz),
        }
    )
    del coo, order
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        elif fmt == "csv":
            pcsv.write_csv(table, tmp)
        else:  # headerless, tab or "::" (the fields are integers: no comma but the separators)
            sink = pa.BufferOutputStream()
            pcsv.write_csv(table, sink, pcsv.WriteOptions(include_header=False))
            sep = b"\t" if fmt == "u.data" else b"::"
            tmp.write_bytes(sink.getvalue().to_pybytes().replace(b",", sep))
    return path


def eval_users(test: sp.csr_matrix, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` users with held-out positives, chosen uniformly (seeded), sorted.

    Held-out metrics on 200k users × 100k items would score 2·10¹⁰ pairs; a fixed random
    subset of users gives the same expectation with a small standard error.
    """
    has = np.flatnonzero(np.diff(test.indptr) > 0)
    if n <= 0 or len(has) <= n:
        return has
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(has, n, replace=False))
