"""The torch-free stages of a pipeline job, and the harness every stage runs in.

A stage is a function ``stage(ctx) -> dict``: it reads the outputs of earlier stages
(:meth:`StageContext.input`), writes its own into ``ctx.out`` through the library's atomic
writers, and returns a JSON-ready summary (sizes, per-epoch history, measures) that the runner
stores in its record and the report reads. Stages call the library — the same functions the
``cfcore`` commands call — with the job's options as keyword arguments.

:func:`execute` is the body of ``cfcore run-stage`` and ``cfvision run-stage``: the process
the runner (:mod:`cfvision.pipeline`) starts for each stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError
from cfcore.io import atomic_write_json, atomic_write_text
from cfcore.pipeline.job import (
    TAG_STAGE_DEFAULTS,
    Job,
    factorizer_params,
    job_from_dict,
    negative_params,
    tag_model_params,
    tag_users,
)
from cfcore.pipeline.rundir import JOB, RESULT, RunDir

StageFunction = Callable[["StageContext"], dict[str, Any]]

#: The views every stage reads, in ``data/``.
VIEWS = "views.npz"
#: A simulated world's folder, in ``data/``.
WORLD = "world"

#: Names of the feature sets of the extract stage, as the report shows them, and their files.
LEARNED = "learned (pseudo-classes)"
RANDOM = "random init"
IMAGENET = "ImageNet weights"
FEATURE_FILES = {LEARNED: "learned.npz", RANDOM: "random.npz", IMAGENET: "imagenet.npz"}


@dataclass
class StageContext:
    """What a stage sees: the job, where to read and where to write, where to say things."""

    job: Job
    run: RunDir
    name: str
    out: Path
    log: Callable[[str], None]

    @property
    def threads(self) -> int:
        """This stage's threads (0 = all cores)."""
        return self.job.threads_for(self.name)

    def input(self, stage: str, file: str) -> Path:
        """A finished stage's output file (``InputError`` when it is missing)."""
        path = self.run.stage(stage) / file
        if not path.exists():
            raise InputError(f"{path}: missing (stage {stage} has not run; rerun the job)")
        return path

    # the data stage resolves these; later stages ask here
    def images(self) -> Path:
        if self.job.simulated:
            return self.input("data", f"{WORLD}/images")
        return self.job.resolve("data", "images")

    def labels(self, multilabel: bool = False) -> str | None:
        """Item labels: a file or a dataset name — a world's planted classes, or with
        ``multilabel`` its visible attributes (shape, fill, palette, background)."""
        if self.job.simulated:
            file = "attributes.csv" if multilabel else "classes.csv"
            return str(self.input("data", f"{WORLD}/{file}"))
        if "labels" not in self.job.tables["data"]:
            return None
        return self.job.path_or_name("data", "labels")

    def feature_sets(self) -> list[tuple[str, Path]]:
        """The extract stage's feature files that exist, as ``(name, path)``."""
        folder = self.run.stage("extract")
        return [(n, folder / f) for n, f in FEATURE_FILES.items() if (folder / f).exists()]

    def owners(self) -> Path | None:
        if self.job.simulated:
            return self.input("data", f"{WORLD}/owners.csv")
        return self.job.resolve("data", "owners") if "owners" in self.job.tables["data"] else None


def execute(run_dir: str | Path, name: str, functions: Mapping[str, StageFunction], log) -> None:
    """Run stage ``name`` of the job in ``run_dir`` into ``<name>.partial/``.

    Writes the stage's summary to ``result.json`` there; the runner finishes the record.
    """
    run = RunDir(Path(run_dir))
    if name not in functions:
        raise InputError(f"no stage {name!r} here (known: {', '.join(functions)})")
    job = job_from_dict(json.loads((run.root / JOB).read_text()))
    out = run.partial(name)
    if not out.is_dir():
        raise InputError(f"{out}: missing; stages are started by `cfvision pipeline`")
    ctx = StageContext(job, run, name, out, log)
    result = functions[name](ctx)
    atomic_write_json(out / RESULT, result)


# ----------------------------------------------------------------------------- the stages
def interaction_stats(views: Any) -> dict[str, Any]:
    """Sizes and the shape of the activity and popularity distributions."""
    act, pop = views.user_activity(), views.item_popularity()

    def quantiles(x: np.ndarray) -> dict[str, float]:
        q = np.quantile(x, [0.0, 0.5, 0.9, 1.0]) if len(x) else np.zeros(4)
        return {"min": float(q[0]), "median": float(q[1]), "p90": float(q[2]), "max": float(q[3])}

    return {
        "users": int(views.n_users),
        "items": int(views.n_items),
        "interactions": int(views.nnz),
        "density": float(views.density),
        "views_per_user": quantiles(act),
        "views_per_item": quantiles(pop),
    }


