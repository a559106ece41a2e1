"""The torch stages of a pipeline job: train, extract, evaluate (and the report).

Each is a :data:`cfcore.pipeline.stages.StageFunction` run by ``cfvision run-stage`` in a
process of its own (:mod:`cfvision.pipeline` starts it). They call the same library functions
as ``cfvision train``, ``extract`` and ``evaluate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cfcore.pipeline.stages import RANDOM, VIEWS, StageContext, StageFunction


def _torch_setup(ctx: StageContext) -> Any:
    import torch

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    return torch


def stage_train(ctx: StageContext) -> dict[str, Any]:
    """A CNN trained K-way on the pseudo-classes of the train items' images (Fang §4.1)."""
    from cfvision.train import TrainConfig, train

    _torch_setup(ctx)
    data = ctx.job.tables["data"]
    options = ctx.job.options("train")
    if "weights" in options:
        options["weights"] = str(ctx.job.resolve("train", "weights", dataset=False))
    cfg = TrainConfig(
        images=str(ctx.images()),
        labels=str(ctx.input("cluster", "labels.npz")),
        output=str(ctx.out),
        id_space=data.get("id_space"),
        data_dir=str(ctx.job.data_dir) if ctx.job.data_dir else None,
        device=ctx.job.device,
        seed=ctx.job.seed,
        progress=False,
        resume=(ctx.out / "checkpoint.pt").exists(),  # a stopped run of this stage (same key)
        **options,
    )
    result = train(cfg, log=ctx.log)
    return {
        "history": result.history,
        "classes": int(result.model.num_classes),
        "arch": cfg.arch,
        "image_size": cfg.image_size,
        "train_items": len(result.data.train_items),
        "val_items": len(result.data.val_items),
    }


def stage_extract(ctx: StageContext) -> dict[str, Any]:
    """L2-normalised features of every item's image: the trained CNN, and the same CNN at
    its (seeded) random initialisation — the baseline of Fang §4.3."""
    from cfcore.interactions import Interactions
    from cfcore.vectors import save_vectors
    from cfvision.data import load_image_index, prepare_images, resize_size
    from cfvision.extract import extract_features
    from cfvision.models import build_model, load_checkpoint, model_from_checkpoint
    from cfvision.train import resolve_device

    torch = _torch_setup(ctx)
    options = {"batch_size": 128, "random_init": True, **ctx.job.options("extract")}
    train = ctx.job.options("train")
    checkpoint = ctx.input("train", "checkpoint.pt")
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state, checkpoint)
    size = int(state["image_size"])
    views = Interactions.load(ctx.input("data", VIEWS))
    index = load_image_index(ctx.images(), ctx.job.tables["data"].get("id_space"))
    images = prepare_images(
        index,
        views.item_ids,
        resize_size(size),
        train.get("cache_dir"),
        train.get("on_bad_image", "skip"),
    )
    device = resolve_device(ctx.job.device)
    meta = {"arch": state["arch"], "image_size": size, "normalized": True}

    def extract(net: Any, file: str, init: str) -> int:
        feats = extract_features(net, images, size, device, options["batch_size"], progress=False)
        save_vectors(ctx.out / file, images.item_ids, feats, {**meta, "init": init})
        return int(feats.shape[1])

    dim = extract(model, "learned.npz", "trained")
    if options["random_init"]:
        torch.manual_seed(ctx.job.seed)  # the trained model's initial weights (cfvision.train)
        net = build_model(state["arch"], int(state["num_classes"]), dropout=state["dropout"])
        extract(net, "random.npz", "random")
    if "weights" in options:  # the paper's ImageNet features
        weights = ctx.job.resolve("extract", "weights", dataset=False)
        extract(build_model(state["arch"], 1, weights), "imagenet.npz", "weights")
    ctx.log(f"{len(images)} items × {dim} features")
    return {"items": len(images), "feature_dim": dim, "missing_images": len(images.report.bad)}


