"""The methods a benchmark compares: collabfeat's factorizer and the peer libraries.

Every method is an adapter with one job: fit a users × items CSR of positives at a given
number of factors, epochs and threads, and return the factor tables plus an honest count of the
SGD updates it performed. Each peer runs with its own documented default learning rate.

How an *update* is counted (updates/s = updates per epoch × epochs / fit seconds):

================  ===================================================================
collabfeat-*      its own counter (``history_[e]["updates"]``): squared/logistic =
                  positives + sampled negatives visited; bpr/warp = positives visited
                  (one triple, or one WARP update attempt, per positive)
libmf-squared     entries per iteration = positives + sampled negatives (targets 1/0;
                  the same negatives as collabfeat: ``cfcore.sampling``, ratio 2,
                  log-popularity) — the same problem as collabfeat-squared
libmf-bpr-row     positives per iteration (fun=10: one (u, i, sampled j) pair per
                  positive, libmf's row-oriented one-class loss)
implicit-bpr      nnz samples per epoch (implicit draws nnz random triples)
lightfm-warp/bpr  positives per epoch (each positive is one update attempt; WARP's
                  inner negative draws are not counted)
cornac-bpr        nnz samples per epoch (cornac draws nnz random triples)
implicit-als      no SGD: epochs/s is reported instead of updates/s
================  ===================================================================

Fit time is the wall time of the library's own fit call (its internal set-up included; our
data conversion to its input format is excluded and reported as ``prep_seconds``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

#: Factors of the comparison (the issue's 64).
DEFAULT_FACTORS = 64


@dataclass
class FactorTables:
    """What a fitted method exposes for evaluation: ``s_ui = x_u · y_i (+ b_i)``."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray | None = None

    def copy(self) -> FactorTables:
        """A snapshot that later training steps do not change."""
        return FactorTables(
            self.user_factors.copy(),
            self.item_factors.copy(),
            None if self.item_bias is None else self.item_bias.copy(),
        )


#: ``callback(epoch, tables)`` after epoch ``epoch`` (1-based); time spent in it is not counted.
EpochCallback = Callable[[int, Callable[[], FactorTables]], None]


@dataclass
class FitTask:
    train: sp.csr_matrix
    factors: int = DEFAULT_FACTORS
    epochs: int = 10
    threads: int = 1
    seed: int = 0
    callback: EpochCallback | None = None


