"""The examples' code paths run (on small data), so that they cannot rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _two_groups(n_users: int = 60, n_items: int = 40, seed: int = 0) -> sp.csr_matrix:
    """Two groups of users, each viewing 12 random items of its own half of the catalogue."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        half = (u % 2) * (n_items // 2)
        items = half + rng.choice(n_items // 2, 12, replace=False)
        rows += [u] * len(items)
        cols += items.tolist()
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), (n_users, n_items))


def test_implicit_dropin_runs_implicit_code_on_every_model():
    pytest.importorskip("implicit")
    dropin = _example("implicit_dropin")
    factories = dropin.model_factories(factors=8, seed=0)
    assert {
        "implicit BPR",
        "implicit ALS",
        "cfcore squared",
        "cfcore logistic",
        "cfcore bpr",
        "cfcore warp",
    } <= set(factories)
    rows = dropin.compare(_two_groups(), factories, K=5, seed=0)
    assert [r["model"] for r in rows] == list(factories)
    for row in rows:  # the held-out views are of the user's own group: well above chance
        assert row["precision"] > 0.3, row
    table = dropin.markdown_table(rows, 5)
    assert table.count("\n") == len(rows) + 1 and "| cfcore warp |" in table
