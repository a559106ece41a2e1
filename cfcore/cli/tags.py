"""``cfcore tags train | predict | evaluate``: user-conditional tag prediction (Denton et al.).

A thin shell over :mod:`cfcore.tags`: it reads the tag file, the item descriptors and the user
attributes, applies the vocabulary and distribution, and prints or writes what the library
returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from cfcore.cli.common import (
    CollabfeatGroup,
    data_dir_option,
    seed_option,
    tag_columns_option,
    threads_option,
)
from cfcore.cli.engine import _emit_rows
from cfcore.errors import InputError
from cfcore.io import check_outputs

_MODELS = ("frequency", "bilinear", "user-biased", "3-way")

#: Named datasets that hold tag applications / user attributes, and the file in each.
_TAG_DATASETS = {"ml-latest-small": "tags.csv"}
_USER_DATASETS = {"ml-100k": "u.user"}


def _dataset_file(source: str, known: dict[str, str], data_dir: Path | None, what: str) -> str:
    """``source`` itself when it is a file, else the file of a named dataset."""
    if Path(source).exists():
        return source
    if source in known:
        from cfcore.datasets import dataset_path

        return str(dataset_path(source, data_dir) / known[source])
    raise InputError(f"{source}: no such file ({what} is a file or one of {', '.join(known)})")


# ---------------------------------------------------------------------------- options
def _data_options(f):
    """Everything that turns a tag file into the examples a model learns from."""
    options = [
        click.argument("tags_file", metavar="TAGS"),
        click.option(
            "--items",
            "items_path",
            required=True,
            metavar="VECTORS.npz",
            help="Item descriptors: an item-vectors .npz (cfvision extract) or a factor model "
            "(cfcore factorize; its item factors). L2-normalised before use.",
        ),
        click.option(
            "--users",
            "users_path",
            default=None,
            metavar="FILE",
            help="User attributes (CSV/TSV/pipe-separated, e.g. ml-100k u.user): numbers scaled "
            "to [0,1], gender -1/0/1, lat/lon to a unit 3-D vector, other columns one-hot. "
            "Without it, models learn one embedding per user id.",
        ),
        click.option("--user-sep", default=None, help="Separator of the --users file."),
        click.option(
            "--user-id-col",
            default=None,
            metavar="NAME|POS",
            help="User id column of the --users file [default: user_id or similar, else 0].",
        ),
        click.option(
            "--user-columns",
            default=None,
            metavar="A,B,...",
            help="Attribute columns to use [default: every column but the ids].",
        ),
        click.option(
            "--vocabulary",
            type=click.IntRange(min=1),
            default=10_000,
            show_default=True,
            help="Keep the N most frequent tags (Denton et al.: 10,000).",
        ),
        click.option(
            "--distribution",
            type=click.Choice(("natural", "balanced")),
            default="natural",
            show_default=True,
            help="balanced: the --balance-top most frequent tags downsampled to the frequency "
            "of the next one.",
        ),
        click.option(
            "--balance-top",
            type=click.IntRange(min=1),
            default=500,
            show_default=True,
            help="M of the balanced distribution (paper: 500).",
        ),
        click.option(
            "--missing",
            type=click.Choice(("error", "drop")),
            default="error",
            show_default=True,
            help="Examples whose item has no descriptor (or user no attributes): stop with an "
            "error, or drop them and say how many.",
        ),
        tag_columns_option,
        data_dir_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _model_options(f):
    options = [
        click.option(
            "--dim",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Embedding dimension d.",
        ),
        click.option(
            "--rank",
            type=click.IntRange(min=1),
            default=100,
            show_default=True,
            help="3-way: tensor rank K.",
        ),
        click.option(
            "--hidden",
            type=click.IntRange(min=1),
            default=24,
            show_default=True,
            help="3-way: units of the user layer h(u).",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=0),
            default=None,
            help="Maximum epochs; training stops earlier once the last learning-rate cut stops "
            "helping [default: 30; 3-way 60].",
        ),
        click.option(
            "--patience",
            type=click.IntRange(min=1),
            default=None,
            help="Epochs without a better validation score before the learning rate is "
            "divided by 10 [default: 2; 3-way 4].",
        ),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Initial learning rate [default: 0.01; 3-way 0.001], ÷10 on a validation plateau.",
        ),
        click.option(
            "--momentum", type=click.FloatRange(min=0, max=1), default=0.9, show_default=True
        ),
        click.option(
            "--margin",
            type=click.FloatRange(min=0),
            default=0.1,
            show_default=True,
            help="WARP margin.",
        ),
        click.option(
            "--max-sampled",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="WARP: tags drawn per positive before giving up.",
        ),
        click.option(
            "--validation",
            "validation_fraction",
            type=click.FloatRange(0, 1, max_open=True),
            default=0.1,
            show_default=True,
            help="Fraction of each user's training examples held out to drive the "
            "learning-rate schedule (0: none).",
        ),
        threads_option,
        seed_option,
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _model_params(kw: dict[str, Any]) -> dict[str, Any]:
    return {
        "dim": kw["dim"],
        "rank": kw["rank"],
        "hidden": kw["hidden"],
        "epochs": kw["epochs"],
        "patience": kw["patience"],
        "learning_rate": kw["lr"],
        "momentum": kw["momentum"],
        "margin": kw["margin"],
        "max_sampled": kw["max_sampled"],
        "validation_fraction": kw["validation_fraction"],
        "threads": kw["threads"],
        "seed": kw["seed"],
        "progress": not kw["quiet"],
    }


def _read_users(kw: dict[str, Any], encoder=None):
    """The --users file, encoded (with ``encoder``: a trained model's), or None."""
    from cfcore.attributes import read_user_attributes

    if kw.get("users_path") is None:
        return None
    path = _dataset_file(kw["users_path"], _USER_DATASETS, kw.get("data_dir"), "--users")
    columns = kw["user_columns"].split(",") if kw.get("user_columns") else None
    return read_user_attributes(
        path,
        sep=kw.get("user_sep"),
        id_col=kw.get("user_id_col"),
        columns=columns,
        encoder=encoder,
    )


def _input_files(kw: dict[str, Any]) -> list[Path]:
    """The files a tags command reads (no output may be one of them)."""
    return [Path(kw["tags_file"]), Path(kw["items_path"])] + (
        [Path(kw["users_path"])] if kw.get("users_path") is not None else []
    )


def _read_inputs(kw: dict[str, Any]):
    """``(data, item vectors, user attributes)`` prepared as the options say; drops are
    reported on stderr."""
    from cfcore.readers import read_tags
    from cfcore.tags import prepare_tags
    from cfcore.vectors import load_vectors

    path = _dataset_file(kw["tags_file"], _TAG_DATASETS, kw.get("data_dir"), "TAGS")
    data = read_tags(path, **kw["read_options"])
    items = load_vectors(kw["items_path"])
    users = _read_users(kw)
    data, n_items = data.only(items=items.ids)
    n_users = 0
    if users is not None:
        data, n_users = data.only(users=users.ids)
    if n_items or n_users:
        what = f"{n_items} example(s) whose item has no descriptor in {kw['items_path']}" + (
            f" and {n_users} whose user has no attributes" if n_users else ""
        )
        if kw["missing"] == "error":
            raise InputError(f"{what}; pass --missing drop to leave them out")
        click.echo(f"dropped {what}", err=True)
    if data.n_examples == 0:
        raise InputError(f"no example left: no tagged item has a descriptor in {kw['items_path']}")
    data = prepare_tags(data, kw["vocabulary"], kw["distribution"], kw["balance_top"], kw["seed"])
    return data, items, users


# ---------------------------------------------------------------------------- group
@click.group("tags", cls=CollabfeatGroup)
def tags_group() -> None:
    """User-conditional tag prediction (Denton et al. 2015).

    \b
    Rank the tags a user would put on an item from the item's descriptor (CNN features
    from `cfvision extract`, or a factor model's item factors) and the user (attributes,
    or a learned embedding per user id). Models: frequency (baseline), bilinear (item
    only), user-biased and 3-way (user-conditioned), trained with WARP.

    \b
    Examples (ml-latest-small: tags.csv in the data directory):
      cfcore factorize ml-latest-small -o model.npz
      cfcore tags evaluate ml-latest-small --items model.npz --split items
      cfcore tags train ml-latest-small --items model.npz -o tags.npz --model user-biased
      cfcore tags predict tags.npz --items model.npz 60756:2 89774:2 -k 5
    """


@tags_group.command("train")
@_data_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output tag model (.npz), written atomically.",
)
@click.option(
    "--model",
    "model_name",
    type=click.Choice(_MODELS[1:] + _MODELS[:1]),
    default="3-way",
    show_default=True,
)
@_model_options
def train_cmd(output: Path, model_name: str, **kw: Any) -> None:
    """Train a tag model on every example of TAGS and save it.

    \b
    TAGS is a CSV/TSV of tag applications (one user, item, tag per line, e.g. MovieLens
    tags.csv, whose tags are normalised: stripped, lower-case) or ml-latest-small.
    A 10% validation split of each user's examples drives the learning-rate schedule.

    \b
    Examples:
      cfcore tags train ml-latest-small --items model.npz -o tags.npz
      cfcore tags train my_tags.tsv --tag-col 2: --items posters.npz --users users.csv \\
          --model 3-way -o tags.npz
    """
    from cfcore.tags import TagModel

    check_outputs([output], _input_files(kw))
    data, items, users = _read_inputs(kw)
    click.echo(f"{data!r}", err=True)
    model = TagModel(model_name, **_model_params(kw)).fit(data, items, users)
    model.save(output)
    last = model.history_[-1] if model.history_ else {}
    click.echo(
        f"{model_name}: {len(model.history_)} epochs (kept epoch {model.best_epoch_}), "
        f"{model.examples_per_s_:,.0f} examples/s"
        + (f", validation P@1 {last['P@1']:.4f} R@10 {last['R@10']:.4f}" if "P@1" in last else "")
        + f"; wrote {output}",
        err=True,
    )


