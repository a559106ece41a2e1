"""Pieces shared by the ``cfcore`` subcommands: error handling, common options, inputs, outputs.

Every command that writes calls :func:`cfcore.io.check_outputs` first, with every file it will
write (side files included) and every file it reads (:func:`input_paths` resolves dataset
names), so that a bad ``-o`` fails before the work and no input is ever overwritten.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from cfcore.errors import CollabfeatError, InputError

F = TypeVar("F", bound=Callable[..., Any])


DEBUG_ENV_VAR = "COLLABFEAT_DEBUG"


class CollabfeatGroup(click.Group):
    """A click group that turns errors into one clear line and exit code 1.

    collabfeat's own errors (and missing/unreadable files, full disks) print their message.
    Anything else is a bug: it prints one line naming the exception and how to see the
    traceback (``COLLABFEAT_DEBUG=1``), which then propagates unchanged.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (
            CollabfeatError,
            FileNotFoundError,
            IsADirectoryError,
            PermissionError,
            MemoryError,
        ) as exc:
            raise click.ClickException(str(exc) or type(exc).__name__) from None
        except OSError as exc:  # e.g. no space left on device while writing an output
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV_VAR) == "1":
                raise
            cause = exc.__cause__ or exc.__context__ or exc
            if isinstance(exc, SystemError) and cause is not exc:  # a Numba kernel raised
                exc = cause
            first = (str(exc).splitlines() or [""])[0]
            raise click.ClickException(
                f"internal error {type(exc).__name__}: {first} (a bug: please report it; "
                f"{DEBUG_ENV_VAR}=1 shows the traceback)"
            ) from None


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
        "--threads",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Worker threads (0 = all cores).",
    )(f)


def seed_option(f: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def format_option(f: F) -> F:
    from cfcore.readers import FORMATS

    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="auto",
        show_default=True,
        help="Input format; 'auto' guesses from the file name.",
    )(f)


def min_rating_option(f: F) -> F:
    return click.option(
        "--min-rating",
        type=float,
        default=None,
        help="Count only ratings >= this as interactions (default: every rating is a view).",
    )(f)


def _columns_option(third: str, third_help: str) -> Callable[[F], F]:
    """``--sep``, ``--header/--no-header``, ``--user-col``, ``--item-col`` and
    ``--<third>-col``, collected into one ``read_options`` dict (only the options given)."""
    third_key = f"{third}_col"

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(
            *args: Any,
            sep: str | None,
            header: bool | None,
            user_col: str | None,
            item_col: str | None,
            **kwargs: Any,
        ) -> Any:
            given = dict(sep=sep, header=header, user_col=user_col, item_col=item_col)
            given[third_key] = kwargs.pop(third_key)
            return f(
                *args, read_options={k: v for k, v in given.items() if v is not None}, **kwargs
            )

        options = [
            click.option(
                "--sep", default=None, help="CSV/TSV field separator [default: ',' or tab]."
            ),
            click.option(
                "--header/--no-header",
                default=None,
                help="Whether the first CSV/TSV line names the columns [default: detected].",
            ),
            click.option(
                "--user-col",
                default=None,
                metavar="NAME|POS",
                help="User id column, by name or 0-based position [default: a well-known "
                "name such as user_id, else 0].",
            ),
            click.option(
                "--item-col",
                default=None,
                metavar="NAME|POS",
                help="Item id column [default: a well-known name such as item_id, else 1].",
            ),
            click.option(
                f"--{third}-col", third_key, default=None, metavar="NAME|POS", help=third_help
            ),
        ]
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


#: For interaction files: the columns of :func:`cfcore.readers.read_interactions`.
columns_option = _columns_option(
    "rating", "Rating column for --min-rating [default: 'rating' if present]."
)

#: For tag files: the columns of :func:`cfcore.readers.read_tags`.
tag_columns_option = _columns_option(
    "tag",
    "Tag column [default: a well-known name such as tag, else 2]; 'N:' reads every field "
    "from position N to the end of the line as a tag (user<TAB>item<TAB>tag...).",
)


def force_option(f: F) -> F:
    """``--force``: replace existing side files that collabfeat did not write."""
    return click.option(
        "--force",
        is_flag=True,
        help="Replace an existing file in a side file's place even when collabfeat did not "
        "write it (inputs are never overwritten).",
    )(f)