def stage_data(ctx: StageContext) -> dict[str, Any]:
    """Read (or simulate) the interactions and filter them (Fang §3's count filter)."""
    from cfcore.datasets import load_interactions

    data = ctx.job.tables["data"]
    result: dict[str, Any] = {}
    if ctx.job.simulated:
        from cfcore.simulate import simulate

        world = simulate(**{"seed": ctx.job.seed, **data["simulate"]})
        world.save(ctx.out / WORLD, workers=max(1, ctx.threads or 2))
        views = world.views
        result["world"] = world.summary()
        result["source"] = "cfcore.simulate"
    else:
        views = load_interactions(
            ctx.job.path_or_name("data", "source"),
            ctx.job.data_dir,
            data.get("min_rating"),
            data.get("format", "auto"),
        )
        result["source"] = str(data["source"])
        result["read"] = interaction_stats(views)
        bounds = ("min_interactions", "max_interactions")
        users = ("min_user_interactions", "max_user_interactions")
        if any(k in data for k in bounds + users):  # users default to the items' bounds
            views = views.filter_counts(
                data.get(bounds[0], 1),
                data.get(bounds[1], np.iinfo(np.int64).max),
                *(data.get(k) for k in users),
            )
    if views.nnz == 0:
        raise InputError(f"{ctx.job.where('data')}: no interaction is left after filtering")
    views.save(ctx.out / VIEWS)
    result["stats"] = interaction_stats(views)
    ctx.log(f"{views!r}")
    return result


def stage_split(ctx: StageContext) -> dict[str, Any]:
    """Hold out items with all their views (Fang §4.1) and a per-user validation slice."""
    from cfcore.interactions import Interactions
    from cfcore.splits import holdout_split, item_split

    params = ctx.job.options("split")
    views = Interactions.load(ctx.input("data", VIEWS))
    split = item_split(views, params.get("test_fraction", 0.2), seed=ctx.job.seed)
    split.train.save(ctx.out / "train_views.npz")
    test_ids = views.item_ids[split.test_items]
    atomic_write_text(
        ctx.out / "test_items.csv", "item_id\n" + "".join(f"{i}\n" for i in test_ids.tolist())
    )
    validation = params.get("validation", 0.1)
    fit = split.train
    if validation > 0:
        fit, valid = holdout_split(split.train, validation, seed=ctx.job.seed + 1)
        valid.save(ctx.out / "valid_views.npz")
    fit.save(ctx.out / "fit_views.npz")
    ctx.log(f"{len(test_ids)} test items held out; {split.train.n_items} train items")
    return {
        "test_items": len(test_ids),
        "train_items": int(split.train.n_items),
        "train_interactions": int(split.train.nnz),
        "fit_interactions": int(fit.nnz),
        "validation_interactions": int(split.train.nnz - fit.nnz),
    }


def stage_negatives(ctx: StageContext) -> dict[str, Any]:
    """Fang Alg. 1 on the fitting views, with the factorizer's resolved options: the draw
    the factorizer trains on when negatives are not resampled (its epoch-0 stream)."""
    from cfcore.interactions import Interactions
    from cfcore.sampling import sample_negatives

    fit = Interactions.load(ctx.input("split", "fit_views.npz"))
    p = negative_params(ctx.job)
    ns = sample_negatives(
        fit, p["neg_ratio"], p["neg_weighting"], seed=ctx.job.seed, threads=ctx.threads
    )
    ns.save(ctx.out / "negatives.npz")
    counts = ns.counts
    return {
        **p,
        "negatives": ns.nnz,
        "requested": int(ns.requested),
        "users_short": int(ns.n_short),
        "per_user_median": float(np.median(counts)) if len(counts) else 0.0,
    }


def stage_factorize(ctx: StageContext) -> dict[str, Any]:
    """Factorize the fitting views; per-epoch validation on the held-out slice (Fang eq. 3)."""
    from cfcore.factorize import Factorizer
    from cfcore.interactions import Interactions

    fit = Interactions.load(ctx.input("split", "fit_views.npz"))
    valid_path = ctx.run.stage("split") / "valid_views.npz"
    valid = Interactions.load(valid_path) if valid_path.exists() else None
    model = Factorizer(**factorizer_params(ctx.job)).fit(fit, validation=valid)
    model.save(ctx.out / "model.npz")
    history = [dict(h) for h in model.history_]
    last = history[-1] if history else {}
    ctx.log(
        f"{len(history)} epochs; "
        + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k in ("rmse", "sampled_pr", "auc"))
    )
    return {
        "history": history,
        "best_epoch": getattr(model, "best_epoch_", None),
        "effective_params": asdict(model.effective_params_),
    }


