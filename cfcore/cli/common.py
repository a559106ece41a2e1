"""Pieces shared by the ``cfcore`` subcommands: error handling, common options, inputs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cfcore.errors import CollabfeatError, InputError

F = TypeVar("F", bound=Callable[..., Any])


class CollabfeatGroup(click.Group):
    """A click group that turns collabfeat's errors into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CollabfeatError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise click.ClickException(str(exc)) from None


def data_dir_option(f: F) -> F:
    """``--data-dir``: where named datasets live (default: $COLLABFEAT_DATA, ../shared/data...)."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Data directory for named datasets [default: $COLLABFEAT_DATA, ../shared/data, "
        "~/.cache/collabfeat/data].",
    )(f)


def threads_option(f: F) -> F:
    return click.option(
        "--threads", type=click.IntRange(min=0), default=0, show_default=True,
        help="Worker threads (0 = all cores).",
    )(f)


def seed_option(f: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def format_option(f: F) -> F:
    from cfcore.readers import FORMATS

    return click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
        help="Input format; 'auto' guesses from the file name.",
    )(f)


def min_rating_option(f: F) -> F:
    return click.option(
        "--min-rating", type=float, default=None,
        help="Count only ratings >= this as interactions (default: every rating is a view).",
    )(f)


def load_input(source: str, fmt: str = "auto", data_dir: Path | None = None,
               min_rating: float | None = None):  # -> Interactions
    """Read INPUT: a path, or the name of a dataset in the data directory."""
    from cfcore.datasets import DATASETS, load_movielens
    from cfcore.readers import read_interactions

    if not os.path.exists(source):
        if source in DATASETS:
            return load_movielens(source, data_dir, min_rating=min_rating)
        raise InputError(f"{source}: no such file (INPUT is a file or a dataset name: "
                         f"{', '.join(DATASETS)})")
    return read_interactions(source, fmt, min_rating=min_rating)