@tags_group.command("predict")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("pairs", nargs=-1, metavar="ITEM:USER...")
@click.option(
    "--items",
    "items_path",
    default=None,
    metavar="VECTORS.npz",
    help="Item descriptors of the kind the model was trained on.",
)
@click.option(
    "--users",
    "users_path",
    default=None,
    metavar="FILE",
    help="User attributes (for a model trained on them).",
)
@click.option("--user-sep", default=None, help="Separator of the --users file.")
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A CSV/TSV of item,user pairs (one per line) instead.",
)
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON grouped by item:user.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of stdout.",
)
@data_dir_option
def predict_cmd(
    model_path: Path,
    pairs: tuple[str, ...],
    items_path: str | None,
    users_path: str | None,
    user_sep: str | None,
    pairs_file: Path | None,
    k: int,
    as_json: bool,
    output: Path | None,
    data_dir: Path | None,
) -> None:
    """Top-k tags for (item, user) pairs, raw ids in and tags out.

    \b
    Examples:
      cfcore tags predict tags.npz --items model.npz 60756:2 89774:474 -k 5
      cfcore tags predict tags.npz --items posters.npz --users u.user --pairs pairs.csv --json
    """
    from cfcore.readers import read_table
    from cfcore.tags import TagModel

    model = TagModel.load(model_path)
    items, users = [], []
    if pairs_file is not None:
        for row in read_table(pairs_file).rows:
            if len(row) < 2:
                raise InputError(f"{pairs_file}: expected item,user on every line, got {row}")
            items.append(row[0])
            users.append(row[1])
    for pair in pairs:
        item, sep, user = pair.partition(":")
        if not sep or not item or not user:
            raise InputError(f"{pair!r}: expected ITEM:USER, e.g. 60756:2")
        items.append(item)
        users.append(user)
    if not items:
        raise InputError("no pairs: give ITEM:USER arguments or --pairs FILE")
    user_attributes = None
    if model.user_encoder_ is not None:
        if users_path is None:
            raise InputError(f"{model_path}: trained on user attributes; pass --users FILE")
        user_attributes = _read_users(
            {
                "users_path": users_path,
                "user_sep": user_sep,
                "data_dir": data_dir,
                "user_id_col": None,
                "user_columns": None,
            },
            encoder=model.user_encoder_,
        )
    tags, scores = model.predict(
        np.asarray(items),
        np.asarray(users),
        item_vectors=items_path,
        user_attributes=user_attributes,
        k=min(k, model.n_tags),
    )
    rows = [
        [f"{item}:{user}", r + 1, tags[n, r], float(scores[n, r])]
        for n, (item, user) in enumerate(zip(items, users, strict=True))
        for r in range(tags.shape[1])
    ]
    _emit_rows(["pair", "rank", "tag", "score"], rows, as_json, "pair", output)