def stage_cluster(ctx: StageContext) -> dict[str, Any]:
    """Spherical k-means of the train items' factors into pseudo-classes (Fang eq. 4)."""
    from cfcore.cluster import cluster_items, normalized_mutual_info, suggest_k
    from cfcore.model import load_model

    model = load_model(ctx.input("factorize", "model.npz"))
    options = ctx.job.options("cluster")
    k = options.pop("k", None) or suggest_k(len(model.item_ids_))
    labels = cluster_items(
        model.item_factors_,
        k,
        ids=model.item_ids_,
        seed=ctx.job.seed,
        threads=ctx.threads,
        **options,
    )
    labels.save(ctx.out / "labels.npz")
    result: dict[str, Any] = {
        "k": labels.k,
        "items": len(labels),
        "sizes": labels.sizes.tolist(),
        "imbalance": labels.imbalance(),
    }
    if ctx.job.simulated:  # how well the pseudo-classes find the planted classes
        from cfcore.ids import id_positions
        from cfcore.simulate import SimulatedWorld

        world = SimulatedWorld.load(ctx.input("data", WORLD))
        planted = world.item_class[id_positions(world.views.item_ids, labels.item_ids)]
        result["nmi_planted_classes"] = normalized_mutual_info(labels.labels, planted)
    ctx.log(repr(labels))
    return result


def stage_tags(ctx: StageContext) -> dict[str, Any]:
    """Denton et al. 2015 on the job's items: each tag model of ``[tags] models`` fitted and
    measured (P@1, R@10, A@10) with each of the extract stage's feature sets as the item
    descriptors, on one seeded split per tag distribution (:func:`cfcore.tags.compare_models`)."""
    from cfcore.attributes import read_user_attributes
    from cfcore.readers import read_tags
    from cfcore.tags import MODELS, compare_models, prepare_tags
    from cfcore.vectors import load_vectors

    job = ctx.job
    options = {**TAG_STAGE_DEFAULTS, **job.options("tags")}
    world = job.simulated and "tags" not in options
    path = ctx.input("data", f"{WORLD}/tags.csv") if world else job.resolve("tags", "tags")
    users = {
        "world": lambda: ctx.input("data", f"{WORLD}/users.csv"),
        "file": lambda: job.resolve("tags", "users", dataset=False),
        None: lambda: None,
    }[tag_users(job)]()
    if users is not None:  # read and encoded once, for every comparison below
        users = read_user_attributes(users)
    data = read_tags(path)
    result: dict[str, Any] = {
        "tags_file": path.name,
        "users": "attributes" if users is not None else "learned embedding per user",
        "split": options["split"],
        "read": {
            "examples": data.n_examples,
            "applications": data.n_applications,
            "tags": data.n_tags,
        },
        "sets": [],
    }
    for name, file in ctx.feature_sets():
        vectors = load_vectors(file)
        described, dropped = data.only(items=vectors.ids)
        for distribution in options["distributions"]:
            prepared = prepare_tags(
                described, options["vocabulary"], distribution, options["balance_top"], job.seed
            )
            train, test = prepared.split(options["split"], options["test_fraction"], job.seed)
            models = compare_models(
                train,
                test,
                vectors,
                users,
                tuple(options.get("models", MODELS)),
                **tag_model_params(job),
            )
            for m in models:
                ctx.log(
                    f"{name}, {distribution}: {m['model']:<12} "
                    + ", ".join(f"{k} {m[k]:.3f}" for k in ("P@1", "R@10", "A@10"))
                )
            result["sets"].append(
                {
                    "features": name,
                    "distribution": distribution,
                    "dropped": dropped,
                    "train_examples": train.n_examples,
                    "test_examples": test.n_examples,
                    "tags": prepared.n_tags,
                    "models": [{k: v for k, v in m.items() if k != "per_tag"} for m in models],
                }
            )
    if not result["sets"]:
        raise InputError(f"{ctx.run.stage('extract')}: no feature file to describe the items")
    return result


#: The stages run by ``cfcore run-stage``.
FUNCTIONS: dict[str, StageFunction] = {
    "data": stage_data,
    "split": stage_split,
    "negatives": stage_negatives,
    "factorize": stage_factorize,
    "cluster": stage_cluster,
    "tags": stage_tags,
}
