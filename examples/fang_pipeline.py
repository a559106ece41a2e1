"""Fang et al. 2015 end to end on MovieLens-100k and its posters, on the CPU in under a minute.

    ml-100k views ──► Factorizer (eq. 3) ──► k-means pseudo-classes (eq. 4) ──► CNN on posters
                                                                                  │
    held-out posters ◄── cosine k-NN of CNN features (FC6 / pooled) ◄─────────────┘
      └─► shared-viewer curve (§4.3) and a genre linear probe (§4.4), learned vs random init

The split follows §4.1: a fraction of the items that have a poster is held out (``--test-fraction``,
default 0.2 because ml-100k is small; the paper's 0.05 of 1.9M images). The factorization sees
only the train items' views, the pseudo-classes cover only train items, and the CNN trains
only on train posters; the held-out posters then query the train posters by feature cosine.
The same backbone at random initialisation (same seed) is the baseline; pass ``--weights`` with
a local torchvision ImageNet state dict to add the paper's ImageNet comparison.

Run (about 20 seconds on 2 free CPU cores; the posters are decoded once into the image cache)::

    python examples/fang_pipeline.py                      # writes runs/fang_pipeline/
    python examples/fang_pipeline.py --arch resnet18 --image-size 64 --epochs 15 --k 32

The same pipeline with the command-line tools::

    cfcore factorize train.npz -o model.npz ; cfcore cluster model.npz -k 32 -o labels.npz
    cfvision train movielens-posters labels.npz -o run/ --id-space ml-100k \\
        --arch resnet18 --image-size 64
    cfvision extract movielens-posters --checkpoint run/checkpoint.pt -o learned.npz
    cfvision extract movielens-posters --id-space ml-100k --arch resnet18 --image-size 64 \\
        -o random.npz
    cfvision evaluate learned.npz random.npz --interactions ml-100k \\
        --test-items test_items.csv --labels ml-100k -o report.json --plot curves.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/fang_pipeline"))
    p.add_argument(
        "--data-dir", type=Path, default=None, help="default: cfcore.datasets.data_dir()"
    )
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--mf-epochs", type=int, default=30)
    p.add_argument(
        "--k", type=int, default=16, help="pseudo-classes (faiss wants >= 39 items each)"
    )
    p.add_argument("--arch", default="small")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="local ImageNet state dict of --arch: adds the ImageNet-features row",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> dict:
    args = parse_args()
    import torch

    from cfcore.datasets import load_movielens, movielens_posters
    from cfcore.ids import id_positions
    from cfcore.io import atomic_write_text
    from cfcore.metrics import mean_average_precision, paired_bootstrap
    from cfcore.vectors import save_vectors
    from cfvision.data import load_image_index, prepare_images, resize_size
    from cfvision.evaluate import compare_features, per_query_shared_viewers
    from cfvision.extract import extract_features
    from cfvision.models import build_model
    from cfvision.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. data: views, posters keyed by ml-100k item id, the §4.1 item split --------------------
    views = load_movielens("ml-100k", args.data_dir)
    poster_dir, _ = movielens_posters(args.data_dir)
    index = load_image_index(poster_dir, "ml-100k")
    item_ids = views.item_ids
    has_poster = index.positions(item_ids) >= 0
    rng = np.random.default_rng(args.seed)  # the item split (Fang §4.1), seeded
    poster_cols = np.flatnonzero(has_poster)
    test_cols = np.sort(
        rng.choice(poster_cols, int(round(len(poster_cols) * args.test_fraction)), replace=False)
    )
    train_cols = np.setdiff1d(np.arange(views.n_items), test_cols)
    train_views = views.subset(items=train_cols)
    test_ids = item_ids[test_cols]
    atomic_write_text(
        work / "test_items.csv", "item_id\n" + "".join(f"{i}\n" for i in test_ids.tolist())
    )
    print(f"{views!r}; {has_poster.sum()} items with a poster, {len(test_ids)} held out as queries")

    # 2. factors of the train items (Fang eq. 3) ----------------------------------------------
    t = time.perf_counter()
    from cfcore.factorize import Factorizer

    # threads=1: bit-reproducible factors (Hogwild races would change the pseudo-classes)
    model = Factorizer(
        factors=args.factors, epochs=args.mf_epochs, seed=args.seed, threads=1, progress=False
    ).fit(train_views)
    item_factors, factor_source = model.item_factors_, "cfcore.Factorizer (squared, eq. 3)"
    timings["factorize_s"] = time.perf_counter() - t

    # 3. pseudo-classes of the train items that have a poster (Fang eq. 4) ---------------------
    t = time.perf_counter()
    from cfcore.cluster import cluster_items

    train_ids = train_views.item_ids
    keep = index.positions(train_ids) >= 0
    labels = cluster_items(
        item_factors[keep], args.k, ids=train_ids[keep], seed=args.seed, threads=1
    )
    labels.save(work / "labels.npz")
    timings["cluster_s"] = time.perf_counter() - t
    print(
        f"factors: {factor_source}; {len(labels.labels)} train posters in K = {labels.k} "
        f"pseudo-classes (sizes {labels.sizes.min()}–{labels.sizes.max()})"
    )

    # 4. CNN on the posters, K-way softmax (Fang §4.1) ----------------------------------------
    t = time.perf_counter()
    run_dir = work / "run"
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():  # a fresh run every time (this folder belongs to the example)
        ckpt.unlink()
    cfg = TrainConfig(
        images=str(poster_dir),
        labels=str(work / "labels.npz"),
        output=str(run_dir),
        arch=args.arch,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=0.1,
        id_space="ml-100k",
        device="cpu",
        seed=args.seed,
        progress=False,
    )
    result = train(cfg)
    timings["train_s"] = time.perf_counter() - t
    last = result.history[-1]

    # 5. features of every poster item: learned, random init (same seed), ImageNet ------------
    t = time.perf_counter()
    images = prepare_images(index, item_ids[poster_cols], resize_size(args.image_size))
    items = images.item_ids
    sets = {}

    def features(net, name: str, file: str, source: str) -> None:
        feats = extract_features(net, images, args.image_size, "cpu", progress=False)
        save_vectors(work / file, items, feats, {"source": source, "normalized": True})
        sets[name] = (items, feats)

    features(result.model, "learned (pseudo-classes)", "learned.npz", str(ckpt))
    torch.manual_seed(args.seed)  # the learned model's initial weights (cfvision.train)
    features(build_model(args.arch, labels.k, dropout=0.5), "random init", "random.npz", "random")
    if args.weights is not None:
        features(build_model(args.arch, 1, args.weights), "ImageNet", "imagenet.npz", "weights")
    timings["extract_s"] = time.perf_counter() - t

    # 6. evaluation: held-out posters query train posters; genre probe (Fang §4.3–4.4) -------
    t = time.perf_counter()
    out = compare_features(
        [(n, ids, v) for n, (ids, v) in sets.items()],
        views,
        test_items=test_ids,
        R=100,
        labels="ml-100k",  # the genres of u.item, read by cfcore.labels
        seed=args.seed,
        plot=work / "curves.png",
        data_dir=args.data_dir,
    )
    # paired bootstrap over queries: is the shared-viewer gain more than query noise?
    query = id_positions(test_ids, items) >= 0
    per_q = {n: per_query_shared_viewers(ids, v, query, views, 100) for n, (ids, v) in sets.items()}
    a, b = per_q["learned (pseudo-classes)"], per_q["random init"]
    both = np.isfinite(a) & np.isfinite(b)  # queries without viewers have no Jaccard
    sv_diff = tuple(paired_bootstrap(np.mean, a[both], b[both], n_boot=2000, seed=args.seed))
    # ... and the probe's mAP gain, over the same test items of the same probe split
    pl, pr = out["probes"]["learned (pseudo-classes)"], out["probes"]["random init"]
    probe_diff = tuple(
        paired_bootstrap(
            mean_average_precision,
            pl.test_scores,
            pr.test_scores,
            pl.test_targets,
            n_boot=2000,
            seed=args.seed,
        )
    )
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    for line in out["table"]:
        print(line)
    learned, rand = out["results"]["learned (pseudo-classes)"], out["results"]["random init"]
    sv_l, sv_r = learned["summary"]["shared_viewers_mean"], rand["summary"]["shared_viewers_mean"]
    pr_l, pr_r = learned["probe"]["score"], rand["probe"]["score"]
    verdict = {
        "shared_viewers_mean": {
            "learned": sv_l,
            "random_init": sv_r,
            "learned_wins": sv_l > sv_r,
            "paired_diff_95ci": sv_diff,
        },
        "genre_probe_mAP": {
            "learned": pr_l,
            "random_init": pr_r,
            "learned_wins": pr_l > pr_r,
            "paired_diff_95ci": probe_diff,
        },
    }
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "factors": factor_source,
        "cnn_final_epoch": last,
        "timings": timings,
        "verdict": verdict,
        "results": {
            k: {"summary": v["summary"], "probe": v.get("probe")} for k, v in out["results"].items()
        },
    }
    atomic_write_text(work / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(
        f"CNN: val top-1 {last.get('val_acc', float('nan')):.3f} on K = {labels.k} pseudo-classes "
        f"after {args.epochs} epochs, {last['images_per_s']:.0f} images/s"
    )
    print(
        f"learned vs random init: shared viewers {sv_l:.4f} vs {sv_r:.4f} "
        f"(paired difference {sv_diff[0]:+.4f}, 95% CI {sv_diff[1]:+.4f}..{sv_diff[2]:+.4f}, "
        f"p = {sv_diff[3]:.3f}); "
        f"genre probe mAP {pr_l:.4f} vs {pr_r:.4f} (paired difference {probe_diff[0]:+.4f}, "
        f"95% CI {probe_diff[1]:+.4f}..{probe_diff[2]:+.4f}, p = {probe_diff[3]:.3f})"
    )
    print(f"total {timings['total_s']:.0f} s; summary in {work / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