@tags_group.command("evaluate")
@_data_options
@click.option(
    "--split",
    type=click.Choice(("items", "users")),
    default="items",
    show_default=True,
    help="users: disjoint users (the paper's; needs --users); items: each user's "
    "tagged items split, so learned user embeddings apply.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
)
@click.option(
    "--models",
    default=",".join(_MODELS),
    show_default=True,
    help="Comma-separated models to train and compare.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the settings and results here.",
)
@click.option(
    "--per-tag",
    "per_tag_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write per-tag precision/recall@10 (CSV) here.",
)
@_model_options
def evaluate_cmd(
    split: str,
    test_fraction: float,
    models: str,
    json_path: Path | None,
    per_tag_path: Path | None,
    **kw: Any,
) -> None:
    """Train every model on a training split and print P@1, R@10, A@10 on the test split.

    \b
    P@1: the top tag is one of the example's tags; R@10: the fraction of its tags in the
    top 10; A@10: at least one of them in the top 10 (Denton et al. §4.2). The vocabulary
    is chosen on the whole file before the split, as the paper does: a tag seen only in the
    test part is in it, and can only be missed.

    \b
    Examples:
      cfcore tags evaluate ml-latest-small --items model.npz --split items
      cfcore tags evaluate ml-latest-small --items posters.npz --missing drop \\
          --distribution balanced --balance-top 50 --json balanced.json
      cfcore tags evaluate tags.csv --items items.npz --users users.csv --split users
    """
    from cfcore.io import atomic_write_text, json_safe
    from cfcore.tags import compare_models

    chosen = tuple(m.strip() for m in models.split(",") if m.strip())
    unknown = [m for m in chosen if m not in _MODELS]
    if unknown or not chosen:
        raise InputError(f"--models: unknown {unknown or models!r}; choose from {_MODELS}")
    check_outputs([json_path, per_tag_path], _input_files(kw))
    if split == "users" and kw["users_path"] is None and set(chosen) & {"user-biased", "3-way"}:
        raise InputError(
            "--split users holds out whole users, who then have no learned embedding: pass "
            "--users FILE (user attributes), or use --split items"
        )
    data, items, users = _read_inputs(kw)
    train, test = data.split(split, test_fraction, kw["seed"])
    click.echo(
        f"{data!r}\nsplit {split}: train {train.n_examples} examples, test {test.n_examples}; "
        f"{kw['distribution']} distribution; users: "
        + ("attributes" if users is not None else "learned embeddings"),
        err=True,
    )
    header = (
        f"{'model':12s} {'P@1':>8s} {'R@10':>8s} {'A@10':>8s} {'examples/s':>12s} {'fit s':>8s}"
    )
    click.echo(header)

    def show(r: dict[str, Any]) -> None:
        eps = "–" if r["model"] == "frequency" else f"{r['examples_per_s']:,.0f}"
        click.echo(
            f"{r['model']:12s} {r['P@1']:8.4f} {r['R@10']:8.4f} {r['A@10']:8.4f} "
            f"{eps:>12s} {r['fit_seconds']:8.2f}"
        )

    results = compare_models(train, test, items, users, chosen, on_model=show, **_model_params(kw))
    if per_tag_path is not None:
        lines = ["model,tag,support,predicted,hits,precision@10,recall@10"]
        for r in results:
            pt = r["per_tag"]
            for j, tag in enumerate(pt["tag"]):
                if pt["support"][j] or pt["predicted"][j]:
                    lines.append(
                        f"{r['model']},{json.dumps(str(tag))},{pt['support'][j]},"
                        f"{pt['predicted'][j]},{pt['hits'][j]},{pt['precision'][j]:.6g},"
                        f"{pt['recall'][j]:.6g}"
                    )
        atomic_write_text(per_tag_path, "\n".join(lines) + "\n")
        click.echo(f"wrote per-tag precision/recall to {per_tag_path}", err=True)
    if json_path is not None:
        settings = {k: v for k, v in kw.items() if k not in ("quiet",)}
        settings.update(split=split, test_fraction=test_fraction, models=list(chosen))
        doc = {
            "settings": json_safe(settings),
            "data": {
                "examples": data.n_examples,
                "applications": data.n_applications,
                "tags": data.n_tags,
                "train_examples": train.n_examples,
                "test_examples": test.n_examples,
            },
            "results": [json_safe({k: v for k, v in r.items() if k != "per_tag"}) for r in results],
        }
        atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
        click.echo(f"wrote {json_path}", err=True)


COMMANDS = [tags_group]
