"""The examples in examples/: the embedding script serves right answers; the job files are valid."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _blocks(n_users: int = 60, n_items: int = 40, groups: int = 2, seed: int = 0):
    """Users of group g view most items of block g and nothing else (the right answer is
    known: recommend block-g items, and an item's neighbours are its block's)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    per = n_items // groups
    for u in range(n_users):
        g = u % groups
        chosen = rng.choice(per, size=int(per * 0.6), replace=False) + g * per
        users += [u] * len(chosen)
        items += chosen.tolist()
    return np.array(users), np.array(items), per


def test_embedded_factorizer_recommends_and_finds_similar_items_from_a_csr():
    ex = _load("embed_recommender")
    users, items, per = _blocks()
    user_items = ex.to_csr(np.r_[users, users[:5]], np.r_[items, items[:5]], 60, 40)
    assert user_items.nnz == len(users) and set(user_items.data.tolist()) == {1.0}
    service = ex.Recommender(ex.fit(user_items, factors=8, epochs=30, threads=1), user_items)
    for user in (0, 1, 7, 30):
        recs = service.recommend(user, 5)
        assert len(recs) == 5
        seen = set(user_items[user].indices.tolist())
        block = user % 2
        assert all(i // per == block and i not in seen for i, _ in recs), (user, recs)
        assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    for item in (0, 25):
        similar = service.similar(item, 8)
        assert item not in [i for i, _ in similar]
        assert all(i // per == item // per for i, _ in similar), (item, similar)


def test_embed_script_runs_on_ml100k(ml100k_path, monkeypatch, capsys):
    ex = _load("embed_recommender")
    monkeypatch.setattr(sys, "argv", ["embed_recommender.py", "--user", "3", "-n", "4"])
    ex.main()
    out = capsys.readouterr().out
    assert "943 users × 1682 items, 100000 views" in out
    assert out.count("recommend(user 3): [(") == 1 and "similar_items(item 0): [(" in out


@pytest.mark.parametrize("name", ["simulated", "movielens_posters"])
def test_example_jobs_are_valid(name):
    from cfcore.pipeline import load_job

    path = EXAMPLES / f"{name}.toml"
    if name == "movielens_posters":
        from conftest import require_dataset

        require_dataset("ml-100k")
        require_dataset("movielens-posters")
    job = load_job(path)
    assert job.stages()[0] == "data" and job.stages()[-1] == "report"
    assert job.default_run_dir().as_posix() == f"runs/{name}"
