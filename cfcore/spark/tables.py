"""Factor models as Parquet tables: written by the executors, read back where they fit.

A directory ``DIR`` holds ``users/`` and ``items/`` (Parquet datasets, one row per user /
item: the raw id as ``user`` / ``item``, its row ``index`` in the model, ``factors`` as an
array of float and ``bias``; items also ``popularity``) and ``model.json`` (the
``factor-tables`` kind, the parameters and the history). :func:`load_tables` turns it into
the ordinary ``.npz`` model (:mod:`cfcore.model` stays the one reader of factor models) and
loads that.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfcore.errors import InputError, ModelFormatError
from cfcore.spark.data import ITEM, RAW_ITEM, RAW_USER, USER

KIND = "factor-tables"

_ROWS = T.StructType(
    [
        T.StructField("table", T.StringType(), False),
        T.StructField("index", T.LongType(), False),
        T.StructField("factors", T.ArrayType(T.FloatType(), False), False),
        T.StructField("bias", T.FloatType(), False),
    ]
)


def write_parquet(frame: DataFrame, path: str | os.PathLike[str]) -> int:
    """Write ``frame`` as a Parquet dataset at ``path``; returns its number of rows.

    A local path is written atomically (a temporary directory beside it, renamed on
    success) and must not exist; a URI (``hdfs://``...) is written by Spark's committer.
    """
    text = os.fspath(path)
    frame = frame.cache()
    rows = int(frame.count())
    if "://" in text:
        frame.write.mode("errorifexists").parquet(text)
        return rows
    target = Path(text)
    if target.exists():
        raise InputError(f"{target}: exists; remove it or choose another name")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        frame.write.mode("overwrite").parquet(str(tmp))
        os.replace(tmp, target)
    finally:
        frame.unpersist()
        if tmp.exists():
            shutil.rmtree(tmp)
    return rows


def _block_rows(layout: Any):
    def rows(record: tuple) -> Any:
        kind, b, table, bias, _acc = record[1]
        index = (layout.users if kind == "X" else layout.items).rows(b)
        name = "users" if kind == "X" else "items"
        for r in range(len(index)):
            yield (name, int(index[r]), table[r].tolist(), float(bias[r]))

    return rows


def write_tables(model: Any, path: str | os.PathLike[str]) -> str:
    """Write a :class:`cfcore.spark.SparkFactorizer`'s factors to the directory ``path``."""
    from cfcore.spark.session import spark_session

    blocks = getattr(model, "factor_blocks_", None)
    if blocks is not None:
        data, layout = model.trained_on_
        spark = data.spark
        rows = spark.createDataFrame(blocks.flatMap(_block_rows(layout)), _ROWS)
        user_map, item_map = data.user_map, data.item_map
        popularity = data.item_popularity()
    else:
        model._check_fitted()
        spark = spark_session()
        frames = []
        for name, table, bias in (
            ("users", model.user_factors_, model.user_bias_),
            ("items", model.item_factors_, model.item_bias_),
        ):
            n = table.shape[0]
            bias = np.zeros(n, np.float32) if bias is None else bias
            frames.append(
                pa.table(
                    {
                        "table": [name] * n,
                        "index": np.arange(n, dtype=np.int64),
                        "factors": pa.FixedSizeListArray.from_arrays(
                            pa.array(table.ravel()), table.shape[1]
                        ).cast(pa.list_(pa.float32())),
                        "bias": bias,
                    }
                )
            )
        rows = spark.createDataFrame(pa.concat_tables(frames))
        user_map = spark.createDataFrame(
            pa.table({RAW_USER: model.user_ids_, USER: np.arange(len(model.user_ids_))})
        )
        item_map = spark.createDataFrame(
            pa.table({RAW_ITEM: model.item_ids_, ITEM: np.arange(len(model.item_ids_))})
        )
        popularity = model.item_popularity_
    target = os.fspath(path)
    if "://" not in target:
        Path(target).mkdir(parents=True, exist_ok=True)
    pops = spark.createDataFrame(
        pa.table({ITEM: np.arange(len(popularity)), "popularity": np.asarray(popularity)})
    )
    for name, id_map, raw, index in (
        ("users", user_map, RAW_USER, USER),
        ("items", item_map, RAW_ITEM, ITEM),
    ):
        frame = rows.where(F.col("table") == name).join(
            id_map.withColumnRenamed(index, "index"), "index"
        )
        columns = [raw, "index", "factors", "bias"]
        if name == "items":
            frame = frame.join(pops.withColumnRenamed(ITEM, "index"), "index")
            columns.append("popularity")
        write_parquet(frame.select(*columns), os.path.join(target, name))
    header = {
        "kind": KIND,
        "model": type(model).__name__,
        "params": model.get_params(),
        "history": getattr(model, "history_", []),
        "use_biases": bool(model.effective_params_.use_biases),
    }
    text = json.dumps(header, default=str)
    if "://" in target:
        spark.sparkContext.parallelize([text], 1).saveAsTextFile(os.path.join(target, "model.json"))
    else:
        from cfcore.io import atomic_write_text

        atomic_write_text(Path(target) / "model.json", text)
    return target


def load_tables(path: str | os.PathLike[str]):  # -> cfcore.Factorizer
    """Read a directory written by :func:`write_tables` into a :class:`cfcore.Factorizer`.

    Raises
    ------
    ModelFormatError
        Not a factor-tables directory, or its tables are inconsistent.
    """
    from cfcore.factorize import Factorizer
    from cfcore.io import save_artifact
    from cfcore.model import ARTIFACT_KIND

    root = Path(path)
    try:
        header = json.loads((root / "model.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise ModelFormatError(f"{root}: not a factor-tables directory (no model.json)") from None
    if header.get("kind") != KIND:
        raise ModelFormatError(f"{root}: expected {KIND}, found {header.get('kind')!r}")
    arrays: dict[str, np.ndarray] = {}
    for name, raw in (("users", RAW_USER), ("items", RAW_ITEM)):
        table = pq.read_table(root / name).sort_by("index")
        index = table.column("index").to_numpy()
        if not np.array_equal(index, np.arange(len(index))):
            raise ModelFormatError(f"{root / name}: rows do not cover 0..{len(index) - 1}")
        flat = table.column("factors").combine_chunks().flatten().to_numpy()
        factors = flat.astype(np.float32).reshape(len(index), -1)
        ids = table.column(raw).to_numpy(zero_copy_only=False)
        singular = name[:-1]
        arrays[f"{singular}_factors"] = factors
        arrays[f"{singular}_ids"] = ids.astype(str) if ids.dtype == object else ids
        if header.get("use_biases"):
            arrays[f"{singular}_bias"] = table.column("bias").to_numpy().astype(np.float32)
        if name == "items":
            arrays["item_popularity"] = table.column("popularity").to_numpy().astype(np.int64)
    meta = {k: header[k] for k in ("model", "params", "history") if k in header}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "model.npz"
        save_artifact(npz, ARTIFACT_KIND, arrays, meta)
        return Factorizer.load(npz)
