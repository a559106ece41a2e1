"""Bibas et al. 2022 on MovieLens-100k posters, on the CPU in about ten minutes.

    ml-100k ratings ──► BPR CF vectors (64) ──► CF2Label: genres from CF vectors alone (Table 4)
                              │
    posters + genres ──► CNN: genres (class-balanced BCE) + reconstruct CF vectors (exp(L1+L2))
                              └─► test mAP on held-out "new" posters, vs image-only, sequential,
                                  contrastive (Table 5), at label ratios 1.0 and 0.2 (Figs. 3–4)

1. **Pre-study** (§4.2, Table 4): BPR with 64 factors on every ml-100k rating; CF2Label (a
   two-layer MLP) learns the 18 genres from the item vectors of 70% of the items and is scored
   on the other 30% against the popularity baseline.
2. **The experiment** (§4.4): the job ``examples/bibas_ml100k.toml`` — for each of 3 seeds,
   30% of the labelled posters are held out as new images (their ratings removed before
   factorizing), split evenly into validation and test; image-only, sequential, contrastive
   and MTL-reconstruct with the uniform, interaction and loss-based confidences are trained
   on the same split and CF vectors at label ratios 1.0 and 0.2, and compared item by item
   (:mod:`cfvision.experiment`).

Run (a rerun skips the finished runs; the posters are decoded once into the image cache)::

    python examples/bibas_experiment.py                       # writes runs/bibas/
    python examples/bibas_experiment.py --seeds 0 --epochs 5  # a quick look

The same with the command-line tools::

    cfcore factorize ml-100k -o bpr.npz --loss bpr --factors 64 --threads 1
    cfvision cf2label bpr.npz ml-100k --test-frac 0.3 --seed 0 --json cf2label.json
    cfvision experiment examples/bibas_ml100k.toml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/bibas"))
    p.add_argument("--job", type=Path, default=HERE / "bibas_ml100k.toml")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="default: cfcore.datasets.data_dir()"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the job's")
    p.add_argument("--epochs", type=int, default=None, help="default: the job's")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    return p.parse_args()


def main() -> dict:
    args = parse_args()
    import torch

    from cfcore.factorize import Factorizer
    from cfcore.io import atomic_write_text
    from cfcore.labels import read_labels
    from cfvision.cf2label import cf2label_study
    from cfvision.experiment import load_job, run_experiment

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = str(args.data_dir) if args.data_dir else None
    args.workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    # 1. the pre-study: do CF vectors know the genres?
    start = time.perf_counter()
    from cfcore.datasets import load_movielens

    views = load_movielens("ml-100k", data_dir)
    bpr = Factorizer(factors=64, loss="bpr", epochs=30, threads=1, seed=0, progress=False)
    bpr.fit(views)
    _, study = cf2label_study(bpr, read_labels("ml-100k", data_dir=data_dir), 0.3, seed=0)
    print(study.line())
    timings["cf2label_seconds"] = time.perf_counter() - start

    # 2. the experiment
    start = time.perf_counter()
    overrides: dict = {"output": str(args.workdir)}
    if data_dir:
        overrides["data_dir"] = data_dir
    if args.seeds:
        overrides["seeds"] = args.seeds
    if args.epochs:
        overrides["epochs"] = args.epochs
    cfg = load_job(args.job, overrides)
    cfg.base.progress = False
    result = run_experiment(cfg, log=print)
    timings["experiment_seconds"] = time.perf_counter() - start
    summary = {
        "cf2label": {"bpr_factors": 64, **study.summary()},
        "experiment": {"runs_trained": result.ran, "runs_already_finished": result.skipped},
        "torch_threads": torch.get_num_threads(),
        **timings,
    }
    atomic_write_text(args.workdir / "example.json", json.dumps(summary, indent=2) + "\n")
    print(
        f"CF2Label {timings['cf2label_seconds']:.0f} s; experiment "
        f"{timings['experiment_seconds'] / 60:.1f} min ({result.ran} runs trained, "
        f"{result.skipped} already finished) -> {args.workdir}"
    )
    return summary


if __name__ == "__main__":
    main()
