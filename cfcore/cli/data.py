"""``cfcore download`` and ``cfcore info``: get datasets and look at interaction files."""

from __future__ import annotations

from pathlib import Path

import click

from cfcore.cli.common import (
    columns_option,
    data_dir_option,
    format_option,
    load_input,
    min_rating_option,
)


@click.command()
@click.argument("names", nargs=-1, required=True)
@data_dir_option
@click.option(
    "--base-url",
    default=None,
    help="Mirror to download from [default: $COLLABFEAT_DATA_URL or GroupLens].",
)
@click.option("--force", is_flag=True, help="Download again even when present.")
def download(
    names: tuple[str, ...], data_dir: Path | None, base_url: str | None, force: bool
) -> None:
    """Download public MovieLens datasets (ml-100k, ml-latest-small, ml-1m) into the data directory.

    \b
    Examples:
      cfcore download ml-100k
      cfcore download ml-100k ml-latest-small --data-dir ~/data
      COLLABFEAT_DATA_URL=http://mirror/movielens cfcore download ml-1m

    The archive is unpacked to a temporary folder and renamed into place, so an
    interrupted download leaves nothing half-written; ml-100k's u.data is checked
    against its published sha256. Afterwards INPUT arguments accept the name
    (`cfcore factorize ml-100k -o model.npz`).
    """
    from cfcore.datasets import download as fetch

    for name in names:
        path = fetch(name, data_dir, base_url=base_url, force=force)
        click.echo(f"{name}: {path}")


@click.command()
@click.argument("source")
@format_option
@data_dir_option
@min_rating_option
@columns_option
def info(
    source: str, fmt: str, data_dir: Path | None, min_rating: float | None, read_options: dict
) -> None:
    """Summarise an interaction file or dataset: users, items, density, activity.

    \b
    Examples:
      cfcore info ml-100k
      cfcore info ratings.csv --min-rating 4
      cfcore info views.tsv --format tsv
    """
    import numpy as np

    inter = load_input(source, fmt, data_dir, min_rating, **read_options)
    act, pop = inter.user_activity(), inter.item_popularity()
    click.echo(repr(inter))
    for what, counts in (("items per user", act), ("users per item", pop)):
        q = np.percentile(counts, [0, 50, 90, 100])
        click.echo(f"{what}: min {q[0]:.0f}, median {q[1]:.0f}, p90 {q[2]:.0f}, max {q[3]:.0f}")


COMMANDS = [download, info]
