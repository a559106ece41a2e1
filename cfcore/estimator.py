"""The scikit-learn estimator contract, stated once for every collabfeat model.

The constructor only stores its keyword parameters; :meth:`Estimator.get_params` reads them
back by name and :meth:`Estimator.set_params` changes them (an unknown name is an
:class:`~cfcore.errors.InputError`). Learned state ends in ``_``.
"""

from __future__ import annotations

import inspect
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
