"""Interactions as Spark DataFrames: raw ids mapped to dense indices with Spark.

:class:`SparkInteractions` is the Spark twin of :class:`cfcore.Interactions`: the distinct
(user, item) pairs as dense indices ``u``, ``i`` plus the two id maps (raw id → index).
Indices follow the sorted order of the raw ids — the order :meth:`Interactions.from_pairs`
gives — so one input yields the same rows and columns on one machine and on Spark. The
index is computed as ``zipWithIndex`` does, without leaving the JVM's columnar path: the
distinct ids are range-sorted, each partition counts its rows, and a partition numbers its
ids from the sum of the counts before it.

>>> from cfcore.spark import SparkInteractions, spark_session
>>> spark = spark_session("local[2]")
>>> views = SparkInteractions.from_dataframe(spark.read.parquet("views.parquet"))
>>> views.n_users, views.n_items, views.nnz
>>> views.item_popularity()          # viewers per item, computed with Spark (numpy array)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfcore.errors import InputError
from cfcore.interactions import Interactions

#: Column names of the dense pairs and of the id maps.
USER, ITEM = "u", "i"
RAW_USER, RAW_ITEM = "user", "item"

_INTEGER_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def _id_column(df: DataFrame, name: str, what: str, where: str) -> Any:
    """``df[name]`` as a long or string column; :class:`InputError` for other types."""
    dtype = df.schema[name].dataType
    if isinstance(dtype, _INTEGER_TYPES):
        return F.col(name).cast("long")
    if isinstance(dtype, T.StringType):
        return F.col(name)
    raise InputError(
        f"{where}: column {name!r} ({what}) has type {dtype.simpleString()}; ids must be "
        "integers or strings"
    )


def _dense_index(ids: DataFrame, raw: str, index: str) -> DataFrame:
    """``(raw, index)``: each distinct value of column ``raw`` and its rank in sorted order.

    ``zipWithIndex`` over a range-sorted frame: partition counts, then offsets.
    """
    ordered = ids.select(raw).distinct().orderBy(raw).persist(StorageLevel.MEMORY_AND_DISK)
    counts = dict(ordered.groupBy(F.spark_partition_id()).count().collect())
    sizes = np.zeros(max(counts, default=-1) + 1, dtype=np.int64)
    for part, n in counts.items():
        sizes[part] = n
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    schema = T.StructType([ordered.schema[raw], T.StructField(index, T.LongType(), False)])

    def number(batches):
        start = offsets[TaskContext.get().partitionId()]
        for batch in batches:
            positions = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))
            yield pa.RecordBatch.from_arrays([batch.column(0), positions], names=[raw, index])
            start += batch.num_rows

    return ordered.mapInArrow(number, schema)


class SparkInteractions:
    """Distinct (user, item) pairs as dense indices, with the raw-id maps, on Spark.

    Build it with :meth:`from_dataframe` (any DataFrame with a user and an item column),
    :meth:`read` (a Parquet dataset or CSV, read by Spark) or :meth:`from_interactions`
    (an in-memory :class:`cfcore.Interactions`).

    Attributes
    ----------
    pairs : DataFrame
        Columns ``u`` (long) and ``i`` (int): the distinct pairs, dense indices.
    user_map, item_map : DataFrame
        ``(user, u)`` and ``(item, i)``: raw id → index, ``0..n-1`` in sorted raw-id order.
    n_users, n_items : int
    """

    def __init__(
        self, pairs: DataFrame, user_map: DataFrame, item_map: DataFrame, n_users: int, n_items: int
    ) -> None:
        self.pairs = pairs
        self.user_map = user_map
        self.item_map = item_map
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self._nnz: int | None = None
        self._popularity: np.ndarray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dataframe(
        cls,
        df: DataFrame,
        user_col: str | int | None = None,
        item_col: str | int | None = None,
        rating_col: str | int | None = None,
        min_rating: float | None = None,
        where: str = "DataFrame",
    ) -> SparkInteractions:
        """Index a DataFrame of interactions.

        Parameters
        ----------
        df : pyspark.sql.DataFrame
            One row per interaction; duplicates count once.
        user_col, item_col, rating_col : str or int, optional
            Column names or positions; by default well-known names (``user_id``, ``item``,
            ``rating``, ...) else columns 0 and 1, as :func:`cfcore.read_interactions`.
        min_rating : float, optional
            Keep only rows rated at least this.
        where : str
            What to call the input in error messages (a path, or ``"DataFrame"``).

        Raises
        ------
        InputError
            Unknown columns, ids that are neither integers nor strings, missing ids, no
            rows, NaN ratings, or ``min_rating`` without a rating column.
        """
        from cfcore.readers import _resolve_columns

        u, i, r = _resolve_columns(where, list(df.columns), user_col, item_col, rating_col)
        if min_rating is not None and r is None:
            raise InputError(f"{where}: min_rating given but there is no rating column")
        frame = df.select(
            _id_column(df, u, "users", where).alias(RAW_USER),
            _id_column(df, i, "items", where).alias(RAW_ITEM),
            *([F.col(r).cast("double").alias("rating")] if min_rating is not None else []),
        )
        checks = [
            F.sum(F.col(RAW_USER).isNull().cast("long")).alias("null_users"),
            F.sum(F.col(RAW_ITEM).isNull().cast("long")).alias("null_items"),
            F.count(F.lit(1)).alias("rows"),
        ]
        if min_rating is not None:
            bad = F.col("rating").isNull() | F.isnan("rating")
            checks.append(F.sum(bad.cast("long")).alias("bad_ratings"))
        stats = frame.agg(*checks).first().asDict()
        if not stats["rows"]:
            raise InputError(f"{where}: no rows")
        for key, name in (("null_users", u), ("null_items", i)):
            if stats[key]:
                raise InputError(f"{where}: column {name!r} has {stats[key]} missing ids")
        if stats.get("bad_ratings"):
            raise InputError(
                f"{where}: column {r!r} has {stats['bad_ratings']} ratings that are not numbers"
            )
        if min_rating is not None:
            frame = frame.where(F.col("rating") >= float(min_rating))
            if frame.isEmpty():
                raise InputError(f"{where}: no interactions left with rating >= {min_rating}")
        frame = frame.select(RAW_USER, RAW_ITEM)
        user_map = _dense_index(frame, RAW_USER, USER).persist(StorageLevel.MEMORY_AND_DISK)
        item_map = _dense_index(frame, RAW_ITEM, ITEM).persist(StorageLevel.MEMORY_AND_DISK)
        n_users, n_items = user_map.count(), item_map.count()
        if n_items >= np.iinfo(np.int32).max:
            raise InputError(f"{where}: {n_items} items is more than int32 indices can hold")
        pairs = (
            frame.join(user_map, RAW_USER)
            .join(F.broadcast(item_map) if n_items <= 10_000_000 else item_map, RAW_ITEM)
            .select(F.col(USER), F.col(ITEM).cast("int"))
            .distinct()
        )
        return cls(pairs, user_map, item_map, n_users, n_items)

    @classmethod
    def read(
        cls,
        spark: SparkSession,
        path: str | os.PathLike[str],
        format: str = "auto",
        *,
        sep: str | None = None,
        header: bool | None = None,
        user_col: str | int | None = None,
        item_col: str | int | None = None,
        rating_col: str | int | None = None,
        min_rating: float | None = None,
    ) -> SparkInteractions:
        """Read interactions with Spark: a Parquet file or dataset directory, or CSV/TSV.

        ``path`` may be any URI Spark reads (``hdfs://``, ``s3a://``, ...). ``format``:
        ``auto`` (a directory or ``*.parquet`` is Parquet, ``*.csv`` CSV, ``*.tsv`` TSV),
        ``parquet``, ``csv`` or ``tsv``; other formats (MovieLens files, ``.npz``) are read
        on the driver by :func:`cfcore.read_interactions` and :meth:`from_interactions`.
        """
        from cfcore.readers import guess_format, read_interactions

        text = os.fspath(path)
        remote = "://" in text
        if not remote and not Path(text).exists():
            raise InputError(f"{text}: no such file or directory")
        fmt = format
        if fmt == "auto":
            fmt = "parquet" if (not remote and Path(text).is_dir()) else guess_format(text)
        columns = dict(user_col=user_col, item_col=item_col, rating_col=rating_col)
        if fmt == "parquet":
            try:
                df = spark.read.parquet(text)
            except Exception as exc:  # AnalysisException and friends: one line
                raise InputError(f"{text}: not a readable Parquet dataset ({exc})") from None
        elif fmt in ("csv", "tsv"):
            df = spark.read.csv(
                text,
                sep=sep or ("\t" if fmt == "tsv" else ","),
                header=bool(header) if header is not None else True,
                inferSchema=True,
            )
        else:
            inter = read_interactions(
                text, fmt, sep=sep, header=header, min_rating=min_rating, **columns
            )
            return cls.from_interactions(inter, spark)
        return cls.from_dataframe(df, min_rating=min_rating, where=text, **columns)

    @classmethod
    def from_interactions(
        cls, inter: Interactions, spark: SparkSession | None = None
    ) -> SparkInteractions:
        """The Spark form of an in-memory :class:`cfcore.Interactions` (same rows/columns)."""
        from cfcore.spark.session import spark_session

        spark = spark or spark_session()
        coo = inter.user_items.tocoo()
        pairs = spark.createDataFrame(
            pa.table({USER: coo.row.astype(np.int64), ITEM: coo.col.astype(np.int32)})
        )

        def id_map(ids: np.ndarray, raw: str, index: str) -> DataFrame:
            return spark.createDataFrame(
                pa.table({raw: ids, index: np.arange(len(ids), dtype=np.int64)})
            )

        out = cls(
            pairs,
            id_map(inter.user_ids, RAW_USER, USER),
            id_map(inter.item_ids, RAW_ITEM, ITEM),
            inter.n_users,
            inter.n_items,
        )
        out._nnz = inter.nnz
        return out

    # ------------------------------------------------------------------ facts
    @property
    def spark(self) -> SparkSession:
        return self.pairs.sparkSession

    @property
    def nnz(self) -> int:
        """Number of distinct (user, item) pairs (one Spark count, then remembered)."""
        if self._nnz is None:
            self._nnz = int(self.pairs.count())
        return self._nnz

    def item_popularity(self) -> np.ndarray:
        """Viewers per item (Fang's ``p_i``), int64 of length ``n_items``, counted by Spark."""
        if self._popularity is None:
            counts = self.pairs.groupBy(ITEM).count().toArrow()
            popularity = np.zeros(self.n_items, dtype=np.int64)
            popularity[counts.column(ITEM).to_numpy()] = counts.column("count").to_numpy()
            self._popularity = popularity
        return self._popularity

    def raw_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """``(user_ids, item_ids)``: the raw ids in index order, collected to the driver."""
        return _ids_in_order(self.user_map, RAW_USER, USER), _ids_in_order(
            self.item_map, RAW_ITEM, ITEM
        )

    def to_interactions(self) -> Interactions:
        """Collect into an in-memory :class:`cfcore.Interactions` (for data that fits)."""
        import scipy.sparse as sp

        table = self.pairs.toArrow()
        rows = table.column(USER).to_numpy()
        cols = table.column(ITEM).to_numpy()
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(self.n_users, self.n_items),
        )
        user_ids, item_ids = self.raw_ids()
        return Interactions(matrix, user_ids, item_ids)

    def with_raw_ids(self, frame: DataFrame) -> DataFrame:
        """``frame`` with its ``u``/``i`` index columns replaced by raw ``user``/``item`` ids."""
        return (
            frame.join(self.user_map, USER)
            .join(F.broadcast(self.item_map), ITEM)
            .select(RAW_USER, RAW_ITEM, *[c for c in frame.columns if c not in (USER, ITEM)])
        )

    def __repr__(self) -> str:
        return f"SparkInteractions({self.n_users} users × {self.n_items} items)"


def _ids_in_order(id_map: DataFrame, raw: str, index: str) -> np.ndarray:
    table = id_map.toArrow()
    ids = table.column(raw).to_numpy(zero_copy_only=False)
    order = np.argsort(table.column(index).to_numpy(), kind="stable")
    ids = ids[order]
    return ids.astype(str) if ids.dtype == object else ids.astype(np.int64)
