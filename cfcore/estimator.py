"""The scikit-learn estimator contract, stated once for every collabfeat model.

The constructor only stores its keyword parameters; :meth:`Estimator.get_params` reads them
back by name and :meth:`Estimator.set_params` changes them (an unknown name is an
:class:`~cfcore.errors.InputError`). Learned state ends in ``_``. Parameters are checked at
``fit`` (as scikit-learn does) with :func:`check_number` and :func:`check_integer`.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any

from cfcore.errors import InputError


class Estimator:
    """Base class: ``get_params`` / ``set_params`` / ``repr`` from the constructor signature."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters by name (scikit-learn contract)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Set constructor parameters; unknown names raise :class:`InputError`."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise InputError(
                    f"{name}: not a parameter of {type(self).__name__} ({sorted(valid)})"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def check_number(value: Any, name: str, allow_zero: bool = False) -> float:
    """``value`` as a float if it is a finite number > 0 (>= 0 with ``allow_zero``), else an
    :class:`InputError` naming the parameter ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{name}: expected a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def check_integer(value: Any, name: str, low: int) -> int:
    """``value`` as an int if it is an integer >= ``low``, else an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)
