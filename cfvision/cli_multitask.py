"""``cfvision cf2label``, ``multitask`` and ``experiment``: collaborative image understanding.

Thin shells over :mod:`cfvision.cf2label`, :mod:`cfvision.multitask` and
:mod:`cfvision.experiment` (Bibas et al. 2022): argument parsing, messages, file names.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from cfcore.cli.common import data_dir_option, seed_option
from cfvision.cli_options import (
    collab_options,
    device_option,
    images_options,
    labels_options,
    torch_threads,
    training_options,
)

METHOD_CHOICES = ("image-only", "mtl", "sequential", "contrastive")
CONFIDENCE_CHOICES = ("uniform", "interactions", "loss")


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    """Command-line values → :class:`~cfvision.multitask.MultitaskConfig` fields.

    Paths become strings, ``--quiet`` becomes ``progress``, and an option left at None
    whose field has another default (``--image-size``) takes the field's default.
    """
    from cfvision.multitask import MultitaskConfig

    defaults = {f.name: f.default for f in fields(MultitaskConfig)}
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "quiet":
            out["progress"] = not value
            continue
        if key not in defaults:
            continue
        if value is None and defaults[key] is not None:
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out


# ----------------------------------------------------------------------------- cf2label
@click.command(
    "cf2label", short_help="Predict labels from CF vectors alone: the paper's pre-study."
)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("labels")
@click.option(
    "--test-frac",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.3,
    show_default=True,
    help="Fraction of the labelled items with a vector held out for testing.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save the trained CF2Label here (.pt, readable with weights_only=True).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the scores (mAP, CIs, per-class AP) as JSON.",
)
@click.option(
    "--n-boot",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Bootstrap resamples of the test items.",
)
@labels_options
@seed_option
@data_dir_option
def cf2label(
    model: Path,
    labels: str,
    test_frac: float,
    output: Path | None,
    json_out: Path | None,
    n_boot: int,
    item_col: str | None,
    labels_col: str | None,
    seed: int,
    data_dir: Path | None,
) -> None:
    """Predict items' labels from their CF vectors alone (Bibas et al. §4.2, Table 4).

    A two-layer ReLU MLP from the item factors of MODEL (a cfcore factor model or an
    item-vectors .npz) to LABELS (a dataset name such as ml-100k for its genres,
    movies.csv, movies.dat, u.item, or a CSV item_id,labels with |-separated labels),
    trained with binary cross-entropy on a seeded item split. Prints the test mAP with a
    95% bootstrap CI next to the popularity baseline (each class scored by its training
    frequency) and a paired bootstrap of the difference. Items of MODEL without a label are
    left out; a class without a test positive is left out of the mAP.

    \b
    Examples:
      cfcore factorize ml-100k -o bpr.npz --loss bpr --factors 64
      cfvision cf2label bpr.npz ml-100k --test-frac 0.3 --seed 0 -o cf2label.pt
      cfvision cf2label bpr.npz genres.csv --item-col movieId --json cf2label.json
    """
    from cfcore.io import atomic_write_text
    from cfvision.cf2label import cf2label_study, save_cf2label
    from cfvision.data import load_labels

    torch_threads()
    if not model.is_file():
        raise click.ClickException(f"CF model {model}: no such file")
    lab = load_labels(labels, data_dir, item_col, labels_col)
    net, study = cf2label_study(model, lab, test_frac, seed, n_boot=n_boot)
    click.echo(study.line())
    if output is not None:
        save_cf2label(
            output,
            net,
            {"class_names": study.class_names, "source": str(model), "labels": lab.source},
        )
        click.echo(f"model -> {output}")
    if json_out is not None:
        summary = {"model": str(model), "labels": lab.source, "seed": seed, **study.summary()}
        atomic_write_text(json_out, json.dumps(summary, indent=2) + "\n")
        click.echo(f"scores -> {json_out}")


# ----------------------------------------------------------------------------- multitask
@click.command("multitask", short_help="Train a CNN to label new images, guided by CF vectors.")
@click.argument("images")
@click.argument("labels")
@click.argument("interactions")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: split.csv, cf_model.npz, checkpoint.pt, metrics.jsonl, curves.png, "
    "test_scores.npz, result.json.",
)
@click.option(
    "--method",
    type=click.Choice(METHOD_CHOICES),
    default="mtl",
    show_default=True,
    help="mtl = MTL-reconstruct; image-only, sequential and contrastive are the baselines.",
)
@click.option(
    "--confidence",
    type=click.Choice(CONFIDENCE_CHOICES),
    default="uniform",
    show_default=True,
    help="Weight ω of each CF vector: 1, √(its users), or 1 / CF2Label's loss on its labels.",
)
@click.option(
    "--label-ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Fraction of the training labels kept (seeded, nested); the auxiliary task still "
    "uses every item.",
)
@click.option(
    "--split",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A split.csv (item_id,part) to use instead of a new seeded one.",
)
@click.option(
    "--cf-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CF vectors to use (a factor model fitted without the held-out items) instead of "
    "factorizing INTERACTIONS.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in OUTPUT from its checkpoint (a larger --epochs extends it).",
)
@collab_options
@training_options
@labels_options
@images_options
@device_option
@seed_option
@data_dir_option
def multitask(images: str, labels: str, interactions: str, **options: Any) -> None:
    """Train a CNN to label new images, guided by CF vectors (Bibas et al. 2022).

    The paper's protocol on IMAGES (a folder of <item_id>.<ext> images, a CSV item_id,path,
    or movielens-posters with --id-space), LABELS (multi-label categories: a dataset name,
    movies.csv, movies.dat, u.item, or a CSV item_id,labels) and INTERACTIONS (a file or a
    dataset name): --holdout of the labelled items become new images (half validation, half
    test) whose interactions are removed; the rest is factorized (BPR, 64 factors) into the
    CF vectors; the CNN learns the labels (class-balanced BCE) and, for --method mtl,
    reconstructs the CF vectors (exp(L1 + L2), weighted by --confidence). Prints and writes
    the test mAP with a 95% bootstrap CI.

    \b
    Examples:
      cfvision multitask movielens-posters ml-100k ml-100k --id-space ml-100k -o mtl/ \\
          --arch small --image-size 64 --epochs 15 --confidence loss
      cfvision multitask movielens-posters ml-100k ml-100k --id-space ml-100k -o base/ \\
          --arch small --image-size 64 --epochs 15 --method image-only
      cfvision multitask photos/ labels.csv clicks.csv -o run/ --label-ratio 0.2
      cfvision multitask photos/ labels.csv clicks.csv -o run/ --resume   # after a stop

    Runs of different methods compare item by item when they share the split and the CF
    model (--split run/split.csv --cf-model run/cf_model.npz); `cfvision experiment` does
    that for a whole grid.
    """
    from cfvision.multitask import MultitaskConfig, train_multitask

    torch_threads()
    cfg = MultitaskConfig(
        images=images,
        labels=labels,
        interactions=interactions,
        **_settings(options),
    )
    result = train_multitask(cfg, log=click.echo)
    click.echo(f"result -> {result.output / 'result.json'}")


# ----------------------------------------------------------------------------- experiment
def _list(kind: type) -> Any:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return [kind(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__}s") from None

    return parse


@click.command("experiment")
@click.argument("job", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", default=None, help="Images (as for `cfvision multitask`).")
@click.option("--labels", default=None, help="Labels (as for `cfvision multitask`).")
@click.option("--interactions", default=None, help="Interactions (a file or a dataset name).")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Experiment folder (seed-S/ratio-R/VARIANT/ runs, table.md, label_ratio.png, "
    "summary.json).",
)
@click.option(
    "--methods",
    callback=_list(str),
    default=None,
    help=f"Comma-separated, of {', '.join(METHOD_CHOICES)} [default: all].",
)
@click.option(
    "--confidences",
    callback=_list(str),
    default=None,
    help=f"For mtl, comma-separated, of {', '.join(CONFIDENCE_CHOICES)} [default: all].",
)
@click.option("--seeds", callback=_list(int), default=None, help="E.g. 0,1,2 [default: 0].")
@click.option(
    "--label-ratios", callback=_list(float), default=None, help="E.g. 1,0.5,0.2 [default: 1]."
)
@collab_options
@training_options
@labels_options
@images_options
@device_option
@data_dir_option
def experiment(job: Path | None, **options: Any) -> None:
    """Run the paper's comparison: methods × confidences × seeds × label ratios.

    Every run is `cfvision multitask` into OUTPUT/seed-S/ratio-R/VARIANT/, all variants of
    a seed sharing one split and one CF model; a rerun skips finished runs and resumes
    interrupted ones. Then writes OUTPUT/table.md (like the paper's Table 5: mAP, change
    against image-only with a paired-bootstrap CI and p-value, * for p < 0.01),
    OUTPUT/label_ratio.png (like Figs. 3-4) and OUTPUT/summary.json.

    JOB is a TOML file whose keys are methods, confidences, seeds, label_ratios and any
    setting of `cfvision multitask` (option names with _ for -, e.g. image_size = 64);
    options given on the command line override it.

    \b
    Examples:
      cfvision experiment job.toml
      cfvision experiment --images movielens-posters --id-space ml-100k \\
          --labels ml-100k --interactions ml-100k -o runs/bibas --arch small \\
          --image-size 64 --epochs 15 --seeds 0,1,2 --label-ratios 1,0.2
      cfvision experiment job.toml --epochs 5 -o runs/quick     # a shorter variant

    \b
    job.toml:
      images = "movielens-posters"
      id_space = "ml-100k"
      labels = "ml-100k"
      interactions = "ml-100k"
      output = "runs/bibas"
      seeds = [0, 1, 2]
      label_ratios = [1.0, 0.2]
      arch = "small"
      image_size = 64
      epochs = 15
    """
    from cfvision.experiment import load_job, run_experiment

    torch_threads()
    ctx = click.get_current_context()
    given = {
        k: v
        for k, v in options.items()
        if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    grid = {
        k: given.pop(k) for k in ("methods", "confidences", "seeds", "label_ratios") if k in given
    }
    overrides = {**_settings(given), **grid}
    if job is None and not overrides:
        raise click.UsageError("give a JOB file or the settings as options (see --help)")
    cfg = load_job(job, overrides)
    run_experiment(cfg, log=click.echo)
