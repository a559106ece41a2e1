"""The job file: one TOML file naming the inputs and each stage's options.

A job is read with the standard library (:mod:`tomllib`) and checked here, once, before any
work: unknown tables and keys, wrong types and impossible values are :class:`JobError`\\ s that
name the file, the line and the key (``job.toml:12: [factorize] epochs: must be an integer,
got "ten"``). Every stage's options are the keyword arguments of the library call it makes
(:class:`~cfcore.factorize.Factorizer`, :func:`~cfcore.cluster.cluster_items`,
:func:`~cfcore.simulate.simulate`, ``cfvision.train.TrainConfig``), so their meaning and
defaults are documented in one place: an option a job does not set keeps the library's default.

Layout (every table but ``[data]`` is optional)::

    [job]        seed, threads, device, data_dir, run_dir
    [data]       source = "ml-100k" (a file or dataset name) | simulate = {n_users = ...};
                 min_rating, min_interactions, max_interactions (Fang §3's filter of items
                 and users), min_user_interactions, max_user_interactions;
                 images, id_space, labels, owners
    [split]      test_fraction (items held out, Fang §4.1), validation (per-user holdout)
    [negatives]  neg_ratio, neg_weighting                 (Fang Alg. 1)
    [factorize]  Factorizer options                        (Fang eq. 3)
    [cluster]    k and cluster_items options               (Fang eq. 4)
    [train]      TrainConfig options                       (Fang §4.1)
    [extract]    batch_size, random_init
    [evaluate]   R, bootstrap, probe                       (Fang §4.3-4.4)
    [multitask]  methods and MultitaskConfig options       (Bibas et al. 2022; optional)
    [tags]       tags, users, models, split, distributions and TagModel options
                                                           (Denton et al. 2015; optional)
    [report]     title

Relative paths are relative to the job file's folder; a value that is no path there but the
name of a dataset (``ml-100k``, ``movielens-posters``) is that dataset in the data directory
(``[job] data_dir``, else :func:`cfcore.datasets.data_dir`).
"""

from __future__ import annotations

import inspect
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cfcore.errors import CollabfeatError, InputError


class JobError(CollabfeatError, ValueError):
    """A job file that cannot run; the message names the file, line and key."""


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: its name, the command whose process runs it, what it does."""

    name: str
    runner: str  # "cfcore" (never imports torch) or "cfvision"
    doc: str
    optional: bool = False
    resumable: bool = False  # continues from its own checkpoints after a kill


#: The stages, in order. ``runner`` says which package's process runs the stage: the
#: torch-free stages run in a ``python -m cfcore`` child that never imports torch, so
#: numba's and faiss's OpenMP never share a process with torch's.
STAGES: tuple[Stage, ...] = (
    Stage("data", "cfcore", "read (or simulate) the interactions, filter them (Fang §3)"),
    Stage("split", "cfcore", "hold out items (Fang §4.1) and a per-user validation slice"),
    Stage("negatives", "cfcore", "sample negatives ∝ log(1+popularity) (Fang Alg. 1)"),
    Stage("factorize", "cfcore", "Hogwild SGD factorization (Fang eq. 3)"),
    Stage("cluster", "cfcore", "spherical k-means of the item factors (Fang eq. 4)"),
    Stage(
        "train", "cfvision", "CNN on the pseudo-classes of the train items' images", resumable=True
    ),
    Stage("extract", "cfvision", "features of every image: trained and random-init CNN"),
    Stage("evaluate", "cfvision", "held-out items query train items (Fang §4.3-4.4)"),
    Stage(
        "multitask",
        "cfvision",
        "label new images guided by CF vectors (Bibas et al. 2022)",
        optional=True,
        resumable=True,
    ),
    Stage(
        "tags",
        "cfcore",
        "user-conditional tag prediction from the CNN features (Denton et al. 2015)",
        optional=True,
    ),
    Stage("report", "cfvision", "Markdown, PNGs and a self-contained HTML page"),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

#: Dataset names that are not interaction files but still resolve in the data directory.
EXTRA_DATASETS = ("movielens-posters",)


# ----------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Key:
    """One option: its accepted Python types (as TOML gives them) and a one-line help."""

    types: tuple[type, ...]
    help: str = ""
    choices: tuple[str, ...] = ()


def _key(kind: type | tuple[type, ...], help: str = "", choices: tuple[str, ...] = ()) -> Key:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and int not in kinds:
        kinds = (*kinds, int)  # a TOML integer is a fine float
    return Key(kinds, help, choices)


def _from_signature(func: Callable[..., Any], skip: set[str], owner: Any = None) -> dict[str, Key]:
    """Keys from a function's keyword parameters and type hints (``X | None`` → ``X``)."""
    hints = typing.get_type_hints(func)
    out: dict[str, Key] = {}
    for name, param in inspect.signature(func).parameters.items():
        if name in skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name == "self":
            continue
        hint = hints.get(name, Any)
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        kinds = tuple(a for a in args if a in (int, float, str, bool))
        out[name] = _key(kinds or (int, float, str, bool), f"{owner or func.__qualname__}")
    return out


