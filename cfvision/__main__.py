"""``python -m cfvision`` (and ``torchrun --nproc-per-node N -m cfvision train ...``)."""

from cfvision.cli import cli

if __name__ == "__main__":
    cli(prog_name="cfvision")
