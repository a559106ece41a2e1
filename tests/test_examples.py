"""The examples' code paths run (on small data), so that they cannot rot."""

from __future__ import annotations

import importlib.util
import sys
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


def test_embedded_factorizer_recommends_and_finds_similar_items_from_a_csr():
    ex = _example("embed_recommender")
    user_items = _two_groups()
    coo = user_items.tocoo()
    # repeated (user, item) pairs count once
    rebuilt = ex.to_csr(np.r_[coo.row, coo.row[:5]], np.r_[coo.col, coo.col[:5]], 60, 40)
    assert (rebuilt != user_items).nnz == 0 and set(rebuilt.data.tolist()) == {1.0}
    service = ex.Recommender(ex.fit(rebuilt, factors=8, epochs=30, threads=1), rebuilt)
    for user in (0, 1, 7, 30):  # group u % 2 views items of half u % 2 only
        recs = service.recommend(user, 5)
        assert len(recs) == 5
        seen = set(rebuilt[user].indices.tolist())
        assert all(i // 20 == user % 2 and i not in seen for i, _ in recs), (user, recs)
        assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    for item in (0, 25):
        similar = service.similar(item, 8)
        assert item not in [i for i, _ in similar]
        assert all(i // 20 == item // 20 for i, _ in similar), (item, similar)


def test_embed_script_runs_on_ml100k(ml100k_path, monkeypatch, capsys):
    ex = _example("embed_recommender")
    monkeypatch.setattr(sys, "argv", ["embed_recommender.py", "--user", "3", "-n", "4"])
    ex.main()
    out = capsys.readouterr().out
    assert "943 users × 1682 items, 100000 views" in out
    assert out.count("recommend(user 3): [(") == 1 and "similar_items(item 0): [(" in out


@pytest.mark.parametrize("name", ["simulated", "movielens_posters"])
def test_example_jobs_are_valid(name):
    from cfcore.pipeline import load_job

    if name == "movielens_posters":
        from conftest import require_dataset

        require_dataset("ml-100k")
        require_dataset("movielens-posters")
    job = load_job(EXAMPLES / f"{name}.toml")
    assert job.stages()[0] == "data" and job.stages()[-1] == "report"
    assert job.default_run_dir().as_posix() == f"runs/{name}"
