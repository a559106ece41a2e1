"""Fang et al. 2015 end to end on MovieLens-100k and its posters, on the CPU in a few minutes.

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

Run (about 3–6 minutes on 2 CPU cores)::

    python examples/fang_pipeline.py                      # writes runs/fang_pipeline/
    python examples/fang_pipeline.py --arch resnet18 --image-size 64 --epochs 15 --k 32

The same pipeline with the command-line tools::

    cfcore factorize train.npz -o model.npz ; cfcore cluster model.npz -k 32 -o labels.npz
    cfvision train movielens-posters labels.npz -o run/ --arch resnet18 --image-size 64
    cfvision extract movielens-posters --checkpoint run/checkpoint.pt -o learned.npz
    cfvision extract movielens-posters --arch resnet18 --image-size 64 -o random.npz
    cfvision evaluate learned.npz random.npz --interactions ml-100k \\
        --test-items test_items.csv --labels genres.csv -o report.json --plot curves.png
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

    from cfcore.datasets import load_movielens, movielens_100k_genres, movielens_posters
    from cfcore.io import atomic_write_text
    from cfvision.data import load_image_index
    from cfvision.evaluate import compare_features
    from cfvision.extract import extract_features, save_item_vectors
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
    has_poster = np.asarray([str(i) in index for i in item_ids.tolist()])
    rng = np.random.default_rng(args.seed)  # the item split (Fang §4.1), seeded
    poster_cols = np.flatnonzero(has_poster)
    test_cols = np.sort(
        rng.choice(poster_cols, int(round(len(poster_cols) * args.test_fraction)), replace=False)
    )
    train_cols = np.setdiff1d(np.arange(views.n_items), test_cols)
    train_views = views.subset(items=train_cols)
    test_ids = [str(i) for i in item_ids[test_cols].tolist()]
    atomic_write_text(work / "test_items.csv", "item_id\n" + "\n".join(test_ids) + "\n")
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
    keep = np.asarray([str(i) in index for i in train_ids.tolist()])
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
        cache_images=True,
        device="cpu",
        seed=args.seed,
        progress=False,
    )
    result = train(cfg)
    timings["train_s"] = time.perf_counter() - t
    last = result.history[-1]

    # 5. features of every poster item: learned, random init (same seed), ImageNet ------------
    t = time.perf_counter()
    items = [str(i) for i in item_ids[poster_cols].tolist()]
    cache: dict = {}
    from cfvision.data import check_images, resize_size

    report = check_images(
        index, items, "skip", cache=cache, cache_size=resize_size(args.image_size)
    )
    items = report.ok
    sets = {}
    feats = extract_features(
        result.model, items, index, args.image_size, "cpu", cache=cache, progress=False
    )
    save_item_vectors(work / "learned.npz", items, feats, {"source": str(ckpt)})
    sets["learned (pseudo-classes)"] = (items, feats)
    torch.manual_seed(args.seed)  # the learned model's initial weights (cfvision.train)
    random_model = build_model(args.arch, labels.k, dropout=0.5)
    feats = extract_features(
        random_model, items, index, args.image_size, "cpu", cache=cache, progress=False
    )
    save_item_vectors(work / "random.npz", items, feats, {"source": "random-init"})
    sets["random init"] = (items, feats)
    if args.weights is not None:
        feats = extract_features(
            build_model(args.arch, 1, args.weights),
            items,
            index,
            args.image_size,
            "cpu",
            cache=cache,
            progress=False,
        )
        save_item_vectors(work / "imagenet.npz", items, feats, {"source": str(args.weights)})
        sets["ImageNet"] = (items, feats)
    timings["extract_s"] = time.perf_counter() - t

    # 6. evaluation: held-out posters query train posters; genre probe (Fang §4.3–4.4) -------
    t = time.perf_counter()
    genres = movielens_100k_genres(args.data_dir)
    names = genres.names[1:]  # drop "unknown"
    lines = ["item_id,labels"]
    for iid, row in zip(genres.item_ids.tolist(), genres.labels[:, 1:], strict=True):
        if row.any():
            lines.append(f"{iid}," + "|".join(n for n, f in zip(names, row, strict=True) if f))
    atomic_write_text(work / "genres.csv", "\n".join(lines) + "\n")
    out = compare_features(
        [(n, ids, v) for n, (ids, v) in sets.items()],
        views,
        test_items=test_ids,
        R=100,
        labels=work / "genres.csv",
        seed=args.seed,
        plot=work / "curves.png",
    )
    # paired bootstrap over queries: is the shared-viewer gain more than query noise?
    from cfvision.evaluate import paired_bootstrap, per_query_shared_viewers

    query = np.asarray([i in set(test_ids) for i in items])
    per_q = {n: per_query_shared_viewers(ids, v, query, views, 100) for n, (ids, v) in sets.items()}
    sv_diff = paired_bootstrap(
        per_q["learned (pseudo-classes)"], per_q["random init"], seed=args.seed
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
        "genre_probe_mAP": {"learned": pr_l, "random_init": pr_r, "learned_wins": pr_l > pr_r},
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
        f"(paired difference {sv_diff[0]:+.4f}, 95% CI {sv_diff[1]:+.4f}..{sv_diff[2]:+.4f}); "
        f"genre probe mAP {pr_l:.4f} vs {pr_r:.4f}"
    )
    print(f"total {timings['total_s']:.0f} s; summary in {work / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
