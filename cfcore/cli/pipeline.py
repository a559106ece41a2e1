"""``cfcore run-stage``: one torch-free stage of a pipeline job, in a process of its own.

Started by ``cfvision pipeline`` (never by hand), so that numba's and faiss's OpenMP never
share a process with torch's.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run-stage", hidden=True)
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("stage")
def run_stage(run_dir: Path, stage: str) -> None:
    """Run STAGE of the job in RUN_DIR (started by `cfvision pipeline`)."""
    from cfcore.cli.common import warnings_as_notes
    from cfcore.pipeline.stages import FUNCTIONS, execute

    with warnings_as_notes():
        execute(run_dir, stage, FUNCTIONS, click.echo)


COMMANDS = [run_stage]
