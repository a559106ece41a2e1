"""The ``tags`` benchmark suite: its jobs, the LightFM mapping and the report table."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bench import suites
from bench import tags as bt
from cfcore.tagdata import synthetic_tags


def test_suite_lists_every_method_on_every_dataset():
    jobs = suites.jobs("tags", [1, 2])
    assert {j["kind"] for j in jobs} == {"tags"}
    assert {(j["dataset"], j["method"]) for j in jobs} == {
        (d, m) for d in bt.DATASETS for m in bt.METHODS
    }
    assert {j["threads"] for j in jobs if j["method"] == "lightfm-warp"} == {1, 2}
    only = suites.jobs("tags", [1], datasets=["synth-items"])
    assert {j["dataset"] for j in only} == {"synth-items"}


def _tiny_split(by: str) -> bt.TagSplit:
    syn = synthetic_tags(n_users=120, n_items=60, per_user=12, n_features=16, seed=3)
    train, test = syn.data.split(by, 0.2, 0)
    users = syn.user_attributes() if by == "users" else None
    return bt.TagSplit(f"tiny-{by}", train, test, syn.item_vectors, users, {})


@pytest.mark.parametrize("by", ["users", "items"])
def test_lightfm_sees_item_and_user_descriptors_as_user_features(by):
    split = _tiny_split(by)
    user_ids = np.unique(split.train.users)
    rows = bt._rows(split, split.test, user_ids)
    assert rows.shape[0] == split.test.n_examples
    x = rows[:, :16].toarray()
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)  # L2-normalised
    u = rows[:, 16:].toarray()
    if by == "users":
        assert u.shape[1] == split.user_attributes.n_features
    else:  # one-hot user id, every test user known from training
        np.testing.assert_array_equal(u.sum(1), 1)


@pytest.mark.skipif(importlib.util.find_spec("lightfm") is None, reason="lightfm not installed")
def test_lightfm_method_runs_and_reports(monkeypatch):
    monkeypatch.setattr(bt, "LIGHTFM_EPOCHS", 2)
    out = bt._lightfm(_tiny_split("items"), threads=1, seed=0)
    assert 0 <= out["P@1"] <= 1 and out["examples_per_s"] > 0 and out["best_epoch"] in (1, 2)


def test_section_renders_ratios():
    meta = {
        "examples": 10, "applications": 12, "tags": 5, "users": 3, "items": 4,
        "descriptor_dim": 8, "train_examples": 8, "test_examples": 2,
        "user_descriptor": "learned embedding",
    }  # fmt: skip
    rec = {"status": "ok", "kind": "tags", "dataset": "synth-items", "dataset_meta": meta,
           "threads": 1, "P@1": 0.5, "R@10": 0.6, "A@10": 0.7, "epochs": 3, "best_epoch": 2,
           "fit_seconds": 1.0}  # fmt: skip
    records = [
        {**rec, "method": "collabfeat-user-biased", "library": "collabfeat", "examples_per_s": 8e4},
        {**rec, "method": "lightfm-warp", "library": "lightfm", "examples_per_s": 1e4},
    ]
    md = bt.section(records)
    assert "### synth-items" in md and "| collabfeat-user-biased | 1 | 0.5000 |" in md
    assert "8.0× examples/s" in md
