"""Memory per interaction: the reader and the factorizer make no copies they do not need.

tracemalloc counts numpy's allocations exactly (not pyarrow's, not the interpreter's), so
these bounds are deterministic; the peak RSS of a whole `cfcore factorize` run is measured
by the benchmark (`bench/`, "Reader and memory").
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from cfcore.factorize import Factorizer
from cfcore.readers import read_interactions

N_USERS, N_ITEMS, NNZ = 3000, 2000, 300_000


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    rng = np.random.default_rng(0)
    users = rng.integers(1, N_USERS + 1, NNZ)
    items = rng.integers(1, N_ITEMS + 1, NNZ)
    path = tmp_path_factory.mktemp("memory") / "views.csv"
    lines = [f"{u},{i},4" for u, i in zip(users.tolist(), items.tolist(), strict=True)]
    path.write_text("user_id,item_id,rating\n" + "\n".join(lines) + "\n")
    return path


def _peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_holds_a_few_bytes_per_row(views):
    read_interactions(views)  # imports and pyarrow's thread pools, outside the count
    inter, peak = _peak(lambda: read_interactions(views))
    assert inter.user_ids.dtype == np.int64 and inter.nnz > 0.9 * NNZ
    # The result (8 B/row: int32 indices + float32 ones) and its construction (the id
    # columns as int32, codes, one sort key): strings or int64 copies of the columns would
    # cost several times this.
    assert peak / NNZ < 30, f"{peak / NNZ:.1f} bytes per row"


def test_fit_copies_nothing_of_the_interactions(views):
    inter = read_interactions(views)
    factors = 16
    model = Factorizer(factors=factors, epochs=1, threads=1, seed=0, progress=False)
    model.fit(read_interactions(views))  # compile/load the kernels outside the count
    _, peak = _peak(lambda: model.fit(inter))
    tables = (inter.n_users + inter.n_items) * factors * 4
    # indptrs, counts, alias tables, the sampler's per-thread scratch...
    per_row = inter.n_users * 48 + inter.n_items * 64
    # The default (grouped) order draws each user's negatives in the kernel: storing them
    # (neg_ratio × 4 B = 16 B per interaction) or a copy of the positives (4-8 B) breaks this.
    assert peak < tables + per_row + 0.5 * inter.nnz, (
        f"{(peak - tables - per_row) / inter.nnz:.1f} bytes per interaction extra"
    )