def _factorize_keys() -> dict[str, Key]:
    from cfcore.factorize import Factorizer

    # seed and threads come from the job; the negatives' options from [negatives]
    skip = {"seed", "threads", "progress", "neg_ratio", "neg_weighting"}
    return _from_signature(Factorizer.__init__, skip, "cfcore.Factorizer")


def _cluster_keys() -> dict[str, Key]:
    from cfcore.cluster import cluster_items

    keys = _from_signature(
        cluster_items, {"vectors", "ids", "seed", "threads", "verbose"}, "cfcore.cluster_items"
    )
    keys["k"] = _key(int, "pseudo-classes (default: cfcore.cluster.suggest_k of the items)")
    return keys


def _simulate_keys() -> dict[str, Key]:
    from cfcore.simulate import WorldParams

    hints = typing.get_type_hints(WorldParams)
    return {f.name: _key(hints[f.name], "cfcore.simulate.simulate") for f in fields(WorldParams)}


#: ``cfvision.train.TrainConfig`` fields a job may set (images, labels, output, id_space,
#: seed, device, resume and progress come from the job; a test keeps this list in step).
TRAIN_KEYS: dict[str, Key] = {
    "arch": _key(str, "backbone", ("alexnet", "resnet18", "mobilenet_v3_small",
                                   "regnet_y_400mf", "small")),
    "weights": _key(str, "local torchvision state dict to start from"),
    "image_size": _key(int, "crop size (paper: 224)"),
    "epochs": _key(int),
    "batch_size": _key(int),
    "optimizer": _key(str, "", ("sgd", "adamw")),
    "lr": _key(float),
    "momentum": _key(float),
    "weight_decay": _key(float),
    "schedule": _key(str, "", ("cosine", "step", "constant")),
    "step_size": _key(int),
    "gamma": _key(float),
    "dropout": _key(float),
    "balanced": _key(bool, "sample uniformly over classes (DeepCluster)"),
    "val_fraction": _key(float, "labelled items held out for validation curves"),
    "workers": _key(int),
    "cache_dir": _key(str, "decoded-image cache"),
    "on_bad_image": _key(str, "", ("skip", "fail")),
    "allow_partial": _key(bool),
    "amp": _key(bool),
}  # fmt: skip


#: Stages whose table may set ``threads`` for that stage alone (default: ``[job] threads``).
THREADED = (
    "negatives",
    "factorize",
    "cluster",
    "train",
    "extract",
    "evaluate",
    "multitask",
    "tags",
)


#: ``cfvision.multitask.MultitaskConfig`` options a ``[multitask]`` table may set besides
#: the training ones (a test keeps this list in step); ``methods`` lists the methods to run
#: on one split and one CF model (default: image-only and mtl).
MULTITASK_KEYS: dict[str, Key] = {
    "methods": _key(list, "image-only, mtl, sequential, contrastive"),
    "confidence": _key(str, "", ("uniform", "interactions", "loss")),
    "alpha": _key(float),
    "omega_cap": _key(float),
    "margin": _key(float),
    "label_ratio": _key(float),
    "holdout": _key(float),
    "factors": _key(int),
    "cf_loss": _key(str),
    "cf_epochs": _key(int),
    "cf_standardize": _key(bool),
    "aux_epochs": _key(int),
    "n_boot": _key(int),
}
MULTITASK_METHODS = ("image-only", "mtl", "sequential", "contrastive")


