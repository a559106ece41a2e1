"""Denton et al. 2015 on MovieLens tags: the README's P@1 / R@10 / A@10 tables.

For each item-descriptor file given (cfcore item factors, poster CNN features...), each tag
distribution (natural, balanced) and each seed, the ml-latest-small tag applications of the
items that have a descriptor are split 80/20 per user (``--split items``: ml-latest-small has
no user attributes, so the user-conditioned models learn one embedding per user id) and the
four models are trained and measured with ``cfcore.tags.compare_models`` — exactly what
``cfcore tags evaluate`` does for one seed. Prints a Markdown table of the mean ± standard
deviation over the seeds and writes every number to ``--out`` (JSON).

    python examples/denton_tags.py --items factors=model.npz --items posters=posters.npz
    python examples/denton_tags.py --items factors=model.npz --seeds 0 1 2 --balance-top 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cfcore.datasets import dataset_path
from cfcore.io import atomic_write_text, json_safe
from cfcore.readers import read_tags
from cfcore.tags import MEASURES, MODELS, compare_models, prepare_tags
from cfcore.vectors import load_vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--items",
        action="append",
        required=True,
        metavar="NAME=VECTORS.npz",
        help="an item-descriptor file and the name of its table (repeatable)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--vocabulary", type=int, default=10_000)
    parser.add_argument("--balance-top", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/denton_tags.json"))
    args = parser.parse_args()

    tags = read_tags(dataset_path("ml-latest-small", args.data_dir) / "tags.csv")
    runs = []
    for spec in args.items:
        name, _, path = spec.partition("=")
        vectors = load_vectors(path)
        data, dropped = tags.only(items=vectors.ids)
        for distribution in ("natural", "balanced"):
            version = prepare_tags(data, args.vocabulary, distribution, args.balance_top)
            for seed in args.seeds:
                train, test = version.split("items", 0.2, seed)
                t0 = time.perf_counter()
                results = compare_models(
                    train,
                    test,
                    vectors,
                    None,
                    MODELS,
                    seed=seed,
                    threads=args.threads,
                    progress=False,
                )
                runs.append(
                    {
                        "descriptors": name,
                        "path": path,
                        "distribution": distribution,
                        "seed": seed,
                        "dropped_examples": dropped,
                        "examples": version.n_examples,
                        "tags": version.n_tags,
                        "train_examples": train.n_examples,
                        "test_examples": test.n_examples,
                        "seconds": time.perf_counter() - t0,
                        "results": [
                            {k: v for k, v in r.items() if k != "per_tag"} for r in results
                        ],
                    }
                )
                print(
                    f"{name} {distribution} seed {seed}: "
                    + ", ".join(f"{r['model']} P@1 {r['P@1']:.3f}" for r in results),
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(json_safe(runs), indent=1) + "\n")
    print(table(runs))


def table(runs: list[dict]) -> str:
    """Markdown: mean ± std over seeds per (descriptors, distribution, model)."""
    lines = [
        "| descriptors | distribution | model | P@1 | R@10 | A@10 | examples/s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    keys = dict.fromkeys((r["descriptors"], r["distribution"]) for r in runs)
    for desc, dist in keys:
        group = [r for r in runs if (r["descriptors"], r["distribution"]) == (desc, dist)]
        for model in MODELS:
            rows = [x for r in group for x in r["results"] if x["model"] == model]
            cells = []
            for m in MEASURES:
                v = np.array([x[m] for x in rows])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
            eps = [x["examples_per_s"] for x in rows if model != "frequency"]
            speed = f"{np.mean(eps):,.0f}" if eps else "–"
            lines.append(f"| {desc} | {dist} | {model} | {' | '.join(cells)} | {speed} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
