"""DSGD's blocking and stratum schedule (numpy; one test checks the Spark SQL form)."""

from __future__ import annotations

import numpy as np
import pytest

from cfcore.spark.blocking import (
    Blocking,
    item_block_at,
    stratum_blocks,
    stratum_order,
    user_block_at,
)


@pytest.mark.parametrize("n,p", [(943, 2), (1682, 3), (10, 4), (7, 7), (1, 1), (100_003, 16)])
def test_blocks_partition_the_rows_evenly_and_local_indices_invert(n, p):
    blocking = Blocking.of(n, p, seed=3, salt=1)
    rows = np.arange(n)
    block, local = blocking.block(rows), blocking.local(rows)
    sizes = np.bincount(block, minlength=p)
    assert sizes.tolist() == blocking.sizes.tolist()
    assert sizes.max() - sizes.min() <= 1
    for b in range(p):
        members = blocking.rows(b)
        assert (block[members] == b).all()
        assert (local[members] == np.arange(len(members))).all()


def test_blocks_do_not_follow_the_id_order():
    """Consecutive ids (often time- or popularity-ordered) are spread over the blocks."""
    blocking = Blocking.of(10_000, 4, seed=0, salt=1)
    first = blocking.block(np.arange(1000))
    assert np.bincount(first, minlength=4).min() > 200


@pytest.mark.spark
def test_sql_expressions_match_numpy(spark):
    blocking = Blocking.of(1682, 3, seed=1, salt=2)
    block, local = blocking.sql("id")
    got = spark.range(1682).selectExpr("id", f"{block} as b", f"{local} as l").toArrow()
    ids = got.column("id").to_numpy()
    assert (got.column("b").to_numpy() == blocking.block(ids)).all()
    assert (got.column("l").to_numpy() == blocking.local(ids)).all()


@pytest.mark.parametrize("p", [1, 2, 5])
def test_strata_cover_every_block_once_without_sharing_rows(p):
    seen = set()
    order = stratum_order(p, seed=0, epoch=3)
    assert sorted(order) == list(range(p))
    for d in order:
        blocks = stratum_blocks(p, d)
        assert len({b for b, _ in blocks}) == p and len({j for _, j in blocks}) == p
        for b, j in blocks:
            assert item_block_at(p, d, b) == j and user_block_at(p, d, j) == b
        seen.update(blocks)
    assert len(seen) == p * p


def test_stratum_order_changes_between_epochs_and_is_seeded():
    orders = {tuple(stratum_order(6, seed=0, epoch=e)) for e in range(10)}
    assert len(orders) > 1
    assert stratum_order(6, 1, 2) == stratum_order(6, 1, 2)


def test_cfcore_and_its_cli_load_without_pyspark():
    """cfcore.spark is imported lazily: cfcore, its CLI and the package itself load
    without starting (or even importing) pyspark."""
    import subprocess
    import sys

    code = (
        "import sys, cfcore, cfcore.cli.main, cfcore.spark, cfcore.spark.session; "
        "sys.exit('pyspark' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