#: What a ``[tags]`` table may set besides the ``cfcore.TagModel`` options, and its defaults.
TAG_STAGE_KEYS: dict[str, Key] = {
    "tags": _key(str, "tag applications user_id,item_id,tag (default: the world's tags.csv)"),
    "users": _key(
        (str, bool),
        "user attribute file (default: the world's users.csv); false: a learned embedding per user",
    ),
    "models": _key(list, "frequency, bilinear, user-biased, 3-way"),
    "split": _key(
        str, "held-out examples: their items (users seen) or their users", ("items", "users")
    ),
    "test_fraction": _key(float, "examples held out (default 0.2)"),
    "distributions": _key(list, "natural and/or balanced (default natural)"),
    "vocabulary": _key(int, "most frequent tags kept (default 10000)"),
    "balance_top": _key(int, "balanced: the most frequent tags capped (default 500)"),
}
TAG_STAGE_DEFAULTS: dict[str, Any] = {
    "split": "items",
    "test_fraction": 0.2,
    "distributions": ["natural"],
    "vocabulary": 10_000,
    "balance_top": 500,
}


def _tag_keys() -> dict[str, Key]:
    from cfcore.tags import TagModel

    skip = {"model", "threads", "seed", "progress"}  # models and the job's seed and threads
    return {**_from_signature(TagModel.__init__, skip, "cfcore.TagModel"), **TAG_STAGE_KEYS}


def schema() -> dict[str, dict[str, Key]]:
    """Every table and key a job file may hold."""
    tables = _tables()
    for name in THREADED:
        tables[name]["threads"] = _key(int, "this stage's threads (default: [job] threads)")
    return tables


def _tables() -> dict[str, dict[str, Key]]:
    return {
        "job": {
            "seed": _key(int, "seeds every stage (default 0)"),
            "threads": _key(int, "threads of every stage: numba, faiss, torch (0 = all cores)"),
            "device": _key(str, "CNN stages (default auto)", ("auto", "cpu", "cuda")),
            "data_dir": _key(str, "data directory for dataset names"),
            "run_dir": _key(str, "run directory (default runs/<job file stem>)"),
        },
        "data": {
            "source": _key(str, "interaction file or dataset name"),
            "simulate": _key(dict, "cfcore.simulate options: a simulated world instead"),
            "format": _key(str, "reader format of source (default auto)"),
            "min_rating": _key(float, "keep ratings >= this as interactions"),
            "min_interactions": _key(int, "Fang §3 filter (10): items and users with fewer go"),
            "max_interactions": _key(int, "... and with more (Fang: 20000)"),
            "min_user_interactions": _key(int, "users' own lower bound"),
            "max_user_interactions": _key(int, "users' own upper bound"),
            "images": _key(str, "image folder, CSV item_id,path or movielens-posters"),
            "id_space": _key(str, "poster folder ids", ("ml-100k", "movielens")),
            "labels": _key(str, "labels for the linear probe (a dataset name, a CSV...)"),
            "owners": _key(str, "CSV item_id,owner for the owner-viewed measure"),
        },
        "split": {
            "test_fraction": _key(float, "items held out as queries (default 0.2)"),
            "validation": _key(float, "per-user fraction for per-epoch CF validation (0.1)"),
        },
        "negatives": {
            "neg_ratio": _key(float, "negatives per positive (default: the Factorizer's)"),
            "neg_weighting": _key(str, "", ("log-popularity", "popularity", "uniform")),
        },
        "factorize": _factorize_keys(),
        "cluster": _cluster_keys(),
        "train": dict(TRAIN_KEYS),
        "extract": {
            "weights": _key(str, "local torchvision state dict: adds ImageNet-features rows"),
            "batch_size": _key(int),
            "random_init": _key(bool, "also extract the random-init baseline (default true)"),
        },
        "evaluate": {
            "R": _key(int, "neighbours per query (default 100)"),
            "bootstrap": _key(int, "paired bootstrap resamples (default 2000)"),
            "probe": _key(bool, "linear probe on the labels (default true when labels)"),
        },
        "multitask": {
            **{k: v for k, v in TRAIN_KEYS.items() if k not in ("balanced", "val_fraction")},
            **MULTITASK_KEYS,
        },
        "tags": _tag_keys(),
        "report": {"title": _key(str)},
    }


