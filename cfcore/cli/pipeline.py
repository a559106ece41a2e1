"""``run-stage``: one stage of a pipeline job, in a process of its own.

Started by ``cfvision pipeline`` (never by hand): ``python -m cfcore run-stage`` runs the
torch-free stages, so that numba's and faiss's OpenMP never share a process with torch's;
``python -m cfvision run-stage`` (the same command, built here) runs the others.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click


def run_stage_command(module: str) -> click.Command:
    """The hidden ``run-stage`` command over the stage functions of ``module``
    (its ``FUNCTIONS``, imported when the command runs)."""

    @click.command("run-stage", hidden=True)
    @click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
    @click.argument("stage")
    def run_stage(run_dir: Path, stage: str) -> None:
        """Run STAGE of the job in RUN_DIR (started by `cfvision pipeline`)."""
        from cfcore.cli.common import warnings_as_notes
        from cfcore.pipeline.stages import execute

        functions = importlib.import_module(module).FUNCTIONS
        with warnings_as_notes():
            execute(run_dir, stage, functions, click.echo)

    return run_stage


COMMANDS = [run_stage_command("cfcore.pipeline.stages")]
