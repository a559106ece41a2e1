"""Exceptions raised by collabfeat.

Every error a user can cause derives from :class:`CollabfeatError`, so callers (and the CLI)
can catch one class and print one clear line.
"""

from __future__ import annotations

from collections.abc import Mapping


class CollabfeatError(Exception):
    """Base class of every error collabfeat raises on purpose."""


class InputError(CollabfeatError, ValueError):
    """Bad input: a file, a line in it, or an argument. The message names which."""


class ModelFormatError(CollabfeatError, ValueError):
    """A file is not the kind of collabfeat artifact that was expected."""


class DivergenceError(CollabfeatError, FloatingPointError):
    """Training produced NaN/inf or exploding parameters.

    Carries what happened (``what``) and the settings that would help, by their API names
    (``learning_rate`` to lower, ``regularization`` to raise, with their values); ``str(e)``
    gives the advice under those names and :meth:`advice` under the caller's (the CLI
    names ``--lr`` and ``--reg``).
    """

    def __init__(
        self, what: str, learning_rate: float | None = None, regularization: float | None = None
    ) -> None:
        self.what = what
        self.learning_rate = learning_rate
        self.regularization = regularization
        super().__init__(self.advice())

    def advice(self, names: Mapping[str, str] | None = None) -> str:
        """The message, naming the parameters as in ``names`` (default: the API's names)."""
        names = {
            "learning_rate": "learning_rate",
            "regularization": "regularization",
            **(names or {}),
        }
        steps = []
        if self.learning_rate is not None:
            steps.append(f"lower {names['learning_rate']} (now {self.learning_rate:g})")
        if self.regularization is not None:
            steps.append(f"raise {names['regularization']} (now {self.regularization:g})")
        return f"{self.what}: {' or '.join(steps)}" if steps else self.what


class DatasetNotFoundError(CollabfeatError, FileNotFoundError):
    """A named dataset is not in the data directory."""