# ----------------------------------------------------------------------------- the job
@dataclass
class Job:
    """A validated job file.

    Attributes
    ----------
    path : Path
        The job file.
    tables : dict
        ``{table: {key: value}}`` as written (defaults are the library's, resolved by stages).
    lines : dict
        Line of each ``(table, key)`` (``key`` None for the table header), for messages.
    text : str
        The file as it was read and validated ("" for a job passed to a stage's process).
    """

    path: Path
    tables: dict[str, dict[str, Any]]
    lines: dict[tuple[str, str | None], int] = field(default_factory=dict)
    text: str = ""

    # -------------------------------------------------------------- facts
    def table(self, name: str) -> dict[str, Any]:
        return dict(self.tables.get(name, {}))

    def options(self, name: str) -> dict[str, Any]:
        """A stage's table without ``threads``: the keyword arguments of its library call."""
        return {k: v for k, v in self.tables.get(name, {}).items() if k != "threads"}

    def threads_for(self, name: str) -> int:
        """Threads of stage ``name``: its table's ``threads``, else ``[job] threads``."""
        return int(self.tables.get(name, {}).get("threads", self.threads))

    @property
    def seed(self) -> int:
        return int(self.tables.get("job", {}).get("seed", 0))

    @property
    def threads(self) -> int:
        return int(self.tables.get("job", {}).get("threads", 0))

    @property
    def device(self) -> str:
        return str(self.tables.get("job", {}).get("device", "auto"))

    @property
    def data_dir(self) -> Path | None:
        value = self.tables.get("job", {}).get("data_dir")
        return self.path.parent / value if value else None

    @property
    def simulated(self) -> bool:
        return "simulate" in self.tables["data"]

    def default_run_dir(self) -> Path:
        value = self.tables.get("job", {}).get("run_dir")
        return self.path.parent / value if value else Path("runs") / self.path.stem

    def where(self, table: str, key: str | None = None) -> str:
        """``file:line: [table] key`` for messages (the table's line when the key is absent)."""
        line = self.lines.get((table, key)) or self.lines.get((table, None))
        loc = f"{self.path}:{line}" if line else str(self.path)
        return f"{loc}: [{table}]" + (f" {key}" if key else "")

    def stages(self) -> list[str]:
        """The stages this job runs, in order."""
        return [s.name for s in STAGES if not s.optional or s.name in self.tables]

    def resolve(self, table: str, key: str, *, dataset: bool = True) -> Path:
        """The file or folder a path option names (``JobError`` at its line when none)."""
        from cfcore.datasets import DATASETS, dataset_path

        value = str(self.tables[table][key])
        path = self.path.parent / os.path.expanduser(value)
        if path.exists():
            return path.resolve()
        if dataset and (value in DATASETS or value in EXTRA_DATASETS):
            try:
                return dataset_path(value, self.data_dir)
            except CollabfeatError as exc:
                raise JobError(f"{self.where(table, key)}: {exc}") from None
        raise JobError(f"{self.where(table, key)}: {path}: no such file or dataset")

    def path_or_name(self, table: str, key: str) -> str:
        """What to hand a reader that takes a path or a dataset name: the path when the value
        names a file or folder (relative to the job file), else the value (``ml-100k``)."""
        value = str(self.tables[table][key])
        path = self.path.parent / os.path.expanduser(value)
        return str(path) if path.exists() else value

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "tables": self.tables}


def _lines(text: str) -> dict[tuple[str, str | None], int]:
    """Line numbers of table headers and of keys (``key =``) inside each table."""
    out: dict[tuple[str, str | None], int] = {}
    table = ""
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_\-]+)\s*\]")
    assign = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]+\")\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        if m := header.match(line):
            table = m.group(1)
            out.setdefault((table, None), number)
        elif m := assign.match(line):
            out.setdefault((table, m.group(1).strip('"')), number)
    return out