@dataclass
class FitResult:
    tables: FactorTables
    seconds: float
    epochs: int
    updates: float | None  # total updates over the fit (None: not an SGD method)
    prep_seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One benchmarked method.

    Attributes
    ----------
    name : str
        ``library-loss`` (e.g. ``implicit-bpr``).
    module : str
        Module whose presence makes the method available.
    package : str
        What to install when it is missing.
    family : str
        Loss family: ``squared``, ``bpr``, ``warp``, ``logistic``, ``als``, ``baseline``.
    counting : str
        How an update is counted (see the module docstring).
    fit : callable
        ``fit(task) -> FitResult``.
    callbacks : bool
        Whether per-epoch callbacks are supported (else quality curves refit).
    warmup : bool
        Whether a tiny untimed fit precedes the timed one (JIT compilation, thread pools).
        Off for libmf: compiled ahead of time, it starts its threads in every fit anyway,
        and its block scheduler can hang on a problem as tiny as the warm-up's (seen once
        in a 60 × 40 fit on 2 threads, every thread waiting in ``Scheduler::put_job``).
    """

    name: str
    module: str
    package: str
    family: str
    counting: str
    fit: Callable[[FitTask], FitResult]
    callbacks: bool = True
    warmup: bool = True

    @property
    def sgd(self) -> bool:
        return self.family not in ("als", "baseline")


def missing_reason(method: Method) -> str | None:
    """Why ``method`` cannot run here (its module is not importable), or None."""
    try:
        found = importlib.util.find_spec(method.module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return (
        f"{method.name}: skipped, {method.module} is not installed (pip install {method.package})"
    )


class _Clock:
    """Fit wall time minus the time spent in our callbacks."""

    def __init__(self) -> None:
        self.excluded = 0.0

    def wrap(self, callback: EpochCallback | None, tables: Callable[[], FactorTables]):
        if callback is None:
            return None

        def run(epoch: int) -> None:
            t0 = time.perf_counter()
            callback(epoch, tables)
            self.excluded += time.perf_counter() - t0

        return run


# ---------------------------------------------------------------------- collabfeat
#: Fang et al.'s squared-loss setting (:data:`cfcore.factorize.FANG_2015`: 2 negatives per
#: positive drawn once, plain SGD, λ 0.01) — the same problem libmf is given — in the
#: throughput suites' few epochs: η 0.05 decaying as 1/√(1+epoch). Plain SGD at 0.02 constant
#: is still far from converged after 3 epochs (synth-4m, 64 factors, 3 epochs: held-out AUC
#: 0.852 vs 0.933 with this step; after 20 both 0.938).
FANG_FEW_EPOCHS = {
    "regularization": 0.01,
    "neg_ratio": 2.0,
    "neg_weighting": "log-popularity",
    "resample_negatives": False,
    "optimizer": "sgd",
    "learning_rate": 0.05,
    "schedule": "inverse-sqrt",
}


def _collabfeat(
    loss: str, order: str = "grouped", **overrides: Any
) -> Callable[[FitTask], FitResult]:
    def fit(task: FitTask) -> FitResult:
        from cfcore.factorize import Factorizer

        model = Factorizer(
            factors=task.factors,
            loss=loss,
            order=order,
            epochs=task.epochs,
            threads=task.threads,
            seed=task.seed,
            progress=False,
            **overrides,
        )
        clock = _Clock()

        def tables() -> FactorTables:
            return FactorTables(model.user_factors_, model.item_factors_, model.item_bias_)

        cb = clock.wrap(task.callback, tables)
        t0 = time.perf_counter()
        model.fit(task.train, callback=None if cb is None else (lambda epoch, *_: cb(epoch + 1)))
        seconds = time.perf_counter() - t0 - clock.excluded
        updates = float(sum(h["updates"] for h in model.history_))
        return FitResult(
            tables(),
            seconds,
            len(model.history_),
            updates,
            params=model.get_params() if hasattr(model, "get_params") else {},
        )

    return fit


# ---------------------------------------------------------------------- libmf
def _quiet_import_libmf():
    with contextlib.redirect_stdout(io.StringIO()):  # libmf prints the .so it loads
        from libmf import mf
    return mf


def _sampled_negatives(train: sp.csr_matrix, seed: int, threads: int) -> sp.csr_matrix:
    """Negatives exactly as collabfeat's factorizer draws them (ratio 2, log-popularity)."""
    from cfcore.sampling import sample_negatives

    return sample_negatives(
        train, 2.0, "log-popularity", seed=seed, threads=threads, warn_short=False
    ).to_csr()


def _libmf(fun: int, with_negatives: bool) -> Callable[[FitTask], FitResult]:
    # libmf's default step (eta 0.1) and an L2 penalty on P and Q. libmf's CLI default L2 (0.1)
    # over-regularises squared loss on 2:1 sampled negatives (held-out AUC 0.72 vs 0.88 at 0.05
    # on synth-ml1m, same speed); the Python binding's default is an L1 penalty of 0.04, which
    # drives one-class factors to exactly zero. So: L2 0.05 (squared), 0.01 (one-class BPR).
    l2 = 0.05 if fun == 0 else 0.01

    def fit(task: FitTask) -> FitResult:
        mf = _quiet_import_libmf()
        t0 = time.perf_counter()
        coo = task.train.tocoo()
        rows, cols, vals = [coo.row], [coo.col], [np.ones(coo.nnz, dtype=np.float32)]
        if with_negatives:
            neg = _sampled_negatives(task.train, task.seed, task.threads).tocoo()
            rows.append(neg.row)
            cols.append(neg.col)
            vals.append(np.zeros(neg.nnz, dtype=np.float32))
        data = np.column_stack(
            [np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)]
        ).astype(np.float32)
        prep = time.perf_counter() - t0
        model = mf.MF(
            fun=fun,
            k=task.factors,
            nr_threads=task.threads,
            nr_iters=task.epochs,
            eta=0.1,
            lambda_p1=0.0,
            lambda_q1=0.0,
            lambda_p2=l2,
            lambda_q2=l2,
            quiet=True,
        )
        t0 = time.perf_counter()
        model.fit(data)
        seconds = time.perf_counter() - t0
        n_users, n_items = task.train.shape
        P = _pad(model.p_factors(), n_users)
        Q = _pad(model.q_factors(), n_items)
        updates = float(len(data) if fun == 0 else task.train.nnz) * task.epochs
        return FitResult(
            FactorTables(P, Q),
            seconds,
            task.epochs,
            updates,
            prep,
            {
                "fun": fun,
                "eta": 0.1,
                "lambda_p2": l2,
                "lambda_q2": l2,
                "negatives": "ratio 2, log-popularity" if with_negatives else None,
            },
        )

    return fit


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    """libmf sizes its tables by the largest index seen and marks rows without any entry NaN
    (its cold-start convention); those rows never trained, so they score 0 here."""
    a = np.nan_to_num(np.ascontiguousarray(a, dtype=np.float32), nan=0.0)
    if len(a) >= n:
        return a[:n]
    return np.vstack([a, np.zeros((n - len(a), a.shape[1]), dtype=np.float32)])