def input_paths(
    *sources: str | os.PathLike[str] | None, data_dir: Path | None = None
) -> list[Path]:
    """The files that INPUT arguments read, for :func:`cfcore.io.check_outputs`.

    A path is itself; a dataset name (``ml-100k``) that is not a path is its ratings file in
    the data directory; anything else (``None``, a list of ids ``"1,2"``) reads no file.
    """
    from cfcore.datasets import DATASETS, dataset_path
    from cfcore.errors import DatasetNotFoundError

    out: list[Path] = []
    for source in sources:
        if source is None:
            continue
        if os.path.exists(source):
            out.append(Path(source))
        elif str(source) in DATASETS:
            try:
                out.append(dataset_path(str(source), data_dir) / DATASETS[str(source)].marker)
            except DatasetNotFoundError:
                pass  # the command itself will say so
    return out


def load_input(
    source: str,
    fmt: str = "auto",
    data_dir: Path | None = None,
    min_rating: float | None = None,
    **read_options: Any,
):  # -> Interactions
    """Read INPUT: a path, or the name of a dataset in the data directory
    (:func:`cfcore.datasets.load_interactions`)."""
    from cfcore.datasets import load_interactions

    inter = load_interactions(source, data_dir, min_rating, fmt, **read_options)
    if inter.n_duplicates:
        n = inter.n_duplicates
        click.echo(
            f"note: {source}: {n} duplicate (user, item) row{'s' if n > 1 else ''} counted once",
            err=True,
        )
    return inter


def read_table(path: Path, what: str) -> list[list[str]]:
    """Rows of a small CSV/TSV (comma, tab or whitespace separated), without a header row."""
    text = path.read_text(encoding="utf-8-sig")
    sample = text[:4096]
    delim = "\t" if "\t" in sample else ("," if "," in sample else None)
    rows: list[list[str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = next(csv.reader([line], delimiter=delim)) if delim else line.split()
        fields = [f.strip() for f in fields]
        if (
            lineno == 1
            and fields
            and fields[0].lower() in ("item_id", "itemid", "item", "id", "movieid")
        ):
            continue
        rows.append(fields)
    if not rows:
        raise InputError(f"{path}: no {what} in the file")
    return rows


@contextlib.contextmanager
def warnings_as_notes(*skip: type[Warning]) -> Iterator[None]:
    """Collect the library's warnings in the block and print each distinct one afterwards as
    a ``note:`` line on standard error (without the source line Python would show); warnings
    of the ``skip`` categories are left out (the command reports them itself)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            messages = [str(w.message) for w in caught if not issubclass(w.category, skip)]
            for message in dict.fromkeys(messages):
                click.echo(f"note: {message}", err=True)


def _validated(check: Callable[[Any, str], Any]) -> Callable[..., Any]:
    """A click callback running the library's validator ``check(value, name)``."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value, param.name or "")
        except InputError as exc:
            raise click.BadParameter(str(exc).split(": ", 1)[-1]) from None

    return callback


def negatives_options(
    weighting_default: str | None,
    weighting_help: str,
    ratio_default: float | None = 2.0,
    ratio_help: str = "(Fang et al.: 2).",
) -> Callable[[F], F]:
    """``--neg-ratio`` and ``--neg-weighting``: the library's ``neg_ratio``/``neg_weighting``,
    checked by its validators (:mod:`cfcore.sampling`), passed on under those names
    (``None`` defaults: the library decides).

    The old spellings ``--ratio``, ``--weighting`` and ``--neg-weight`` still work (hidden from
    ``--help``; a ``note:`` says to use the new ones).
    """
    from cfcore.sampling import WEIGHTINGS, check_neg_ratio, check_neg_weighting

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(
            *args: Any, old_ratio: float | None, old_weighting: str | None, **kwargs: Any
        ) -> Any:
            for old, new, value in (
                ("--ratio is", "neg_ratio", old_ratio),
                ("--weighting and --neg-weight are", "neg_weighting", old_weighting),
            ):
                if value is not None:
                    click.echo(f"note: {old} deprecated; use --{new.replace('_', '-')}", err=True)
                    kwargs[new] = value
            return f(*args, **kwargs)

        options = [
            click.option(
                "--neg-ratio",
                type=float,
                default=ratio_default,
                show_default=ratio_default is not None,
                callback=_validated(check_neg_ratio),
                help="Sampled negatives per positive, n_j = neg-ratio × |positives_j| "
                + ratio_help,
            ),
            click.option(
                "--neg-weighting",
                default=weighting_default,
                show_default=weighting_default is not None,
                metavar="[" + "|".join(WEIGHTINGS) + "]",
                callback=_validated(check_neg_weighting),
                help=weighting_help,
            ),
            click.option(
                "--ratio",
                "old_ratio",
                type=float,
                hidden=True,
                callback=_validated(check_neg_ratio),
            ),
            click.option(
                "--weighting",
                "--neg-weight",
                "old_weighting",
                hidden=True,
                callback=_validated(check_neg_weighting),
            ),
        ]
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate
