"""collabfeat core: implicit feedback → negative sampling → Hogwild factorization → pseudo-classes.

Never imports torch. Public names are loaded lazily so ``import cfcore`` stays fast (Numba
kernels compile, or load from cache, on first use).

>>> from cfcore import load_movielens, holdout_split, Factorizer
>>> views = load_movielens("ml-100k")
>>> train, test = holdout_split(views, 0.2, seed=0)
>>> model = Factorizer(factors=64, loss="bpr", epochs=30).fit(train.user_items)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Interactions": "cfcore.interactions",
    "read_interactions": "cfcore.readers",
    "holdout_split": "cfcore.splits",
    "item_split": "cfcore.splits",
    "leave_k_out": "cfcore.splits",
    "data_dir": "cfcore.datasets",
    "download": "cfcore.datasets",
    "load_movielens": "cfcore.datasets",
    "sample_negatives": "cfcore.sampling",
    "NegativeSample": "cfcore.sampling",
    "Factorizer": "cfcore.factorize",
    "FactorModel": "cfcore.model",
    "load_model": "cfcore.model",
    "FANG_2015": "cfcore.factorize",
    "cluster_items": "cfcore.cluster",
    "NeighborIndex": "cfcore.neighbors",
    "PseudoLabels": "cfcore.cluster",
    "Neighbors": "cfcore.neighbors",
    "retrieval_report": "cfcore.retrieval",
    "load_vectors": "cfcore.vectors",
    "TagData": "cfcore.tagdata",
    "read_tags": "cfcore.readers",
    "read_user_attributes": "cfcore.attributes",
    "TagModel": "cfcore.tags",
    "save_vectors": "cfcore.vectors",
    "SimulatedWorld": "cfcore.simulate",
    "CollabfeatError": "cfcore.errors",
    "InputError": "cfcore.errors",
    "DivergenceError": "cfcore.errors",
    "ModelFormatError": "cfcore.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cfcore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