# ---------------------------------------------------------------------- implicit
def _fit_implicit(model: Any, task: FitTask, updates: float | None, params: dict) -> FitResult:
    """Time an implicit model's ``fit`` (checkpoint evaluation excluded) and wrap the result."""
    clock = _Clock()

    def tables() -> FactorTables:
        return FactorTables(model.user_factors, model.item_factors)

    cb = clock.wrap(task.callback, tables)
    t0 = time.perf_counter()
    model.fit(
        task.train,
        show_progress=False,
        callback=None if cb is None else (lambda epoch, *a: cb(epoch + 1)),
    )
    seconds = time.perf_counter() - t0 - clock.excluded
    return FitResult(tables(), seconds, task.epochs, updates, params=params)


def _implicit_bpr(task: FitTask) -> FitResult:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    # implicit appends an item-bias column: factors - 1 gives rows of exactly `factors` floats.
    params = {"factors": task.factors - 1, "learning_rate": 0.01, "regularization": 0.01}
    model = BayesianPersonalizedRanking(
        **params, iterations=task.epochs, num_threads=task.threads, random_state=task.seed
    )
    updates = float(task.train.nnz) * task.epochs
    return _fit_implicit(model, task, updates, {**params, "verify_negative_samples": True})


def _implicit_als(task: FitTask) -> FitResult:
    from implicit.cpu.als import AlternatingLeastSquares

    params = {"factors": task.factors, "regularization": 0.01, "alpha": 1.0}
    model = AlternatingLeastSquares(
        **params, iterations=task.epochs, num_threads=task.threads, random_state=task.seed
    )
    return _fit_implicit(model, task, None, params)


# ---------------------------------------------------------------------- LightFM
def _lightfm(loss: str) -> Callable[[FitTask], FitResult]:
    def fit(task: FitTask) -> FitResult:
        from lightfm import LightFM

        t0 = time.perf_counter()
        coo = task.train.tocoo()
        prep = time.perf_counter() - t0
        model = LightFM(
            no_components=task.factors, loss=loss, learning_rate=0.05, random_state=task.seed
        )

        def tables() -> FactorTables:
            ib, iv = model.get_item_representations()
            _, uv = model.get_user_representations()
            return FactorTables(uv, iv, ib)

        seconds = 0.0
        for epoch in range(task.epochs):
            t0 = time.perf_counter()
            model.fit_partial(coo, epochs=1, num_threads=task.threads)
            seconds += time.perf_counter() - t0
            if task.callback is not None:
                task.callback(epoch + 1, tables)
        return FitResult(
            tables(),
            seconds,
            task.epochs,
            float(task.train.nnz) * task.epochs,
            prep,
            {
                "no_components": task.factors,
                "learning_rate": 0.05,
                "learning_schedule": "adagrad",
                "max_sampled": 10,
            },
        )

    return fit


# ---------------------------------------------------------------------- cornac
def _cornac_bpr(task: FitTask) -> FitResult:
    from cornac.data import Dataset
    from cornac.models import BPR

    t0 = time.perf_counter()
    coo = task.train.tocoo()
    n_users, n_items = task.train.shape
    dataset = Dataset(
        n_users,
        n_items,
        {u: u for u in range(n_users)},
        {i: i for i in range(n_items)},
        (coo.row.astype(np.int64), coo.col.astype(np.int64), np.ones(coo.nnz, dtype=np.float64)),
        seed=task.seed,
    )
    prep = time.perf_counter() - t0
    # cornac's default learning rate (0.001) needs hundreds of epochs; 0.01 is the value its
    # examples use for tens of epochs. A seed forces one thread, so multi-threaded runs are unseeded.
    model = BPR(
        k=task.factors,
        max_iter=task.epochs,
        learning_rate=0.01,
        lambda_reg=0.01,
        num_threads=task.threads,
        seed=task.seed if task.threads == 1 else None,
        verbose=False,
    )
    t0 = time.perf_counter()
    model.fit(dataset)
    seconds = time.perf_counter() - t0
    return FitResult(
        FactorTables(model.u_factors, model.i_factors, model.i_biases),
        seconds,
        task.epochs,
        float(task.train.nnz) * task.epochs,
        prep,
        {
            "k": task.factors,
            "learning_rate": 0.01,
            "lambda_reg": 0.01,
            "threads_used": model.num_threads,
        },
    )


