"""Options and helpers shared by the ``cfvision`` commands (one definition each)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cfvision.data import ID_SPACES

#: :data:`cfvision.models.ARCHITECTURES`, spelled out so that ``--help`` does not import torch.
ARCH_CHOICES = ("alexnet", "resnet18", "mobilenet_v3_small", "regnet_y_400mf", "small")


def device_option(f):
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="auto = CUDA when available, else CPU.",
    )(f)


def images_options(f):
    f = click.option(
        "--on-bad-image",
        type=click.Choice(["skip", "fail"]),
        default="skip",
        show_default=True,
        help="Missing/unreadable images: leave them out (listed in a report) or stop.",
    )(f)
    f = click.option(
        "--id-space",
        type=click.Choice(list(ID_SPACES)),
        default=None,
        help="MovieLens poster folder only (required there): key the posters by ml-100k item "
        "id or by MovieLens movieId (ml-1m, ml-latest-small).",
    )(f)
    f = click.option(
        "--image-size",
        type=click.IntRange(min=8),
        default=None,
        help="Crop size (paper: 224 crops of the central square of the image resized to a "
        "short side of 256; the 256 scales with it) [train default: 224; extract default: "
        "the checkpoint's].",
    )(f)
    f = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the decoded-image cache lives, shared by runs [default: "
        "$COLLABFEAT_CACHE/images or ~/.cache/collabfeat/images].",
    )(f)
    f = click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=None,
        help="DataLoader worker processes [default: 0 on CPU, min(4, cores) on CUDA].",
    )(f)
    return f


def labels_options(f):
    f = click.option(
        "--labels-col",
        default=None,
        metavar="NAME|POS",
        help="Labels CSV: the labels column [default: labels, genres, label...].",
    )(f)
    f = click.option(
        "--item-col",
        default=None,
        metavar="NAME|POS",
        help="Labels CSV: the item id column [default: item_id, movieId, item...].",
    )(f)
    return f


def torch_threads() -> None:
    """Respect OMP_NUM_THREADS when set (torchrun sets it to 1 per process)."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        import torch

        torch.set_num_threads(int(n))


def training_options(f):
    """The optimisation options of every training command (``train``, ``multitask``,
    ``experiment``): backbone, epochs, batch, optimizer, schedule, dropout, AMP, progress."""
    options = [
        click.option(
            "--arch",
            type=click.Choice(list(ARCH_CHOICES)),
            default="resnet18",
            show_default=True,
            help="Backbone (alexnet is the paper's).",
        ),
        click.option(
            "--weights",
            type=click.Path(path_type=Path),
            default=None,
            help="Local torchvision state dict to start from (e.g. ImageNet); default random init.",
        ),
        click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Per process.",
        ),
        click.option(
            "--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True
        ),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="[default: 0.1·batch/256 for SGD, 1e-3 for AdamW]",
        ),
        click.option("--momentum", type=float, default=0.9, show_default=True),
        click.option(
            "--weight-decay",
            type=click.FloatRange(min=0),
            default=None,
            help="[default: 5e-4 for SGD, 0.05 for AdamW]",
        ),
        click.option(
            "--schedule",
            type=click.Choice(["cosine", "step", "constant"]),
            default="cosine",
            show_default=True,
        ),
        click.option(
            "--step-size",
            type=click.IntRange(min=1),
            default=None,
            help="Step schedule: epochs between decays [default: epochs/3].",
        ),
        click.option(
            "--gamma", type=float, default=0.1, show_default=True, help="Step schedule factor."
        ),
        click.option(
            "--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True
        ),
        click.option(
            "--amp/--no-amp", default=True, show_default=True, help="Mixed precision on CUDA."
        ),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def collab_options(f):
    """Settings of collaborative image understanding shared by ``multitask`` and
    ``experiment`` (Bibas et al. 2022; defaults from the paper where it gives them)."""
    options = [
        click.option(
            "--alpha",
            type=click.FloatRange(min=0),
            default=1.5,
            show_default=True,
            help="Weight α of the auxiliary loss (eq. 3; the paper: 1 < α < 2).",
        ),
        click.option(
            "--omega-cap",
            type=click.FloatRange(min=0, min_open=True),
            default=5.0,
            show_default=True,
            help="Cap Ω of the confidences, in units of their mean (eq. 2).",
        ),
        click.option(
            "--margin",
            type=click.FloatRange(min=0),
            default=0.2,
            show_default=True,
            help="Contrastive: the triplet margin τ (L2-normalised predictions).",
        ),
        click.option(
            "--holdout",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=0.3,
            show_default=True,
            help="Labelled items held out as new images, half validation, half test; their "
            "interactions are removed before factorizing.",
        ),
        click.option(
            "--factors",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="CF vector size f (the paper's).",
        ),
        click.option(
            "--cf-loss",
            type=click.Choice(["bpr", "warp", "logistic", "squared"]),
            default="bpr",
            show_default=True,
            help="Loss of the factorization that gives the CF vectors (cfcore.Factorizer).",
        ),
        click.option(
            "--cf-epochs",
            type=click.IntRange(min=1),
            default=30,
            show_default=True,
            help="Epochs of that factorization.",
        ),
        click.option(
            "--cf-standardize",
            is_flag=True,
            help="Standardise each CF dimension before reconstructing it (default: centre "
            "and scale all dimensions alike).",
        ),
        click.option(
            "--min-rating",
            type=float,
            default=None,
            help="Count only ratings >= this as interactions [default: every rating].",
        ),
        click.option(
            "--aux-epochs",
            type=click.IntRange(min=1),
            default=None,
            help="Sequential: epochs of the auxiliary phase [default: --epochs].",
        ),
        click.option(
            "--n-boot",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="Bootstrap resamples of the test items for the CIs.",
        ),
        click.option(
            "--allow-partial",
            is_flag=True,
            help="Go on when fewer than half the labelled items have an image or interactions.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f
