"""``python -m cfcore``: the ``cfcore`` command (how a pipeline runs its torch-free stages)."""

from cfcore.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="cfcore")