# ---------------------------------------------------------------------- Spark
#: MLlib ALS with implicit preferences: the regularization and confidence of implicit-als
#: (λ 0.01, α 1), rank = factors, maxIter = epochs.
SPARK_ALS = {"regParam": 0.01, "alpha": 1.0, "implicitPrefs": True}


def _spark_session(threads: int):
    """The benchmark's Spark: ``local[threads]``, ``threads`` shuffle partitions."""
    from cfcore.spark import spark_session

    return spark_session(f"local[{threads}]", config={"spark.default.parallelism": str(threads)})


def _spark_dsgd(loss: str, **overrides: Any) -> Callable[[FitTask], FitResult]:
    def fit(task: FitTask) -> FitResult:
        from cfcore.interactions import Interactions
        from cfcore.spark import SparkFactorizer, SparkInteractions

        t0 = time.perf_counter()
        spark = _spark_session(task.threads)
        data = SparkInteractions.from_interactions(Interactions(task.train), spark)
        prep = time.perf_counter() - t0
        model = SparkFactorizer(
            factors=task.factors,
            loss=loss,
            epochs=task.epochs,
            seed=task.seed,
            progress=False,
            blocks=task.threads,
            **overrides,
        )
        clock = _Clock()

        def tables() -> FactorTables:  # the factors live on the executors until the end
            return FactorTables(model.user_factors_, model.item_factors_, model.item_bias_)

        cb = clock.wrap(task.callback, tables)
        t0 = time.perf_counter()
        model.fit(data, callback=None if cb is None else (lambda epoch, *_: cb(epoch + 1)))
        seconds = time.perf_counter() - t0 - clock.excluded
        history = model.history_
        strata = [s for h in history[1:] or history for s in h["stratum_seconds"]]
        kernels = [s for h in history[1:] or history for s in h["kernel_seconds"]]
        return FitResult(
            tables(),
            seconds,
            len(history),
            float(sum(h["updates"] for h in history)),
            prep,
            {
                **model.get_params(),
                "master": f"local[{task.threads}]",
                "blocks": model.blocks_,
                "stratum_seconds_median": float(np.median(strata)),
                "kernel_seconds_median": float(np.median(kernels)),
                "first_epoch_seconds": history[0]["seconds"],
            },
        )

    return fit


def _spark_als(task: FitTask) -> FitResult:
    import pyarrow as pa
    from pyspark.ml.recommendation import ALS

    t0 = time.perf_counter()
    spark = _spark_session(task.threads)
    coo = task.train.tocoo()
    frame = spark.createDataFrame(
        pa.table(
            {
                "user": coo.row.astype(np.int32),
                "item": coo.col.astype(np.int32),
                "rating": np.ones(coo.nnz, dtype=np.float32),
            }
        )
    ).cache()
    frame.count()
    prep = time.perf_counter() - t0
    als = ALS(
        rank=task.factors,
        maxIter=task.epochs,
        seed=task.seed,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        numUserBlocks=task.threads,
        numItemBlocks=task.threads,
        **SPARK_ALS,
    )
    t0 = time.perf_counter()
    model = als.fit(frame)
    n_users, n_items = task.train.shape
    user_factors = _spark_factor_table(model.userFactors, n_users, task.factors)
    item_factors = _spark_factor_table(model.itemFactors, n_items, task.factors)
    seconds = time.perf_counter() - t0
    frame.unpersist()
    return FitResult(
        FactorTables(user_factors, item_factors),
        seconds,
        task.epochs,
        None,
        prep,
        {
            "rank": task.factors,
            "maxIter": task.epochs,
            **SPARK_ALS,
            "master": f"local[{task.threads}]",
        },
    )


def _spark_factor_table(frame: Any, n: int, k: int) -> np.ndarray:
    """MLlib's ``(id, features)`` factor frame as an ``(n, k)`` float32 table (rows of ids
    ALS never saw stay 0)."""
    table = frame.toArrow()
    ids = table.column("id").to_numpy()
    out = np.zeros((n, k), dtype=np.float32)
    out[ids] = np.asarray(table.column("features").to_pylist(), dtype=np.float32)
    return out


