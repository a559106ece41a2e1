"""Shared fixtures. Real-data tests use the MovieLens data directory.

Where the data is absent they skip with the reason — except when ``COLLABFEAT_REQUIRE_DATA=1``
(set by ``.ci/run``), where a missing dataset is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from cfcore.datasets import dataset_path
from cfcore.errors import DatasetNotFoundError

# Property tests draw their examples from a fixed seed (and keep no example database), so a
# run of the suite is the same on every machine: a failure is reproducible, not a flake.
settings.register_profile("collabfeat", derandomize=True, database=None, print_blob=True)
settings.load_profile("collabfeat")


def require_dataset(name: str) -> Path:
    """Path of dataset ``name``, or skip (fail under COLLABFEAT_REQUIRE_DATA=1) when absent."""
    try:
        return dataset_path(name)
    except DatasetNotFoundError as exc:
        if os.environ.get("COLLABFEAT_REQUIRE_DATA") == "1":
            pytest.fail(f"required dataset missing: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    return require_dataset("ml-100k")


@pytest.fixture(scope="session")
def ml100k(ml100k_path):
    from cfcore.datasets import load_movielens

    return load_movielens("ml-100k", ml100k_path.parent)


@pytest.fixture(scope="session")
def ml100k_split(ml100k):
    """The 80/20 per-user holdout used by the accuracy tests (seed 0)."""
    from cfcore.splits import holdout_split

    return holdout_split(ml100k, 0.2, seed=0)


@pytest.fixture(scope="session")
def ml_latest_small_path() -> Path:
    return require_dataset("ml-latest-small")


@pytest.fixture(scope="session")
def posters_path() -> Path:
    return require_dataset("movielens-posters")


@pytest.fixture(scope="session", autouse=True)
def _image_cache_in_tmp(tmp_path_factory):
    """cfvision's decoded-image cache goes to a temporary folder, never the home folder."""
    before = os.environ.get("COLLABFEAT_CACHE")
    os.environ["COLLABFEAT_CACHE"] = str(tmp_path_factory.mktemp("collabfeat-cache"))
    yield
    if before is None:
        os.environ.pop("COLLABFEAT_CACHE", None)
    else:
        os.environ["COLLABFEAT_CACHE"] = before


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (``local[2]``) for the whole test session.

    Skips with the reason where pyspark or Java 17+ is missing — except in CI (``CI`` set),
    where ``make install`` provides pyspark and a missing Java is a failure.
    """
    from cfcore.spark.session import SparkUnavailableError, spark_session

    try:
        session = spark_session("local[2]", config={"spark.default.parallelism": "2"})
    except SparkUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Spark unavailable in CI: {exc}")
        pytest.skip(str(exc))
    yield session
    session.stop()
