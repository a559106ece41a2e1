"""The ``cfcore`` command: one click group, one module per family of subcommands."""

from __future__ import annotations

import click

from cfcore.cli.common import CollabfeatGroup


@click.group(
    cls=CollabfeatGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="collabfeat")
def cli() -> None:
    """collabfeat core: implicit feedback → factors → pseudo-classes.

    \b
    A typical pipeline (Fang et al. 2015) on MovieLens-100k (D = the data directory):
      cfcore download ml-100k
      cfcore factorize ml-100k -o model.npz --validation 0.2   # rmse/sampled_pr/auc per epoch
      cfcore factorize D/ml-100k/u1.base -o m1.npz             # held-out evaluation:
      cfcore evaluate m1.npz D/ml-100k/u1.test --train D/ml-100k/u1.base --baseline
      cfcore recommend model.npz ml-100k 1 2 -k 10
      cfcore similar model.npz 1 -k 10                          # cosine in latent space
      cfcore cluster model.npz -k 50 -o labels.npz              # pseudo-classes for cfvision
      cfcore neighbors model.npz -k 100 -o nn.npz
      cfcore retrieval-report nn.npz ml-100k --genres ml-100k -o fig5.png

    INPUT arguments take a file (u.data, ratings.dat, ratings.csv, any CSV/TSV,
    Parquet, or an .npz written by collabfeat) or the name of a dataset in the data
    directory (--data-dir, $COLLABFEAT_DATA, ../shared/data, ~/.cache/collabfeat/data).
    """


def _register() -> None:
    from cfcore.cli import cluster, data, engine, pipeline, simulate, tags

    for module in (data, engine, cluster, tags, simulate, pipeline):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()
