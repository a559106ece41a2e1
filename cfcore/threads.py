"""How many worker threads a call gets, and pinning Numba's pool to that many.

``threads=0`` means every core Numba may use (``NUMBA_NUM_THREADS``, the machine's cores
unless the environment lowers it); asking for more than that cannot run them and is clamped
with a :class:`ThreadsWarning` (the CLI prints it as a ``note:`` line). Every Numba-parallel
call of the library (:func:`cfcore.sampling.sample_negatives`, :class:`cfcore.Factorizer`)
resolves its ``threads`` here once and runs its kernels inside :func:`numba_threads`.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import numba

from cfcore.errors import InputError


class ThreadsWarning(UserWarning):
    """More threads were asked for than there are cores to run them; fewer are used."""


def available_threads() -> int:
    """The most threads Numba can run (``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def resolve_threads(threads: Any, name: str = "threads", stacklevel: int = 3) -> int:
    """The thread count to use for ``threads`` (an integer >= 0; 0 = all cores).

    Raises
    ------
    InputError
        ``threads`` is not a non-negative integer.

    Warns
    -----
    ThreadsWarning
        ``threads`` is larger than :func:`available_threads`; that many are used instead.
    """
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 0:
        raise InputError(f"{name}: expected an integer >= 0 (0 = all cores), got {threads!r}")
    limit = available_threads()
    if threads == 0:
        return limit
    if threads > limit:
        warnings.warn(
            f"{name}={int(threads)} is more than the {limit} core(s) available; using {limit}",
            ThreadsWarning,
            stacklevel=stacklevel,
        )
        return limit
    return int(threads)


@contextlib.contextmanager
def numba_threads(threads: int) -> Iterator[int]:
    """Run the block with ``threads`` Numba threads (already resolved, 1..available);
    restore the previous count afterwards."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(previous)
