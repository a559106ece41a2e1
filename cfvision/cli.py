"""The ``cfvision`` command: ``train``, ``extract``, ``evaluate`` (Fang et al.);
``cf2label``, ``multitask``, ``experiment`` (Bibas et al., in :mod:`cfvision.cli_multitask`);
``pipeline`` and ``report`` (one job for the whole paper, :mod:`cfvision.pipeline`).

Errors a user can cause (bad paths, missing labels, ids that do not match, a K that does not
match a checkpoint) end as one line and exit status 1, through cfcore's click group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cfcore.cli.common import (
    CollabfeatGroup,
    data_dir_option,
    input_paths,
    read_table,
    seed_option,
)
from cfcore.cli.pipeline import run_stage_command
from cfcore.io import check_outputs
from cfcore.pipeline.job import STAGE_NAMES
from cfvision.cli_multitask import cf2label, experiment, multitask
from cfvision.cli_options import (
    ARCH_CHOICES,
    device_option,
    images_options,
    labels_options,
    torch_threads,
    training_options,
)
from cfvision.data import MIN_MATCHED_FRACTION

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=CollabfeatGroup, context_settings=CONTEXT)
@click.version_option(package_name="collabfeat")
def cli() -> None:
    """collabfeat vision: image understanding from what users do with images.

    \b
    Fang et al. 2015 — a CNN trained on collaborative pseudo-classes, on MovieLens-100k
    posters:
      cfcore factorize ml-100k -o model.npz
      cfcore cluster model.npz -k 50 -o labels.npz
      cfvision train movielens-posters labels.npz -o run/ --id-space ml-100k \\
          --arch resnet18 --image-size 96
      cfvision extract movielens-posters --checkpoint run/checkpoint.pt -o learned.npz
      cfvision extract movielens-posters --id-space ml-100k --arch resnet18 -o random.npz
      cfvision evaluate learned.npz random.npz --interactions ml-100k --labels ml-100k

    \b
    The same as one resumable job with a report (examples/*.toml):
      cfvision pipeline examples/movielens_posters.toml    # runs/movielens_posters/report/
      cfvision pipeline examples/simulated.toml --dry-run  # the plan

    \b
    Bibas et al. 2022 — labelling new images, guided by CF vectors during training:
      cfvision cf2label model.npz ml-100k                  # do CF vectors know the genres?
      cfvision multitask movielens-posters ml-100k ml-100k --id-space ml-100k -o mtl/ \\
          --arch small --image-size 64 --epochs 15 --confidence loss
      cfvision experiment job.toml                         # methods × seeds × label ratios

    IMAGES is a folder of <item_id>.<ext> images, a CSV item_id,path, a folder with a
    poster_index.csv (the MovieLens posters: choose --id-space), or the dataset name
    movielens-posters. Images are decoded once into a uint8 cache (--cache-dir).
    Distributed: torchrun --nproc-per-node N -m cfvision train ...
    """


# ----------------------------------------------------------------------------- train
@cli.command()
@click.argument("images")
@click.argument("labels")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: checkpoint.pt, metrics.jsonl, curves.png, image_report.txt.",
)
@training_options
@click.option(
    "--balanced", is_flag=True, help="Sample uniformly over classes, then items (DeepCluster)."
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Labelled items held out for validation metrics.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help=f"Train even when fewer than {int(100 * MIN_MATCHED_FRACTION)}% of the labelled "
    "items have an image (they are listed in image_report.txt).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from OUTPUT/checkpoint.pt (a larger --epochs extends the run).",
)
@labels_options
@images_options
@device_option
@seed_option
@data_dir_option
def train(
    images: str,
    labels: str,
    output: Path,
    arch: str,
    weights: Path | None,
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float | None,
    momentum: float,
    weight_decay: float | None,
    schedule: str,
    step_size: int | None,
    gamma: float,
    dropout: float,
    balanced: bool,
    val_fraction: float,
    allow_partial: bool,
    amp: bool,
    resume: bool,
    quiet: bool,
    item_col: str | None,
    labels_col: str | None,
    on_bad_image: str,
    id_space: str | None,
    image_size: int | None,
    cache_dir: Path | None,
    workers: int | None,
    device: str,
    seed: int,
    data_dir: Path | None,
) -> None:
    """Train a CNN to predict the (pseudo-)class of each item's image.

    LABELS is a pseudo-labels .npz from `cfcore cluster`; a CSV item_id,label (one class
    per item) or item_id,labels with |-separated labels (multi-label); MovieLens movies.csv,
    movies.dat or u.item; or a dataset name (ml-100k: its genres). Training stops when
    fewer than half the labelled items have an image (ids from another dataset), unless
    --allow-partial.

    \b
    Examples:
      cfvision train movielens-posters labels.npz -o run/ --id-space ml-100k \\
          --arch small --image-size 64 --epochs 20
      cfvision train movielens-posters ml-100k -o genres/ --id-space ml-100k  # genres
      cfvision train photos/ classes.csv -o run/ --arch alexnet --balanced
      cfvision train photos/ classes.csv -o run/ --resume      # after an interruption
      cfvision train photos/ classes.csv -o run/ --resume --epochs 40   # train longer
      torchrun --nproc-per-node 2 -m cfvision train photos/ classes.csv -o run/
    """
    from cfvision.train import TrainConfig
    from cfvision.train import train as run

    torch_threads()
    cfg = TrainConfig(
        images=images,
        labels=labels,
        output=str(output),
        arch=arch,
        weights=str(weights) if weights else None,
        image_size=image_size or 224,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        step_size=step_size,
        gamma=gamma,
        dropout=dropout,
        balanced=balanced,
        val_fraction=val_fraction,
        workers=workers,
        cache_dir=str(cache_dir) if cache_dir else None,
        on_bad_image=on_bad_image,
        id_space=id_space,
        allow_partial=allow_partial,
        item_col=item_col,
        labels_col=labels_col,
        data_dir=str(data_dir) if data_dir else None,
        device=device,
        amp=amp,
        seed=seed,
        resume=resume,
        progress=not quiet,
    )
    result = run(cfg, log=click.echo)
    if result.dist.main:
        click.echo(f"checkpoint: {result.checkpoint}")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- extract
def _read_id_list(path: Path) -> Any:
    """Raw item ids: the first column of a CSV/text file, or ``item_ids`` of an artifact
    (pseudo-labels, item vectors, factor model)."""
    from cfcore.ids import parse_ids

    if not path.exists():
        raise click.ClickException(f"items file {path}: no such file")
    if path.suffix.lower() == ".npz":
        from cfcore.io import load_artifact

        arrays, header = load_artifact(path)
        if "item_ids" not in arrays:
            raise click.ClickException(f"{path}: a {header.get('kind')!r} file without item_ids")
        return parse_ids(arrays["item_ids"])
    return parse_ids([row[0] for row in read_table(path, "item ids") if row and row[0]])


@cli.command()
@click.argument("images")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output .npz (item-vectors: item_ids, vectors).",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="A cfvision checkpoint (from `cfvision train`).",
)
@click.option(
    "--arch",
    type=click.Choice(list(ARCH_CHOICES)),
    default=None,
    help="Without --checkpoint: this backbone at random init (seeded) or with --weights.",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="With --arch: a local torchvision state dict (ImageNet features).",
)
@click.option(
    "--items",
    "items_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Only these items (first column of a CSV, or the item_ids of a labels/vectors .npz).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bad-image report here.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@images_options
@device_option
@seed_option
@data_dir_option
def extract(
    images: str,
    output: Path,
    checkpoint: Path | None,
    arch: str | None,
    weights: Path | None,
    items_file: Path | None,
    batch_size: int,
    report: Path | None,
    quiet: bool,
    on_bad_image: str,
    id_space: str | None,
    image_size: int | None,
    cache_dir: Path | None,
    workers: int | None,
    device: str,
    seed: int,
    data_dir: Path | None,
) -> None:
    """Penultimate-layer features (AlexNet FC6, ResNet pooled), L2-normalised, to an .npz.

    \b
    Examples:
      cfvision extract movielens-posters --checkpoint run/checkpoint.pt -o learned.npz
      cfvision extract movielens-posters --id-space ml-100k --arch resnet18 \\
          --image-size 96 -o random.npz
      cfvision extract photos/ --arch resnet18 --weights resnet18-f37072fd.pth -o imagenet.npz

    With --checkpoint, the image size and the poster folder's --id-space default to the
    training run's.
    """
    import torch

    from cfcore.vectors import save_vectors
    from cfvision.data import load_image_index, prepare_images, resize_size
    from cfvision.extract import extract_features
    from cfvision.models import build_model, load_checkpoint, model_from_checkpoint
    from cfvision.train import resolve_device

    check_outputs([output, report], [checkpoint, weights, items_file])
    torch_threads()
    if (checkpoint is None) == (arch is None):
        raise click.ClickException(
            "give exactly one of --checkpoint (a trained model) or --arch "
            "(random init, or --weights)"
        )
    if weights is not None and arch is None:
        raise click.ClickException("--weights needs --arch")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        model = model_from_checkpoint(state, checkpoint)
        size = image_size or int(state.get("image_size", 224))
        id_space = id_space or state.get("config", {}).get("id_space")
        meta: dict[str, Any] = {"source": str(checkpoint), "arch": state["arch"], "init": "trained"}
    else:
        model = build_model(arch, 1, weights)
        size = image_size or 224
        meta = {
            "source": str(weights) if weights else "random-init",
            "arch": arch,
            "init": "weights" if weights else "random",
            "seed": seed,
        }
    index = load_image_index(images, id_space, data_dir)
    wanted = _read_id_list(items_file) if items_file else None
    got = prepare_images(
        index, wanted, resize_size(size), cache_dir, on_bad_image, progress=not quiet
    )
    click.echo(got.report.lines()[0])
    if report is not None:
        got.report.write(report)
    if not len(got):
        raise click.ClickException("no readable image for the requested items")
    vectors = extract_features(model, got, size, dev, batch_size, workers, progress=not quiet)
    meta.update(image_size=size, feature_dim=int(vectors.shape[1]), normalized=True)
    save_vectors(output, got.item_ids, vectors, meta)
    click.echo(f"{len(got)} × {vectors.shape[1]} features -> {output}")


# ----------------------------------------------------------------------------- evaluate
@cli.command()
@click.argument("vectors", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--interactions",
    "inter_source",
    required=True,
    help="Who viewed what: an interaction file or a dataset name (ml-100k).",
)
@click.option(
    "--test-items",
    type=click.Path(path_type=Path),
    default=None,
    help="Query items (first column of a CSV); the others are searched.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Without --test-items: random fraction of items used as queries (Fang §4.1).",
)
@click.option(
    "-R",
    "--ranks",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Neighbours per query (curve length).",
)
@click.option(
    "--labels",
    default=None,
    help="Labels for the linear probe and genre agreement: a dataset name (ml-100k: its "
    "genres), movies.csv, u.item, a CSV item_id,label(s), or a pseudo-labels .npz.",
)
@click.option(
    "--owners",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV item_id,owner (user id) for the owner-viewed count.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report as JSON.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG of the shared-viewer curves (Fang Fig. 5).",
)
@labels_options
@device_option
@seed_option
@data_dir_option
def evaluate(
    vectors: tuple[Path, ...],
    inter_source: str,
    test_items: Path | None,
    test_fraction: float,
    ranks: int,
    labels: str | None,
    owners: Path | None,
    output: Path | None,
    plot: Path | None,
    item_col: str | None,
    labels_col: str | None,
    device: str,
    seed: int,
    data_dir: Path | None,
) -> None:
    """Score feature files: shared-viewer curve, owner-viewed count, linear probe.

    Every VECTORS file (item-vectors from `cfvision extract`, or a factor model) is scored on
    the same items, the same query/train split and the same probe split, so the rows compare.

    \b
    Example (the paper's comparison: learned vs random-init vs ImageNet features):
      cfvision evaluate learned.npz random.npz imagenet.npz --interactions ml-100k \\
          --test-items test_items.csv --labels ml-100k -o report.json --plot curves.png
    """
    from cfcore.cli.common import load_input
    from cfvision.data import load_labels
    from cfvision.evaluate import compare_features
    from cfvision.train import resolve_device

    inputs = [*vectors, test_items, labels, owners, *input_paths(inter_source, data_dir=data_dir)]
    check_outputs([output, plot], inputs)
    resolve_device(device)  # validates the choice; the measures run in NumPy/faiss
    for path in vectors:
        if not path.is_file():
            raise click.ClickException(f"vectors file {path}: no such file")
    inter = load_input(inter_source, "auto", data_dir)
    result = compare_features(
        list(vectors),
        inter,
        test_items=_read_id_list(test_items) if test_items else None,
        test_fraction=test_fraction,
        R=ranks,
        labels=None if labels is None else load_labels(labels, data_dir, item_col, labels_col),
        owners=owners,
        seed=seed,
        plot=plot,
    )
    for line in result["table"]:
        click.echo(line)
    if output is not None:
        from cfcore.io import atomic_write_text

        atomic_write_text(
            output,
            json.dumps({k: v for k, v in result.items() if k not in ("table", "probes")}, indent=2)
            + "\n",
        )
        click.echo(f"report -> {output}")


# ----------------------------------------------------------------------------- Bibas et al.
cli.add_command(cf2label)
cli.add_command(multitask)
cli.add_command(experiment)


# ----------------------------------------------------------------------------- pipeline
@cli.command()
@click.argument("job_file", metavar="JOB.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the outputs go [default: the job's [job] run_dir, else runs/<JOB stem>].",
)
@click.option(
    "--from",
    "from_stage",
    type=click.Choice(list(STAGE_NAMES)),
    default=None,
    help="Run this stage and every later one even when they are up to date.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (what would run, and why); run nothing."
)
def pipeline(job_file: Path, run_dir: Path | None, from_stage: str | None, dry_run: bool) -> None:
    """Run Fang et al.'s whole pipeline from one job file, resumably, with a report.

    \b
    Stages: data → split → negatives → factorize → cluster → train → extract → evaluate
    (→ multitask → tags, when the job has their tables) → report. Each runs in its own
    process (data … cluster and tags as `python -m cfcore`, never importing torch; the
    others as `python -m cfvision`), writes into its own folder of
    the run directory, and is skipped when its parameters, input files and upstream
    outputs are unchanged. A job stopped at any point (Ctrl-C, kill -9) and run again
    redoes only the unfinished stage. RUN_DIR/manifest.json lists every stage's input
    hashes, parameters, package versions, timings and outputs; RUN_DIR/report/ holds
    report.md (+ PNGs) and the self-contained report.html.

    \b
    Examples:
      cfvision pipeline examples/simulated.toml             # runs/simulated/
      cfvision pipeline examples/movielens_posters.toml --dry-run
      cfvision pipeline job.toml --from train              # retrain, keep the factors
      cfvision pipeline job.toml --run-dir /scratch/run1

    The job file's tables are documented in cfcore.pipeline.job (and the README's
    "Pipeline jobs" section); an error names its line and key.
    """
    from cfvision.pipeline import run_job

    result = run_job(job_file, run_dir, from_stage=from_stage, dry_run=dry_run, log=click.echo)
    if not dry_run:
        report = result.run_dir / "report" / "report.html"
        ran = ", ".join(result.ran) or "nothing (every stage up to date)"
        click.echo(f"ran: {ran}\nreport: {report}")


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for report.md, its PNGs and report.html [default: RUN_DIR/report].",
)
@click.option(
    "--screenshot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also render report.html with headless Chromium into this PNG.",
)
@click.option("--title", default=None, help="Report title [default: from the job file name].")
def report_cmd(
    run_dir: Path, output: Path | None, screenshot: Path | None, title: str | None
) -> None:
    """(Re)write the report of a pipeline run, optionally with a screenshot of its HTML.

    \b
    Examples:
      cfvision report runs/simulated -o /tmp/report
      cfvision report runs/simulated --screenshot report.png
    """
    from cfcore.pipeline.rundir import RunDir
    from cfvision.report import screenshot as render
    from cfvision.report import write_report

    folder = output or run_dir / "report"
    check_outputs([folder / "report.md", folder / "report.html", screenshot])
    paths = write_report(RunDir(run_dir), folder, title)
    click.echo(f"report -> {paths['markdown']}, {paths['html']}")
    if screenshot is not None:
        render(paths["html"], screenshot)
        click.echo(f"screenshot -> {screenshot}")


cli.add_command(run_stage_command("cfvision.stages"))