def _type_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a table"}  # fmt: skip
    if float in kinds:
        kinds = tuple(k for k in kinds if k is not int)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _check_value(
    job: Job, table: str, key: str, value: Any, spec: Key, option: str | None = None
) -> None:
    """``value`` has the type (and is one of the choices) of ``spec``; ``option`` names an
    option inside the inline table ``key``."""
    where = job.where(table, key) + (f": {option}" if option else "")
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok:
        raise JobError(f"{where}: must be {_type_name(spec.types)}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise JobError(f"{where}: must be one of {', '.join(spec.choices)}, got {value!r}")


def _check_keys(
    job: Job,
    table: str,
    values: Mapping[str, Any],
    keys: Mapping[str, Key],
    within: str | None = None,
) -> None:
    """Every key known and of its type; ``within`` names the inline table holding ``values``
    (``simulate = {...}``), whose line the messages point at."""
    for key, value in values.items():
        where = job.where(table, within or key)
        if key not in keys:
            what = f"unknown {within} option {key!r}" if within else "unknown key"
            raise JobError(
                f"{where}: {what}; {within or f'[{table}]'} takes {', '.join(sorted(keys))}"
            )
        _check_value(job, table, within or key, value, keys[key], key if within else None)


def _library_check(job: Job, table: str, check: Callable[[], Any], key: str | None = None) -> None:
    """Run a library validator; its :class:`InputError` names a parameter: point at its line
    (or at ``key``'s, for options inside an inline table)."""
    try:
        check()
    except InputError as exc:
        message = str(exc)
        key = key or next((k for k in job.tables.get(table, {}) if message.startswith(k)), None)
        raise JobError(f"{job.where(table, key)}: {message}") from None


def _check_semantics(job: Job) -> None:
    data = job.tables["data"]
    if ("source" in data) == ("simulate" in data):
        raise JobError(
            f"{job.where('data')}: give exactly one of source (a file or dataset name) "
            "or simulate (a table of cfcore.simulate options)"
        )
    if job.simulated:
        from cfcore.simulate import WorldParams

        sim = data["simulate"]
        _check_keys(job, "data", sim, _simulate_keys(), within="simulate")
        params = {"seed": job.seed, **sim}
        _library_check(job, "data", lambda: WorldParams(**params).validated(), "simulate")
        for key in ("source", "format", "min_rating", "images", "id_space", "labels", "owners"):
            if key in data:
                raise JobError(
                    f"{job.where('data', key)}: not with simulate (the world brings its own "
                    "views, images, planted classes and owners)"
                )
    else:
        for key in ("source", "images", "labels", "owners"):
            if key in data:
                job.resolve("data", key)
        if "images" not in data:
            raise JobError(
                f"{job.where('data')}: images is required with source (the CNN stages need "
                "an image per item: a folder, a CSV item_id,path or movielens-posters)"
            )
    methods = job.tables.get("multitask", {}).get("methods", [])
    bad = [m for m in methods if m not in MULTITASK_METHODS]
    if bad or (methods == [] and "methods" in job.tables.get("multitask", {})):
        raise JobError(
            f"{job.where('multitask', 'methods')}: methods are some of "
            f"{', '.join(MULTITASK_METHODS)}, got {methods!r}"
        )
    if "multitask" in job.tables and not job.simulated and "labels" not in job.tables["data"]:
        raise JobError(
            f"{job.where('multitask')}: needs [data] labels (multi-label item categories)"
        )
    if "tags" in job.tables:
        _check_tags(job)
    for table in ("train", "extract", "multitask"):
        if "weights" in job.tables.get(table, {}):
            job.resolve(table, "weights", dataset=False)
    split = job.tables.get("split", {})
    if not 0 < split.get("test_fraction", 0.2) < 1:
        raise JobError(
            f"{job.where('split', 'test_fraction')}: must lie in (0, 1), "
            f"got {split['test_fraction']}"
        )
    if not 0 <= split.get("validation", 0.1) < 1:
        raise JobError(
            f"{job.where('split', 'validation')}: must lie in [0, 1), got {split['validation']}"
        )
    for table, key, low in (
        *((t, "threads", 0) for t in ("job", *THREADED)),
        ("cluster", "k", 2),
        ("extract", "batch_size", 1),
        ("evaluate", "R", 1),
        ("evaluate", "bootstrap", 100),
    ):
        value = job.tables.get(table, {}).get(key)
        if value is not None and value < low:
            raise JobError(f"{job.where(table, key)}: must be >= {low}, got {value}")
    if job.seed < 0:
        raise JobError(f"{job.where('job', 'seed')}: must be >= 0, got {job.seed}")

    from cfcore.factorize import Factorizer

    def factorizer() -> Any:
        return Factorizer(**factorizer_params(job))._resolve()

    _library_check(job, "factorize", factorizer)


def _check_tags(job: Job) -> None:
    """The ``[tags]`` table: its files, lists and the TagModel options."""
    from cfcore.tags import DISTRIBUTIONS, MODELS, TagModel

    tags = job.tables["tags"]
    for key, allowed in (("models", MODELS), ("distributions", DISTRIBUTIONS)):
        values = tags.get(key)
        if values is not None and (not values or any(v not in allowed for v in values)):
            raise JobError(
                f"{job.where('tags', key)}: {key} are some of {', '.join(allowed)}, got {values!r}"
            )
    if tags.get("users") is True:
        raise JobError(f"{job.where('tags', 'users')}: a user attribute file, or false")
    for key in ("tags", "users"):
        if isinstance(tags.get(key), str):
            job.resolve("tags", key, dataset=False)
    if "tags" not in tags and not job.simulated:
        raise JobError(
            f"{job.where('tags')}: tags = a file of user_id,item_id,tag is required "
            "(only a simulated world brings its own)"
        )
    if job.simulated and "tags" not in tags:
        if job.tables["data"]["simulate"].get("tag_rate", 1) == 0:
            raise JobError(
                f"{job.where('tags')}: the world has no tags (simulate tag_rate = 0); "
                "set tag_rate > 0 or tags = a file"
            )
    if tags.get("split") == "users" and tag_users(job) is None:
        raise JobError(
            f"{job.where('tags', 'split')}: users needs user attributes (users = a file)"
        )
    if not 0 < tags.get("test_fraction", 0.2) < 1:
        raise JobError(
            f"{job.where('tags', 'test_fraction')}: must lie in (0, 1), got {tags['test_fraction']}"
        )
    for key in ("vocabulary", "balance_top"):
        if tags.get(key, 1) < 1:
            raise JobError(f"{job.where('tags', key)}: must be >= 1, got {tags[key]}")
    params = tag_model_params(job)
    _library_check(job, "tags", lambda: TagModel(**params)._checked_params())


def tag_model_params(job: Job) -> dict[str, Any]:
    """The ``cfcore.TagModel`` keyword arguments of the ``[tags]`` stage (the model aside)."""
    options = {k: v for k, v in job.options("tags").items() if k not in TAG_STAGE_KEYS}
    return {**options, "seed": job.seed, "threads": job.threads_for("tags"), "progress": False}


def tag_users(job: Job) -> str | None:
    """How the ``[tags]`` stage describes users: ``"world"`` (the simulated world's
    users.csv), ``"file"`` (``users``) or None (a learned embedding per user)."""
    users = job.tables["tags"].get("users")
    if users is False:
        return None
    if isinstance(users, str):
        return "file"
    return "world" if job.simulated and "tags" not in job.tables["tags"] else None


def factorizer_params(job: Job) -> dict[str, Any]:
    """The Factorizer's keyword arguments: ``[factorize]``, ``[negatives]``, seed, threads."""
    return {
        **job.options("factorize"),
        **job.options("negatives"),
        "seed": job.seed,
        "threads": job.threads_for("factorize"),
        "progress": False,
    }


def parse_job(text: str, path: str | os.PathLike[str] = "job.toml") -> Job:
    """Validate the text of a job file; ``path`` names it in messages and anchors paths."""
    path = Path(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"{path}: not valid TOML: {exc}") from None
    job = Job(path, {}, _lines(text), text)
    tables = schema()
    for name, values in raw.items():
        if name not in tables:
            raise JobError(
                f"{job.where(name)}: unknown table; a job has {', '.join(tables)} "
                f"(stages: {' → '.join(STAGE_NAMES)})"
            )
        if not isinstance(values, dict):
            raise JobError(f"{job.where(name)}: must be a table ([{name}]), got {values!r}")
        _check_keys(job, name, values, tables[name])
        job.tables[name] = dict(values)
    if "data" not in job.tables:
        raise JobError(f"{path}: no [data] table (source = a file or dataset, or simulate)")
    _check_semantics(job)
    return job


def load_job(path: str | os.PathLike[str]) -> Job:
    """Read and validate a job file (:class:`JobError` names the line of any problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"{path}: no such job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{path}: cannot be read ({exc})") from None
    return parse_job(text, path)


def job_from_dict(data: Mapping[str, Any]) -> Job:
    """The :class:`Job` of :meth:`Job.to_dict` (how a stage's process receives it)."""
    return Job(Path(data["path"]), {k: dict(v) for k, v in data["tables"].items()})


# ----------------------------------------------------------------------------- stage wiring
#: The stages whose outputs each stage reads (its key includes their signatures).
UPSTREAM: dict[str, tuple[str, ...]] = {
    "data": (),
    "split": ("data",),
    "negatives": ("split",),
    "factorize": ("split",),  # draws its own negatives (the same stream as the stage's)
    "cluster": ("factorize",),
    "train": ("data", "cluster"),
    "extract": ("data", "train"),
    "evaluate": ("data", "split", "extract"),
    "multitask": ("data",),
    "tags": ("data", "extract"),
    "report": ("data", "split", "negatives", "factorize", "cluster", "train", "extract",
               "evaluate", "multitask", "tags"),
}  # fmt: skip

#: The options (table, key) that name external files, and the stages that read them.
EXTERNAL: dict[str, tuple[tuple[str, str], ...]] = {
    "data": (("data", "source"),),
    "train": (("data", "images"), ("train", "weights")),
    "extract": (("data", "images"), ("extract", "weights")),
    "evaluate": (("data", "labels"), ("data", "owners")),
    "multitask": (("data", "images"), ("data", "labels"), ("multitask", "weights")),
    "tags": (("tags", "tags"), ("tags", "users")),
}


def negative_params(job: Job) -> dict[str, Any]:
    """``neg_ratio`` and ``neg_weighting`` as the factorizer resolves them for the job."""
    from cfcore.factorize import Factorizer

    p = Factorizer(**factorizer_params(job))._resolve()
    return {"loss": p.loss, "neg_ratio": p.neg_ratio, "neg_weighting": p.neg_weighting}


def stage_params(job: Job, name: str) -> dict[str, Any]:
    """Everything besides its inputs that a stage's outputs depend on (part of its key)."""
    seed = {"seed": job.seed}
    if name == "data":
        data = job.table("data")
        return {**data, **seed} if job.simulated else data
    if name == "split":
        return {"test_fraction": 0.2, "validation": 0.1, **job.table("split"), **seed}
    if name == "negatives":
        return {**negative_params(job), **seed}
    if name == "factorize":
        return {k: v for k, v in factorizer_params(job).items() if k != "progress"}
    if name == "cluster":
        return {**job.options("cluster"), **seed, "threads": job.threads_for("cluster")}
    if name in ("train", "extract", "multitask"):
        data = job.tables["data"]
        return {
            **job.options(name),
            **seed,
            "threads": job.threads_for(name),
            "device": job.device,
            "id_space": data.get("id_space"),
        }
    if name == "evaluate":
        return {**job.options("evaluate"), **seed}
    if name == "tags":
        return {
            **TAG_STAGE_DEFAULTS,
            **job.options("tags"),
            **seed,
            "threads": job.threads_for("tags"),
        }
    return job.table(name)


def external_inputs(job: Job, name: str) -> dict[str, Path]:
    """The external files and folders a stage reads (a simulated world brings its own
    images, labels and owners)."""
    out = {}
    for table, key in EXTERNAL.get(name, ()):
        value = job.tables.get(table, {}).get(key)
        if isinstance(value, str) and not (job.simulated and table == "data"):
            out[f"{table}.{key}"] = job.resolve(table, key, dataset=table == "data")
    return out
