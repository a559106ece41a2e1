"""``--backend spark``: the engine's commands on Apache Spark (:mod:`cfcore.spark`).

``cfcore factorize`` and ``cfcore sample-negatives`` take ``--backend spark`` (and
``--master``); the commands themselves stay in :mod:`cfcore.cli.engine`, which hands the
work here after parsing. INPUT is read by Spark when it is Parquet (a file or a dataset
directory, any URI Spark reads) or CSV/TSV; other inputs (MovieLens files, ``.npz``, dataset
names) are read on the driver and handed to Spark.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

BACKENDS = ("local", "spark")


def backend_options(f: F) -> F:
    """``--backend local|spark`` and ``--master URL`` (checked: ``--master`` needs spark)."""

    @functools.wraps(f)
    def wrapper(*args: Any, backend: str, master: str | None, **kwargs: Any) -> Any:
        if master is not None and backend != "spark":
            raise click.UsageError("--master applies to --backend spark only")
        return f(*args, backend=backend, master=master, **kwargs)

    wrapper = click.option(
        "--master",
        default=None,
        metavar="URL",
        help="Spark master for --backend spark: local[N] (N cores in this process), "
        "local[*], spark://host:7077, yarn, k8s://... [default: the active session's, "
        "else local[*]].",
    )(wrapper)
    wrapper = click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default="local",
        show_default=True,
        help="local: this machine's Numba kernels; spark: the same kernels inside Spark "
        "executors (needs pyspark and Java 17+; see `cfcore.spark`).",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


def spark_input(
    source: str,
    master: str | None,
    fmt: str,
    data_dir: Path | None,
    min_rating: float | None,
    read_options: dict[str, Any],
):  # -> SparkInteractions
    """INPUT as :class:`cfcore.spark.SparkInteractions` on the session for ``master``."""
    from cfcore.cli.common import load_input
    from cfcore.spark import SparkInteractions, spark_session

    spark = spark_session(master)
    if "://" in source or os.path.exists(source):
        return SparkInteractions.read(spark, source, fmt, min_rating=min_rating, **read_options)
    inter = load_input(source, fmt, data_dir, min_rating, **read_options)  # a dataset name
    return SparkInteractions.from_interactions(inter, spark)


def factorize_on_spark(
    source: str,
    output: Path,
    params: dict[str, Any],
    master: str | None,
    blocks: int | None,
    quiet: bool,
    read: dict[str, Any],
) -> None:
    """``cfcore factorize --backend spark``: DSGD, then the same model file as locally —
    or, for an output not named ``*.npz``, a directory of Parquet factor tables written by
    the executors (:func:`cfcore.spark.load_tables` reads it back)."""
    from cfcore.spark import SparkFactorizer

    data = spark_input(source, master, **read)
    params = {k: v for k, v in params.items() if k != "threads"}
    tables = output.suffix != ".npz"  # a directory of Parquet factor tables
    model = SparkFactorizer(**params, blocks=blocks, collect=not tables)
    if not quiet:
        click.echo(
            f"{data!r} on Spark {data.spark.sparkContext.master}: DSGD over "
            f"{blocks or data.spark.sparkContext.defaultParallelism}² blocks",
            err=True,
        )

    def report(_epoch: int, _seconds: float, _loss: float) -> None:
        if not quiet:
            record = model.history_[-1]
            click.echo(
                f"epoch {record['epoch']}  loss {record['loss']:.4f}  "
                f"{record['seconds']:.2f} s ({len(record['stratum_seconds'])} strata)",
                err=True,
            )

    model.fit(data, callback=report)
    if tables:
        model.save_tables(output)
    else:
        model.save(output)
    click.echo(
        f"saved {data.n_users} users × {data.n_items} items × {model.factors} factors "
        f"({model.loss}, DSGD on {model.blocks_}² blocks) → {output}"
    )


def sample_negatives_on_spark(
    source: str,
    output: Path,
    ratio: float,
    weighting: str,
    seed: int,
    master: str | None,
    read: dict[str, Any],
) -> None:
    """``cfcore sample-negatives --backend spark``: Parquet (raw ids) or the ``.npz``."""
    from cfcore.spark import sample_negatives
    from cfcore.spark.sampling import collect_negatives

    data = spark_input(source, master, **read)
    negatives = sample_negatives(data, ratio, weighting, seed)
    if output.suffix == ".npz":
        sample = collect_negatives(data, negatives, ratio, weighting, seed)
        sample.meta.update({"source": str(source), "backend": "spark"})
        sample.save(output)
        count = sample.nnz
    else:
        from cfcore.spark.tables import write_parquet

        count = write_parquet(data.with_raw_ids(negatives), output)
    click.echo(
        f"{count} negatives for {data.n_users} users × {data.n_items} items ({weighting}, "
        f"ratio {ratio:g}, seed {seed}, on Spark) → {output}"
    )