def stage_evaluate(ctx: StageContext) -> dict[str, Any]:
    """Held-out items query the train items by feature cosine (Fang §4.3): shared viewers and
    owner-viewed against random pairs; a linear probe on the labels (§4.4); paired bootstraps
    of learned against random-init features; k-means NMI against the labels."""
    from cfcore.cluster import cluster_items, normalized_mutual_info
    from cfcore.ids import id_positions, parse_ids
    from cfcore.interactions import Interactions
    from cfcore.vectors import load_vectors
    from cfvision.data import load_labels
    from cfvision.evaluate import compare_features, compare_to_baseline

    _torch_setup(ctx)
    options = {"R": 100, "bootstrap": 2000, "probe": True, **ctx.job.options("evaluate")}
    views = Interactions.load(ctx.input("data", VIEWS))
    test_ids = parse_ids(
        np.loadtxt(ctx.input("split", "test_items.csv"), dtype=str, skiprows=1, ndmin=1)
    )
    feature_sets = [(name, *_vectors(load_vectors(path))) for name, path in ctx.feature_sets()]
    labels_source = ctx.labels() if options["probe"] else None
    labels = load_labels(labels_source, ctx.job.data_dir) if labels_source else None
    owners = ctx.owners()
    plot = ctx.out / "retrieval.png"
    out = compare_features(
        feature_sets,
        views,
        test_items=test_ids,
        R=options["R"],
        labels=labels,
        owners=owners,
        seed=ctx.job.seed,
        plot=plot,
    )
    for line in out["table"]:
        ctx.log(line)
    result: dict[str, Any] = {
        "items": out["items"],
        "queries": out["queries"],
        "results": out["results"],
    }
    if RANDOM in {name for name, _, _ in feature_sets}:
        result["bootstrap"] = options["bootstrap"]
        result["paired"] = compare_to_baseline(
            feature_sets,
            RANDOM,
            views,
            test_ids,
            R=options["R"],
            owners=owners,
            probes=out["probes"],
            n_boot=options["bootstrap"],
            seed=ctx.job.seed,
        )
    if labels is not None and not labels.multilabel:  # do the features find the classes?
        result["nmi"] = {}
        for name, ids, vecs in feature_sets:
            rows = id_positions(labels.item_ids, ids)
            has = rows >= 0
            k = int(labels.n_classes)
            clusters = cluster_items(vecs[has], k, seed=ctx.job.seed, threads=ctx.threads)
            result["nmi"][name] = normalized_mutual_info(clusters.labels, labels.targets[rows[has]])
    return result


def _vectors(v: Any) -> tuple[np.ndarray, np.ndarray]:
    return v.ids, v.vectors


def stage_multitask(ctx: StageContext) -> dict[str, Any]:
    """Bibas et al. 2022 on the job's data: each method of ``[multitask] methods`` labels
    held-out images (multi-label), on one split and one CF model (``cfvision.multitask``)."""
    from cfvision.multitask import MultitaskConfig, train_multitask

    _torch_setup(ctx)
    options = ctx.job.options("multitask")
    methods = options.pop("methods", ["image-only", "mtl"])
    if "weights" in options:
        options["weights"] = str(ctx.job.resolve("multitask", "weights", dataset=False))
    data = ctx.job.tables["data"]
    shared: dict[str, str] = {}
    results = {}
    for method in methods:
        out = ctx.out / method
        cfg = MultitaskConfig(
            images=str(ctx.images()),
            labels=str(ctx.labels(multilabel=True)),
            interactions=str(ctx.input("data", VIEWS)),
            output=str(out),
            method=method,
            id_space=data.get("id_space"),
            data_dir=str(ctx.job.data_dir) if ctx.job.data_dir else None,
            device=ctx.job.device,
            seed=ctx.job.seed,
            progress=False,
            resume=(out / "checkpoint.pt").exists(),  # a stopped run of this stage (same key)
            **shared,
            **options,
        )
        result = train_multitask(cfg, log=ctx.log).result
        results[result["variant"]] = {k: v for k, v in result.items() if k != "config"}
        # every method on the first one's split and CF model: their scores compare
        shared = {"split": str(out / "split.csv"), "cf_model": str(out / "cf_model.npz")}
    return {"methods": results}


def stage_report(ctx: StageContext) -> dict[str, Any]:
    """The report: Markdown, PNGs and one self-contained HTML page (:mod:`cfvision.report`)."""
    from cfvision.report import write_report

    paths = write_report(ctx.run, ctx.out, title=ctx.job.table("report").get("title"))
    ctx.log(f"report -> {ctx.run.stage('report') / paths['html'].name}")
    return {"files": sorted(p.name for p in paths.values())}


#: The stages run by ``cfvision run-stage``.
FUNCTIONS: dict[str, StageFunction] = {
    "train": stage_train,
    "extract": stage_extract,
    "evaluate": stage_evaluate,
    "multitask": stage_multitask,
    "report": stage_report,
}
