"""Fang et al.'s negative sampler (Algorithm 1) on Spark, partitioned by user.

Item popularity is counted by Spark and broadcast; the pairs are partitioned by user (all of
a user's positives in one partition) and every partition runs the single-machine sampler,
:func:`cfcore.sampling.sample_negatives` — the same Numba kernel — on its users, passing their
global indices as ``user_index``. User ``j`` draws from the random stream
``(seed, epoch, j)`` whatever partition it lands in, so **the negatives do not depend on the
partitioning**: they are exactly those :func:`cfcore.sampling.sample_negatives` draws for the
whole matrix on one machine.

>>> from cfcore.spark import SparkInteractions, sample_negatives
>>> negatives = sample_negatives(views, neg_ratio=2, neg_weighting="log-popularity", seed=0)
>>> views.with_raw_ids(negatives).write.parquet("negatives.parquet")
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from cfcore.sampling import NegativeSample
from cfcore.spark.data import ITEM, USER, SparkInteractions

#: Schema of a negatives frame: dense user and item indices.
NEGATIVES_SCHEMA = T.StructType(
    [T.StructField(USER, T.LongType(), False), T.StructField(ITEM, T.IntegerType(), False)]
)


def task_threads() -> int:
    """Numba threads for the current Spark task: its ``spark.task.cpus`` (1 outside a task)."""
    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else 1


def sample_partition(
    users: np.ndarray,
    items: np.ndarray,
    n_items: int,
    popularity: np.ndarray,
    ratio: float,
    weighting: str,
    seed: int,
    epoch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The negatives of the users in one partition: ``(users, items)`` arrays, user-major.

    ``users``/``items`` are the partition's positive pairs (global indices; all positives
    of each of its users). The partition's users become the rows of a local CSR and are
    sampled with their global indices as random streams.
    """
    if len(users) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    from cfcore.sampling import sample_negatives

    rows, local = np.unique(users, return_inverse=True)
    positives = sp.csr_matrix(
        (np.ones(len(items), dtype=np.float32), (local, items)), shape=(len(rows), n_items)
    )
    drawn = sample_negatives(
        positives,
        ratio,
        weighting,
        seed=seed,
        threads=task_threads(),
        popularity=popularity,
        epoch=epoch,
        warn_short=False,
        user_index=rows,
    )
    return np.repeat(rows, drawn.counts), drawn.indices


def sample_negatives(
    data: SparkInteractions,
    neg_ratio: float = 2.0,
    neg_weighting: str = "log-popularity",
    seed: int = 0,
    popularity: np.ndarray | None = None,
    *,
    epoch: int = 0,
    partitions: int | None = None,
) -> DataFrame:
    """Draw negatives per user as :func:`cfcore.sampling.sample_negatives`, on Spark.

    Parameters
    ----------
    data : SparkInteractions
        The positives.
    neg_ratio, neg_weighting, seed, epoch :
        As :func:`cfcore.sampling.sample_negatives` (checked here, on the driver).
    popularity : ndarray, shape (n_items,), optional
        ``p_i ≥ 0``; default: viewers per item, counted by Spark. Broadcast to the tasks.
    partitions : int, optional
        Partitions of the user-partitioned pairs (default: Spark's default parallelism).
        The result does not depend on it.

    Returns
    -------
    DataFrame
        Columns ``u`` (long), ``i`` (int): dense indices of the sampled negatives (lazy;
        :meth:`SparkInteractions.with_raw_ids` turns them into raw ids). Users with fewer
        candidates than requested get all of them, as on one machine.
    """
    from cfcore.sampling import (
        _check_int,
        _check_popularity,
        check_neg_ratio,
        check_neg_weighting,
    )

    ratio = check_neg_ratio(neg_ratio)
    weighting = check_neg_weighting(neg_weighting)
    seed = _check_int(seed, "seed")
    epoch = _check_int(epoch, "epoch")
    n_items = data.n_items
    if popularity is None:
        popularity = data.item_popularity()
    popularity = _check_popularity(popularity, n_items)
    spark = data.spark
    shared = spark.sparkContext.broadcast(popularity)
    partitions = partitions or spark.sparkContext.defaultParallelism

    def draw(batches):
        batches = list(batches)
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        u, i = sample_partition(
            table.column(USER).to_numpy(),
            table.column(ITEM).to_numpy(),
            n_items,
            shared.value,
            ratio,
            weighting,
            seed,
            epoch,
        )
        yield pa.RecordBatch.from_arrays([pa.array(u), pa.array(i)], names=[USER, ITEM])

    return data.pairs.repartition(partitions, USER).mapInArrow(draw, NEGATIVES_SCHEMA)


def collect_negatives(
    data: SparkInteractions,
    negatives: DataFrame,
    ratio: float,
    weighting: str,
    seed: int,
    epoch: int = 0,
) -> NegativeSample:
    """Collect a negatives frame into a :class:`cfcore.sampling.NegativeSample` (the
    ``.npz`` artifact of one machine), with its shortfall counted as there:
    ``requested = Σ_j round(ratio · |positives_j|)`` and ``n_short`` the users that got
    fewer."""
    table = negatives.toArrow()
    users = table.column(USER).to_numpy()
    items = table.column(ITEM).to_numpy()
    order = np.lexsort((items, users))
    counts = np.bincount(users, minlength=data.n_users)
    indptr = np.zeros(data.n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    positives = data.pairs.groupBy(USER).count().toArrow()
    wanted = np.zeros(data.n_users, dtype=np.int64)
    wanted[positives.column(USER).to_numpy()] = np.floor(
        ratio * positives.column("count").to_numpy() + 0.5
    ).astype(np.int64)
    return NegativeSample(
        indptr=indptr,
        indices=items[order].astype(np.int32),
        shape=(data.n_users, data.n_items),
        n_short=int((counts < wanted).sum()),
        requested=int(wanted.sum()),
        weighting=weighting,
        ratio=float(ratio),
        seed=int(seed),
        epoch=int(epoch),
    )
