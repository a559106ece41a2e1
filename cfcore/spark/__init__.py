"""collabfeat on Apache Spark: negative sampling and DSGD factorization with the Numba kernels.

Imported lazily: ``import cfcore`` never imports pyspark; the names below load it on first
use (:class:`cfcore.spark.session.SparkUnavailableError` says what is missing). Local mode
(``local[*]``, inside this process) is the default; on a cluster, pass the session or master
of the cluster and install collabfeat on the executors.

>>> from cfcore.spark import SparkInteractions, SparkFactorizer, spark_session
>>> spark = spark_session("local[2]")
>>> views = SparkInteractions.read(spark, "views.parquet")
>>> model = SparkFactorizer(factors=64, epochs=10).fit(views)   # an ordinary Factorizer
>>> model.save("model.npz")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "spark_session": "cfcore.spark.session",
    "check_java": "cfcore.spark.session",
    "SparkUnavailableError": "cfcore.spark.session",
    "SparkInteractions": "cfcore.spark.data",
    "sample_negatives": "cfcore.spark.sampling",
    "SparkFactorizer": "cfcore.spark.dsgd",
    "load_tables": "cfcore.spark.tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cfcore.spark' has no attribute {name!r}")
    if module != "cfcore.spark.session":
        from cfcore.spark.session import require_pyspark

        require_pyspark()
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