# ---------------------------------------------------------------------- baseline
def _popularity(task: FitTask) -> FitResult:
    """Every user gets the items ranked by their number of training users
    (:func:`cfcore.metrics.popularity_scorer`'s ranking, as factor tables: zero factors and
    the counts as item biases)."""
    t0 = time.perf_counter()
    n_users, n_items = task.train.shape
    counts = np.bincount(task.train.indices, minlength=n_items).astype(np.float32)
    seconds = time.perf_counter() - t0
    zeros = np.zeros((n_users, 1), np.float32)
    tables = FactorTables(zeros, np.zeros((n_items, 1), np.float32), counts)
    if task.callback is not None:
        task.callback(1, lambda: tables)
    return FitResult(tables, seconds, 1, None)


# ---------------------------------------------------------------------- registry
_CF = "collabfeat"
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "collabfeat-squared",
            "cfcore.factorize",
            _CF,
            "squared",
            "positives + sampled negatives per epoch (own counter); library defaults",
            _collabfeat("squared"),
        ),
        Method(
            "collabfeat-squared-fang",
            "cfcore.factorize",
            _CF,
            "squared",
            "positives + sampled negatives per epoch (own counter); Fang et al.'s setting "
            "(2 negatives drawn once, plain SGD, λ 0.01; libmf's problem), η 0.05 ÷ √(1+epoch)",
            _collabfeat("squared", **FANG_FEW_EPOCHS),
        ),
        Method(
            "collabfeat-squared-random",
            "cfcore.factorize",
            _CF,
            "squared",
            "as collabfeat-squared-fang; entries visited in uniformly random order "
            "(order='random')",
            _collabfeat("squared", "random", **FANG_FEW_EPOCHS),
        ),
        Method(
            "collabfeat-logistic",
            "cfcore.factorize",
            _CF,
            "logistic",
            "positives + sampled negatives per epoch (own counter)",
            _collabfeat("logistic"),
        ),
        Method(
            "collabfeat-bpr",
            "cfcore.factorize",
            _CF,
            "bpr",
            "positives per epoch, one triple each (own counter)",
            _collabfeat("bpr"),
        ),
        Method(
            "collabfeat-warp",
            "cfcore.factorize",
            _CF,
            "warp",
            "positives per epoch, one update attempt each (own counter); library defaults "
            "(up to 50 draws per positive)",
            _collabfeat("warp"),
        ),
        Method(
            "collabfeat-warp-10",
            "cfcore.factorize",
            _CF,
            "warp",
            "positives per epoch, one update attempt each (own counter); up to 10 draws per "
            "positive, LightFM's default: lightfm-warp's problem",
            _collabfeat("warp", max_sampled=10),
        ),
        Method(
            "libmf-squared",
            "libmf",
            "libmf",
            "squared",
            "positives + sampled negatives per iteration",
            _libmf(0, True),
            callbacks=False,
            warmup=False,
        ),
        Method(
            "libmf-bpr-row",
            "libmf",
            "libmf",
            "bpr",
            "positives per iteration (fun=10)",
            _libmf(10, False),
            callbacks=False,
            warmup=False,
        ),
        Method(
            "implicit-bpr",
            "implicit",
            "implicit",
            "bpr",
            "nnz sampled triples per epoch",
            _implicit_bpr,
        ),
        Method("implicit-als", "implicit", "implicit", "als", "not SGD: epochs/s", _implicit_als),
        Method(
            "popularity",
            "numpy",
            "numpy",
            "baseline",
            "no training: items ranked by training users",
            _popularity,
        ),
        Method(
            "lightfm-warp",
            "lightfm",
            "lightfm",
            "warp",
            "positives per epoch (one update attempt each)",
            _lightfm("warp"),
        ),
        Method("lightfm-bpr", "lightfm", "lightfm", "bpr", "positives per epoch", _lightfm("bpr")),
        Method(
            "cornac-bpr",
            "cornac",
            "cornac",
            "bpr",
            "nnz sampled triples per epoch",
            _cornac_bpr,
            callbacks=False,
        ),
        Method(
            "spark-dsgd-squared",
            "pyspark",
            "pyspark",
            "squared",
            "positives + sampled negatives per epoch (own counter); DSGD on local[threads]",
            _spark_dsgd("squared"),
        ),
        Method(
            "spark-dsgd-bpr",
            "pyspark",
            "pyspark",
            "bpr",
            "positives per epoch with a negative in the same item block (own counter)",
            _spark_dsgd("bpr"),
        ),
        Method(
            "spark-als",
            "pyspark",
            "pyspark",
            "als",
            "not SGD: epochs/s (MLlib ALS, implicitPrefs)",
            _spark_als,
            callbacks=False,
        ),
    )
}
