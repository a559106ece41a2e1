"""Matrix factorization on Spark by DSGD, with the single-machine Numba kernels.

Distributed SGD (Gemulla, Nijkamp, Haas & Sismanis, KDD 2011): the matrix is cut into
``p × p`` blocks (:mod:`cfcore.spark.blocking`); an epoch runs ``p`` strata one after another,
and the ``p`` blocks of a stratum — which share no user and no item rows — are trained at the
same time by Spark tasks, each running the factorizer's own epoch kernel
(:func:`cfcore._kernels.sgd.epoch_kernel`, user-grouped, Hogwild over ``spark.task.cpus``
threads) on its block. Nothing of the maths is re-implemented here.

How the work moves (only factor blocks are exchanged):

- the positives (and the sampled negatives) are bucketed into their ``p²`` blocks once and
  cached as ``p`` RDDs, one per stratum, whose partition ``b`` holds block
  ``(b, (b + d) mod p)`` — the data never moves again (negatives that are resampled every
  epoch are re-bucketed once per epoch);
- the factor blocks travel as an RDD with the same partitioner: user block ``X_b`` in
  partition ``b``, item block ``Y_j`` in the partition of the user block it meets next. A
  stratum is one Spark stage over the union of the stratum's data and the factor blocks — a
  partitioner-aware union, so the cached data is read in place — whose tasks train and
  re-key the factor blocks for the next stratum, the only shuffle (``|X| + |Y|`` bytes).

Losses (all four, as on one machine):

- ``squared`` and ``logistic`` are sums over entries: DSGD is exact for them (Gemulla et
  al.'s setting). The negatives are drawn by :func:`cfcore.spark.sampling.sample_negatives`
  — exactly those one machine draws — and bucketed with the positives.
- ``bpr`` pairs a positive with a negative of the same user, and inside a block both must
  lie in its item block: a positive is paired with one of the user's sampled negatives that
  fall in the same item block (with ``neg_ratio = 2`` there are two per positive on average).
  A user with positives but no sampled negative in an item block skips those positives in
  that stratum (rare once users have a few positives: the count of updates shows it).
- ``warp`` searches violating candidates in the block's item range; drawing uniformly from
  ``N/p`` items, the number of draws to a violator estimates the rank *within the block*, so
  the kernel's rank weights are those of the whole catalogue (``log⌊(N−1)/n⌋`` with the global
  ``N``), which makes the per-block estimate ``p ×`` larger — an unbiased estimate of the
  global rank. Non-uniform candidate weights use an alias table over the block's items.

The result is an ordinary :class:`cfcore.Factorizer` (same ``save``/``recommend``/``load``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import AccumulatorParam, StorageLevel
from pyspark.rdd import RDD
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfcore._kernels import sgd
from cfcore.errors import InputError
from cfcore.factorize import (
    N_BLOCKS,
    Factorizer,
    _project_rows,
    check_divergence,
    report_epoch,
)
from cfcore.interactions import Interactions
from cfcore.spark.blocking import Blocking, stratum_order, user_block_at
from cfcore.spark.data import ITEM, USER, SparkInteractions
from cfcore.spark.sampling import sample_negatives, task_threads

_CELL_SCHEMA = T.StructType(
    [
        T.StructField("ub", T.IntegerType(), False),
        T.StructField("ib", T.IntegerType(), False),
        T.StructField("indptr", T.BinaryType(), False),
        T.StructField("indices", T.BinaryType(), False),
    ]
)


def _by_block(key: int) -> int:
    """The one partition function of every DSGD RDD (so their unions are partition-aware)."""
    return key


# ---------------------------------------------------------------------------- data blocks
@dataclass(frozen=True)
class _Layout:
    """The blocking of one fit: users and items into ``p`` blocks each."""

    users: Blocking
    items: Blocking

    @property
    def p(self) -> int:
        return self.users.p


def _cells(frame: DataFrame, layout: _Layout, kind: str) -> list[RDD]:
    """``frame`` (dense ``u``, ``i`` pairs) bucketed into blocks: one RDD per stratum offset
    ``d``, partition ``b`` holding block ``(b, (b + d) mod p)`` as a local CSR (rows = the
    user block's rows, columns = the item block's), persisted."""
    p = layout.p
    ub, lu = layout.users.sql(USER)
    ib, li = layout.items.sql(ITEM)
    sizes = layout.users.sizes.tolist()

    def pack(table: pa.Table) -> pa.Table:
        block = table.column("ub")[0].as_py()
        rows = table.column("lu").to_numpy()
        cols = table.column("li").to_numpy()
        order = np.lexsort((cols, rows))
        indptr = np.zeros(sizes[block] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=sizes[block]), out=indptr[1:])
        indices = cols[order].astype(np.int32)
        return pa.table(
            {
                "ub": pa.array([block], pa.int32()),
                "ib": pa.array([table.column("ib")[0].as_py()], pa.int32()),
                "indptr": pa.array([indptr.tobytes()], pa.binary()),
                "indices": pa.array([indices.tobytes()], pa.binary()),
            }
        )

    packed = (
        frame.select(
            F.expr(ub).alias("ub"),
            F.expr(ib).alias("ib"),
            F.expr(lu).alias("lu"),
            F.expr(li).alias("li"),
        )
        .groupBy("ub", "ib")
        .applyInArrow(pack, _CELL_SCHEMA)
    )
    blocks = packed.rdd.map(
        lambda row: (
            row.ub,
            (
                kind,
                row.ib,
                np.frombuffer(row.indptr, dtype=np.int64),
                np.frombuffer(row.indices, dtype=np.int32),
            ),
        )
    ).persist(StorageLevel.MEMORY_AND_DISK)
    out = []
    for d in range(p):
        stratum = blocks.filter(lambda kv, d=d: (kv[1][1] - kv[0]) % p == d)
        out.append(stratum.partitionBy(p, _by_block).persist(StorageLevel.MEMORY_AND_DISK))
    for rdd in out:
        rdd._jrdd.count()  # materialise (on the JVM side) before the shared parent goes
    blocks.unpersist()
    return out


def _drop(rdds: list[RDD] | None) -> None:
    for rdd in rdds or ():
        rdd.unpersist()


# ---------------------------------------------------------------------------- statistics
class _Stats(AccumulatorParam):
    """Per-stratum counters summed over tasks: loss, updates, kernel seconds (sum, max),
    largest |factor| (max)."""

    def zero(self, value: np.ndarray) -> np.ndarray:
        return np.zeros(5)

    def addInPlace(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.array([a[0] + b[0], a[1] + b[1], a[2] + b[2], max(a[3], b[3]), max(a[4], b[4])])


def _largest(*tables: np.ndarray | None) -> float:
    biggest = 0.0
    for table in tables:
        if table is not None and table.size:
            biggest = max(biggest, float(np.abs(table).max()))
    return biggest


# ---------------------------------------------------------------------------- the model
class SparkFactorizer(Factorizer):
    """:class:`cfcore.Factorizer` trained on Spark by DSGD; the fitted model is the same.

    Takes every parameter of :class:`cfcore.Factorizer` (same defaults, same meaning) and:

    Parameters
    ----------
    blocks : int, optional
        ``p``: the matrix is cut into ``p × p`` blocks and ``p`` tasks train at once.
        Default: Spark's default parallelism (the cores of ``local[N]``, the executors' cores
        on a cluster). More blocks than cores only adds overhead; fewer leave cores idle.
    collect : bool, default True
        Bring the factors to the driver at the end: the fitted object is then an ordinary
        :class:`cfcore.Factorizer` (``save``, ``recommend``...). ``False`` leaves them on the
        executors (``factor_blocks_``, a persisted RDD) for :meth:`save_tables` — for models
        that do not fit the driver.

    Notes
    -----
    ``threads`` is not used: each Spark task runs the kernel on ``spark.task.cpus`` threads
    (default 1; Hogwild inside a block when larger). ``order`` must be ``"grouped"``.
    ``history_`` records per epoch ``loss``, ``lr``, ``updates``, ``seconds`` and the
    per-stratum ``stratum_seconds`` (wall time of the Spark stage) and
    ``kernel_seconds`` (the slowest task's kernel time in each stratum).
    """

    def __init__(
        self, *args: Any, blocks: int | None = None, collect: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.blocks = blocks
        self.collect = collect

    def fit(
        self,
        user_items: SparkInteractions | DataFrame | Interactions,
        show_progress: bool = True,
        callback: Any = None,
        *,
        validation: Any = None,
    ) -> SparkFactorizer:
        """Learn the factors on Spark.

        Parameters
        ----------
        user_items : SparkInteractions, pyspark DataFrame or Interactions
            The positives: a DataFrame is indexed with
            :meth:`SparkInteractions.from_dataframe` (user/item columns by well-known
            names), an in-memory Interactions is sent to the active (or a local) session.
        show_progress : bool
            Accepted for :meth:`Factorizer.fit`'s signature; Spark shows its own progress.
        callback : callable, optional
            implicit's ``callback(iteration, elapsed, loss)`` after every epoch, as
            :meth:`Factorizer.fit` (``history_[-1]`` holds the epoch's record; the factors are
            on the executors, the model's tables are filled in only at the end); ``False``
            stops.
        validation :
            Not supported on Spark (evaluate the returned model instead); must be None.

        Raises
        ------
        InputError
            A bad parameter or input (the message names it).
        DivergenceError
            The loss or a factor became NaN/inf or exploded.
        """
        if validation is not None:
            raise InputError(
                "validation: not supported by SparkFactorizer; evaluate the fitted model "
                "(cfcore.metrics.evaluate, `cfcore evaluate`) on held-out data instead"
            )
        data = _as_spark(user_items)
        p_eff = self._resolve()
        if p_eff.order != "grouped":
            raise InputError("order: SparkFactorizer trains blocks user-grouped; use 'grouped'")
        sc = data.spark.sparkContext
        p = self.blocks if self.blocks is not None else sc.defaultParallelism
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise InputError(f"blocks: expected an integer >= 1, got {self.blocks!r}")
        if data.nnz == 0:
            raise InputError("user_items: has no interactions")
        n_users, n_items = data.n_users, data.n_items
        p = min(p, n_users, n_items)
        layout = _Layout(
            Blocking.of(n_users, p, p_eff.seed, 1), Blocking.of(n_items, p, p_eff.seed, 2)
        )
        popularity = data.item_popularity()
        self.item_popularity_ = popularity
        self.effective_params_ = p_eff
        self.history_ = []

        loss = p_eff.loss
        positives = _cells(data.pairs, layout, "pos")
        negatives = None

        def draw(epoch: int) -> list[RDD]:
            frame = sample_negatives(
                data,
                p_eff.neg_ratio,
                p_eff.neg_weighting,
                p_eff.seed,
                popularity,
                epoch=epoch,
                partitions=p,
            )
            return _cells(frame, layout, "neg")

        shared = sc.broadcast(_Constants.of(self, p_eff, layout, popularity))
        factors = _initial_factors(sc, shared, stratum_order(p, p_eff.seed, 0)[0])
        try:
            if loss != "warp":
                negatives = draw(0)
            for epoch in range(p_eff.epochs):
                t0 = time.perf_counter()
                if loss != "warp" and p_eff.resample_negatives and epoch > 0:
                    _drop(negatives)
                    negatives = draw(epoch)
                lr = float(p_eff.lr_at(epoch, p_eff.epochs))
                order = stratum_order(p, p_eff.seed, epoch)
                following = order[1:] + [stratum_order(p, p_eff.seed, epoch + 1)[0]]
                totals = np.zeros(5)
                stratum_seconds, kernel_seconds = [], []
                for k, (d, d_next) in enumerate(zip(order, following, strict=True)):
                    s0 = time.perf_counter()
                    stats = sc.accumulator(np.zeros(5), _Stats())
                    parts = [positives[d], *([negatives[d]] if negatives else []), factors]
                    step = _Stratum(shared, epoch, d, d_next, lr, k == p - 1, stats)
                    trained = (
                        sc.union(parts)
                        .mapPartitions(step.run)
                        .partitionBy(p, _by_block)
                        .persist(StorageLevel.MEMORY_AND_DISK)
                    )
                    if k == p - 1:
                        trained.localCheckpoint()  # cut the lineage once per epoch
                    trained._jrdd.count()  # run the stage (a JVM-side action)
                    factors.unpersist()
                    factors = trained
                    totals = _Stats().addInPlace(totals, stats.value)
                    stratum_seconds.append(time.perf_counter() - s0)
                    kernel_seconds.append(float(stats.value[4]))
                updates = int(totals[1])
                mean_loss = float(totals[0] / max(updates, 1))
                check_divergence(epoch, mean_loss, float(totals[3]), p_eff, lr)
                record = {
                    "epoch": epoch + 1,
                    "loss": mean_loss,
                    "lr": lr,
                    "updates": updates,
                    "seconds": time.perf_counter() - t0,
                    "stratum_seconds": stratum_seconds,
                    "kernel_seconds": kernel_seconds,
                }
                self.history_.append(record)
                if report_epoch(callback, record):
                    break
            self.blocks_ = p
            if self.collect:
                self._collect(factors.collect(), layout, p_eff.use_biases)
                self.user_ids_, self.item_ids_ = data.raw_ids()
            else:
                self.factor_blocks_, self.trained_on_ = factors, (data, layout)
        finally:
            if self.collect:
                factors.unpersist()
            _drop(positives)
            _drop(negatives)
            shared.unpersist()
        return self

    def save_tables(self, path: str) -> str:
        """Write the factors as a directory of Parquet tables, from the executors.

        For models too large for the driver (``collect=False``; a collected model can be
        written too): ``users/`` and ``items/`` hold one row per user / item — raw id,
        ``factors`` (array of float), ``bias`` (and ``popularity`` for items) — and
        ``model.json`` the parameters and history. :func:`cfcore.spark.load_tables` reads
        them back into a :class:`cfcore.Factorizer` where they fit.
        """
        from cfcore.spark.tables import write_tables

        return write_tables(self, path)

    def _collect(self, records: list, layout: _Layout, use_biases: bool) -> None:
        """Scatter the factor blocks into the model's global tables (row order = index)."""
        k = self.effective_params_.factors
        X = np.empty((layout.users.n, k), dtype=np.float32)
        Y = np.empty((layout.items.n, k), dtype=np.float32)
        ub = np.zeros(layout.users.n, dtype=np.float32)
        ib = np.zeros(layout.items.n, dtype=np.float32)
        for _, (kind, b, table, bias, _acc) in records:
            if kind == "X":
                rows = layout.users.rows(b)
                X[rows], ub[rows] = table, bias
            else:
                rows = layout.items.rows(b)
                Y[rows], ib[rows] = table, bias
        self.user_factors_, self.item_factors_ = X, Y
        self.user_bias_ = ub if use_biases else None
        self.item_bias_ = ib if use_biases else None


def _as_spark(data: Any) -> SparkInteractions:
    if isinstance(data, SparkInteractions):
        return data
    if isinstance(data, Interactions):
        return SparkInteractions.from_interactions(data)
    if isinstance(data, DataFrame):
        return SparkInteractions.from_dataframe(data)
    raise InputError(
        "user_items: expected a SparkInteractions, a pyspark DataFrame or an Interactions, "
        f"got {type(data).__name__}"
    )


# ---------------------------------------------------------------------------- executors
@dataclass(frozen=True)
class _Constants:
    """What every task needs, broadcast once per fit."""

    layout: _Layout
    factors: int
    loss: int
    use_biases: bool
    adagrad: bool
    seed: int
    init_std: float
    max_norm: float | None
    hyper: Any  # sgd.Hyper without lr and WARP's candidate table (set per task)
    item_weights: np.ndarray | None  # WARP's non-uniform candidate weights w(p_i), global

    @classmethod
    def of(cls, model: Factorizer, p_eff: Any, layout: _Layout, popularity: np.ndarray):
        from cfcore.sampling import item_weights

        hyper = model._hyper(p_eff, layout.items.n)  # global N: WARP's global rank weights
        weights = None
        if p_eff.loss == "warp" and p_eff.neg_weighting != "uniform":
            weights = item_weights(popularity, p_eff.neg_weighting)
            hyper = hyper._replace(alias_prob=np.ones(1), alias_idx=np.zeros(1, np.int32))
        return cls(
            layout,
            p_eff.factors,
            p_eff.loss_code,
            p_eff.use_biases,
            p_eff.adagrad,
            p_eff.seed,
            p_eff.init_scale / p_eff.factors**0.25,
            p_eff.max_norm,
            hyper,
            weights,
        )

    def candidate_table(self, item_block: int) -> dict[str, np.ndarray]:
        """WARP's alias table over the items of ``item_block`` (empty: uniform)."""
        if self.item_weights is None:
            return {}
        from cfcore._kernels.sampling import build_alias

        w = self.item_weights[self.layout.items.rows(item_block)]
        prob, alias = np.empty(len(w), np.float64), np.empty(len(w), np.int32)
        build_alias(w, prob, alias)
        return {"alias_prob": prob, "alias_idx": alias}


def _block(kind: str, b: int, n: int, c: _Constants) -> tuple:
    """A fresh factor block: ``N(0, init_std²)`` rows from ``(seed, kind, b)``, zero biases,
    AdaGrad accumulators at 1."""
    rng = np.random.default_rng([c.seed, 0 if kind == "X" else 1, b])
    table = rng.standard_normal((n, c.factors), dtype=np.float32) * np.float32(c.init_std)
    acc = np.ones(n if c.adagrad else 1, dtype=np.float32)
    return (kind, b, table, np.zeros(n, dtype=np.float32), acc)


def _initial_factors(sc: Any, shared: Any, first_offset: int) -> RDD:
    """The factor blocks, made on the executors, keyed for the first stratum."""
    c: _Constants = shared.value
    p = c.layout.p

    def make(b: int) -> Iterator[tuple[int, tuple]]:
        const: _Constants = shared.value
        yield b, _block("X", b, int(const.layout.users.sizes[b]), const)
        yield (
            user_block_at(p, first_offset, b),
            _block("Y", b, int(const.layout.items.sizes[b]), const),
        )

    return (
        sc.parallelize(range(p), p)
        .flatMap(make)
        .partitionBy(p, _by_block)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


class _Stratum:
    """One stratum's task: train the partition's block, re-key its factor blocks."""

    def __init__(
        self,
        shared: Any,
        epoch: int,
        offset: int,
        next_offset: int,
        lr: float,
        last: bool,
        stats: Any,
    ) -> None:
        self.shared = shared
        self.epoch = epoch
        self.offset = offset
        self.next_offset = next_offset
        self.lr = lr
        self.last = last
        self.stats = stats

    def run(self, records: Iterator[tuple[int, tuple]]) -> Iterator[tuple[int, tuple]]:
        from cfcore.threads import numba_threads

        c: _Constants = self.shared.value
        held: dict[str, tuple] = {}
        for _, record in records:
            held[record[0]] = record
        x, y = held["X"], held["Y"]
        kind_x, b, X, ub, uacc = x
        kind_y, j, Y, ib, iacc = y
        X, Y, ub, ib = (np.array(a, copy=True) for a in (X, Y, ub, ib))  # owned, writable
        uacc, iacc = np.array(uacc, copy=True), np.array(iacc, copy=True)
        loss_sum, updates, seconds = 0.0, 0, 0.0
        pos = held.get("pos")
        if pos is not None:
            n_b = X.shape[0]
            neg = held.get("neg")
            neg_indptr, neg_indices = (
                (neg[2], neg[3])
                if neg is not None
                else (np.zeros(n_b + 1, np.int64), np.zeros(0, np.int32))
            )
            entries = sgd.Entries.of(pos[2], pos[3], neg_indptr, neg_indices)
            tables = sgd.Tables(X, Y, ub, ib, uacc, iacc)
            hyper = c.hyper._replace(lr=np.float32(self.lr), **c.candidate_table(j))
            rng = np.random.default_rng([c.seed, self.epoch, b, j])
            users = rng.permutation(n_b).astype(np.int32)
            counters = sgd.Epoch.of(
                seed=int(rng.integers(0, 2**62)),
                epoch=self.epoch,
                n_blocks=max(1, min(N_BLOCKS, n_b)),
                users=users,
            )
            run = sgd.epoch_kernel(
                loss=c.loss, order="grouped", use_bias=c.use_biases, adagrad=c.adagrad
            )
            t0 = time.perf_counter()
            with numba_threads(task_threads()):
                run(tables, entries, hyper, counters)
            seconds = time.perf_counter() - t0
            loss_sum = float(counters.loss_out.sum())
            updates = int(counters.count_out.sum())
        biggest = _largest(X, Y, ub if c.use_biases else None, ib if c.use_biases else None)
        if not math.isfinite(loss_sum):
            biggest = math.inf
        self.stats.add(np.array([loss_sum, updates, seconds, biggest, seconds]))
        if self.last:
            _project_rows(X, c.max_norm)
            _project_rows(Y, c.max_norm)
        p = c.layout.p
        yield b, ("X", b, X, ub, uacc)
        yield user_block_at(p, self.next_offset, j), ("Y", j, Y, ib, iacc)
