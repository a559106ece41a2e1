"""implicit code, unchanged, with ``cfcore.Factorizer`` swapped in for implicit's models.

:func:`implicit_workflow` is what a user of implicit writes — ``fit``, implicit's own
``evaluation.ranking_metrics_at_k``, ``recommend``, ``similar_items``, ``save``/``load`` and a
pickle round trip (a job queue) — and it is not changed: only the line that builds the model
is. It runs on ml-100k (every rating a view, read with ``cfcore.load_movielens`` from the data
directory) split by implicit's ``train_test_split``, for implicit's BPR and ALS and for every
collabfeat loss, and prints one table (Markdown):

    python examples/implicit_dropin.py                    # ml-100k, 64 factors, seed 0
    python examples/implicit_dropin.py --seed 1 --k 20

Each model runs at its library's defaults except ``factors`` (64 for all): implicit's BPR 100
iterations at learning rate 0.01, ALS 15 iterations; collabfeat 20 epochs with each loss's
defaults (``cfcore.factorize.LOSS_DEFAULTS``). All use every core (``num_threads=0``,
``threads=0``).
"""

from __future__ import annotations

import argparse
import io
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scipy.sparse as sp


def implicit_workflow(model: Any, train: sp.csr_matrix, test: sp.csr_matrix, K: int) -> dict:  # noqa: N803
    """A user's implicit code, verbatim: it never names the model's class."""
    from implicit.evaluation import ranking_metrics_at_k

    start = time.perf_counter()
    model.fit(train, show_progress=False)
    seconds = time.perf_counter() - start
    metrics = ranking_metrics_at_k(model, train, test, K=K, show_progress=False)

    userids = [0, 1, 2]
    ids, scores = model.recommend(userids, train[userids], N=K)  # one row per user
    assert ids.shape == (3, K) and not set(ids[0]) & set(train[0].indices)
    similar, _ = model.similar_items(ids[0, 0], N=5)
    assert similar[0] == ids[0, 0]  # an item is its own nearest neighbour

    buffer = io.BytesIO()  # save/load through a file object
    model.save(buffer)
    buffer.seek(0)
    loaded = type(model).load(buffer)
    queued = pickle.loads(pickle.dumps(model))  # e.g. through multiprocessing
    for copy in (loaded, queued):
        assert (copy.recommend(userids, train[userids], N=K)[0] == ids).all()
    return {**metrics, "fit_seconds": seconds}


def model_factories(factors: int, seed: int) -> dict[str, Callable[[], Any]]:
    """The only lines that differ: the model's construction."""
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    from cfcore import Factorizer
    from cfcore.factorize import LOSSES

    models: dict[str, Callable[[], Any]] = {
        "implicit BPR": lambda: BayesianPersonalizedRanking(factors=factors, random_state=seed),
        "implicit ALS": lambda: AlternatingLeastSquares(factors=factors, random_state=seed),
    }
    for loss in LOSSES:
        models[f"cfcore {loss}"] = lambda loss=loss: Factorizer(
            factors=factors, loss=loss, seed=seed, progress=False
        )
    return models


def compare(
    user_items: sp.csr_matrix,
    factories: dict[str, Callable[[], Any]],
    K: int = 10,  # noqa: N803
    seed: int = 0,
) -> list[dict]:
    """implicit's ``train_test_split`` (80/20 of the interactions), then
    :func:`implicit_workflow` for every model: one row per model."""
    from implicit.evaluation import train_test_split

    train, test = train_test_split(user_items, 0.8, random_state=seed)
    return [
        {"model": name, **implicit_workflow(make(), train, test, K)}
        for name, make in factories.items()
    ]


def markdown_table(rows: list[dict], K: int) -> str:  # noqa: N803
    head = f"| model | precision@{K} | MAP@{K} | NDCG@{K} | AUC@{K} | fit (s) |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['precision']:.4f} | {r['map']:.4f} | {r['ndcg']:.4f} | "
            f"{r['auc']:.4f} | {r['fit_seconds']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data-dir", type=Path, default=None, help="default: cfcore.datasets.data_dir()"
    )
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from cfcore import load_movielens

    views = load_movielens("ml-100k", args.data_dir)
    rows = compare(views.user_items, model_factories(args.factors, args.seed), args.k, args.seed)
    print(markdown_table(rows, args.k))


if __name__ == "__main__":
    main()
