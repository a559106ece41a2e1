"""Tag prediction (Denton et al. 2015): collabfeat's tag models against LightFM, quality and speed.

``python -m bench run tags`` runs one job per (dataset, method, threads) and reports P@1, R@10
and A@10 on the held-out examples with the training speed in examples/s (training tag
applications per second of training, evaluation excluded).

Datasets (seeded):

- ``synth-users`` — :func:`cfcore.tagdata.synthetic_tags` at 3,000 users × 1,500 items
  (12 tagged items per user, 64-d item descriptors); disjoint users 80/20 (the paper's split),
  users described by their attributes (age, gender, country);
- ``synth-items`` — the same data, each user's examples split 80/20, a learned embedding per
  user;
- ``ml-latest-small`` — MovieLens ``tags.csv`` (every tag), item descriptors = the item
  factors of :class:`cfcore.Factorizer` (64 factors, 20 epochs, seed 0) on all its ratings;
  examples whose movie has no rating are dropped; each user's examples split 80/20, learned
  user embeddings.

Methods: ``collabfeat-frequency``, ``collabfeat-bilinear``, ``collabfeat-user-biased``,
``collabfeat-3-way`` (:class:`cfcore.tags.TagModel` with its defaults: d = 64, K = 100, WARP
with up to 1000 draws, lr schedule on a 10% validation split, best epoch kept) and
``lightfm-warp``: LightFM (WARP, AdaGrad, learning rate 0.05) on the same problem — its
*users* are the examples, whose features are the item descriptor and the user's descriptor
(attributes, or a one-hot user id), its *items* are the tags (identity features) — which is
Denton's user-biased model plus a tag bias. LightFM gets the same dimension, the same
``max_sampled`` and the same validation split: it trains up to 30 epochs and the epoch with
the best validation score (mean of P@1, R@10, A@10) is reported, as collabfeat keeps its best
epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

DATASETS = ("synth-users", "synth-items", "ml-latest-small")
METHODS = (
    "collabfeat-frequency",
    "collabfeat-bilinear",
    "collabfeat-user-biased",
    "collabfeat-3-way",
    "lightfm-warp",
)
DIM = 64
MAX_SAMPLED = 1000
LIGHTFM_EPOCHS = 30
VALIDATION = 0.1


@dataclass
class TagSplit:
    """A tag data set split for the benchmark."""

    name: str
    train: Any  # TagData
    test: Any  # TagData
    item_vectors: Any  # ItemVectors
    user_attributes: Any  # UserAttributes or None
    meta: dict[str, Any]


def load(name: str, seed: int = 0) -> TagSplit:
    """The named data set, split (see the module docstring)."""
    from cfcore.tagdata import synthetic_tags

    if name in ("synth-users", "synth-items"):
        syn = synthetic_tags(n_users=3000, n_items=1500, per_user=12, n_features=DIM, seed=seed)
        by = name.split("-")[1]
        train, test = syn.data.split(by, 0.2, seed)
        users = syn.user_attributes() if by == "users" else None
        data, vectors = syn.data, syn.item_vectors
    elif name == "ml-latest-small":
        from cfcore import Factorizer, load_movielens
        from cfcore.datasets import dataset_path
        from cfcore.readers import read_tags
        from cfcore.vectors import as_item_vectors

        views = load_movielens(name)
        factors = Factorizer(factors=DIM, epochs=20, seed=seed, progress=False).fit(views)
        vectors = as_item_vectors(factors)
        data, _ = read_tags(dataset_path(name) / "tags.csv").only(items=vectors.ids)
        train, test = data.split("items", 0.2, seed)
        users = None
    else:
        raise ValueError(f"unknown tag dataset {name!r}; choose from {', '.join(DATASETS)}")
    meta = {
        "examples": data.n_examples,
        "applications": data.n_applications,
        "tags": data.n_tags,
        "users": len(np.unique(data.users)),
        "items": len(np.unique(data.items)),
        "descriptor_dim": vectors.dim,
        "train_examples": train.n_examples,
        "test_examples": test.n_examples,
        "user_descriptor": "attributes" if users is not None else "learned embedding",
    }
    return TagSplit(name, train, test, vectors, users, meta)


# ---------------------------------------------------------------------------- methods
def _collabfeat(split: TagSplit, model_name: str, threads: int, seed: int) -> dict[str, Any]:
    from cfcore.tags import TagModel, evaluate_tags

    def make() -> Any:
        return TagModel(
            model_name,
            dim=DIM,
            max_sampled=MAX_SAMPLED,
            validation_fraction=VALIDATION,
            threads=threads,
            seed=seed,
            progress=False,
        )

    # untimed: load the compiled kernels
    small = split.train.subset(np.arange(min(50, split.train.n_examples)))
    make().set_params(epochs=1).fit(small, split.item_vectors, split.user_attributes)
    t0 = time.perf_counter()
    model = make().fit(split.train, split.item_vectors, split.user_attributes)
    seconds = time.perf_counter() - t0
    out = evaluate_tags(model, split.test, split.item_vectors, split.user_attributes)
    train_seconds = sum(h["seconds"] for h in model.history_)
    return {
        **out,
        "fit_seconds": seconds,
        "train_seconds": train_seconds,
        "epochs": len(model.history_),
        "best_epoch": model.best_epoch_,
        "examples_per_s": None if model_name == "frequency" else model.examples_per_s_,
        "params": {k: v for k, v in model.get_params().items() if k != "progress"},
    }


def _rows(split: TagSplit, data: Any, user_ids: np.ndarray) -> sp.csr_matrix:
    """LightFM user features of the examples of ``data``: [item descriptor, user descriptor]."""
    from cfcore.ids import id_positions
    from cfcore.vectors import l2_normalize

    X = l2_normalize(split.item_vectors.vectors, split.item_vectors.ids)
    x = X[id_positions(split.item_vectors.ids, data.items, unknown="item")]
    if split.user_attributes is not None:
        ua = split.user_attributes
        u = sp.csr_matrix(ua.values[id_positions(ua.ids, data.users, unknown="user")])
    else:
        cols = id_positions(user_ids, data.users)
        known = cols >= 0
        u = sp.csr_matrix(
            (np.ones(int(known.sum()), np.float32), (np.flatnonzero(known), cols[known])),
            shape=(data.n_examples, len(user_ids)),
        )
    return sp.hstack([sp.csr_matrix(x), u], format="csr", dtype=np.float32)


def _lightfm(split: TagSplit, threads: int, seed: int) -> dict[str, Any]:
    from lightfm import LightFM

    from cfcore.tags import MEASURES, tag_measures

    fit_part, val = split.train.split("items", VALIDATION, seed)  # TagModel's validation
    user_ids = np.unique(split.train.users)
    parts = [fit_part, val, split.test]
    features = sp.vstack([_rows(split, p, user_ids) for p in parts], format="csr")
    offsets = np.cumsum([0] + [p.n_examples for p in parts])
    n_rows, n_tags = offsets[-1], fit_part.n_tags
    coo = fit_part.tags.tocoo()
    interactions = sp.coo_matrix(
        (np.ones(coo.nnz, np.float32), (coo.row, coo.col)), shape=(n_rows, n_tags)
    )
    # untimed warm-up (thread pool, allocation)
    LightFM(no_components=8, loss="warp", random_state=seed).fit_partial(
        interactions, user_features=features, epochs=1, num_threads=threads
    )
    model = LightFM(no_components=DIM, loss="warp", max_sampled=MAX_SAMPLED, random_state=seed)

    def measures(lo: int, hi: int, tags: sp.csr_matrix) -> dict[str, float]:
        _, emb = model.get_user_representations(features[lo:hi])
        tag_bias, tag_emb = model.get_item_representations()
        scores = emb @ tag_emb.T + tag_bias
        return tag_measures(lambda rows: scores[rows], tags)

    best, best_test, best_epoch, seconds = -np.inf, None, 0, 0.0
    test = split.test.with_vocabulary(fit_part.tag_names)
    for epoch in range(1, LIGHTFM_EPOCHS + 1):
        t0 = time.perf_counter()
        model.fit_partial(interactions, user_features=features, epochs=1, num_threads=threads)
        seconds += time.perf_counter() - t0
        v = measures(offsets[1], offsets[2], val.tags)
        score = float(np.mean([v[m] for m in MEASURES]))
        if score > best:
            best, best_epoch = score, epoch
            best_test = measures(offsets[2], offsets[3], test.tags)
    assert best_test is not None
    return {
        **best_test,
        "fit_seconds": seconds,
        "train_seconds": seconds,
        "epochs": LIGHTFM_EPOCHS,
        "best_epoch": best_epoch,
        "examples_per_s": fit_part.n_applications * LIGHTFM_EPOCHS / seconds,
        "params": {
            "no_components": DIM,
            "loss": "warp",
            "learning_schedule": "adagrad",
            "learning_rate": 0.05,
            "max_sampled": MAX_SAMPLED,
            "user_features": "item descriptor + user descriptor per example",
        },
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one ``tags`` job: ``dataset``, ``method``, ``threads``."""
    import os

    seed = int(job.get("seed", 0))
    threads = int(job["threads"])
    split = load(job["dataset"], seed)
    if job["method"] == "lightfm-warp":
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        result = _lightfm(split, threads, seed)
        library = "lightfm"
    else:
        result = _collabfeat(split, job["method"][len("collabfeat-") :], threads, seed)
        library = "collabfeat"
    return {
        "kind": "tags",
        "dataset": job["dataset"],
        "dataset_meta": split.meta,
        "method": job["method"],
        "library": library,
        "threads": threads,
        **result,
    }


def jobs(threads: list[int]) -> list[dict[str, Any]]:
    """Every method on every dataset at the largest thread count; the trained models and
    LightFM also at the others (speed)."""
    top = max(threads)
    out = []
    for d in DATASETS:
        for m in METHODS:
            for t in sorted(threads) if m not in ("collabfeat-frequency",) else [top]:
                out.append(
                    {"kind": "tags", "dataset": d, "method": m, "threads": t, "timeout": 1200}
                )
    return out


# ---------------------------------------------------------------------------- report
def section(records: list[dict[str, Any]]) -> str:
    """Markdown: per dataset, one row per (method, threads), and LightFM ÷ collabfeat ratios."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("kind") == "tags"]
    if not ok:
        return "_No tag-prediction jobs in this run._"
    parts = []
    for d in [d for d in DATASETS if any(r["dataset"] == d for r in ok)]:
        rows = sorted(
            (r for r in ok if r["dataset"] == d),
            key=lambda r: (METHODS.index(r["method"]), r["threads"]),
        )
        meta = rows[0]["dataset_meta"]
        parts += [
            f"### {d}",
            "",
            f"{meta['examples']:,} examples ({meta['applications']:,} tag applications, "
            f"{meta['tags']:,} tags, {meta['users']:,} users, {meta['items']:,} items); "
            f"train {meta['train_examples']:,} / test {meta['test_examples']:,}; "
            f"{meta['descriptor_dim']}-d item descriptors; users: {meta['user_descriptor']}.",
            "",
            "| method | threads | P@1 | R@10 | A@10 | examples/s | epochs (best) | fit s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            eps = "–" if r.get("examples_per_s") is None else f"{r['examples_per_s']:,.0f}"
            parts.append(
                f"| {r['method']} | {r['threads']} | {r['P@1']:.4f} | {r['R@10']:.4f} | "
                f"{r['A@10']:.4f} | {eps} | {r['epochs']} ({r['best_epoch']}) | "
                f"{r['fit_seconds']:.2f} |"
            )
        peer = {r["threads"]: r for r in rows if r["method"] == "lightfm-warp"}
        ratios = []
        for r in rows:
            p = peer.get(r["threads"])
            if p and r["library"] == "collabfeat" and r.get("examples_per_s"):
                ratios.append(
                    f"{r['method']} ÷ lightfm-warp at {r['threads']} thread(s): "
                    f"{r['examples_per_s'] / p['examples_per_s']:.1f}× examples/s, "
                    f"P@1 {r['P@1']:.4f} vs {p['P@1']:.4f}"
                )
        if ratios:
            parts += ["", *[f"- {x}" for x in ratios]]
        parts.append("")
    return "\n".join(parts)
