"""Exceptions raised by collabfeat.

Every error a user can cause derives from :class:`CollabfeatError`, so callers (and the CLI)
can catch one class and print one clear line.
"""

from __future__ import annotations


class CollabfeatError(Exception):
    """Base class of every error collabfeat raises on purpose."""


class InputError(CollabfeatError, ValueError):
    """Bad input: a file, a line in it, or an argument. The message names which."""


class ModelFormatError(CollabfeatError, ValueError):
    """A file is not the kind of collabfeat artifact that was expected."""


class DivergenceError(CollabfeatError, FloatingPointError):
    """Training produced NaN/inf or exploding parameters."""


class DatasetNotFoundError(CollabfeatError, FileNotFoundError):
    """A named dataset is not in the data directory."""


class OutputError(CollabfeatError, ValueError):
    """An output cannot or must not be written: it is an input, it would replace a file
    collabfeat did not write, or its location is not writable. The message names the file."""
