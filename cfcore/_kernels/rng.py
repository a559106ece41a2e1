"""Counter-based random numbers for Numba kernels.

Every parallel kernel derives an independent stream from integers it already knows —
``stream_seed(seed, epoch, index)`` — so the numbers a user/block sees never depend on
which thread runs it or how many threads there are (umap's per-sample state, not a global
generator). The state is one ``uint64`` held in a local variable; each draw returns the new
state and the value, so kernels never allocate.

Generator: splitmix64 (Steele, Lea & Flood 2014) — a Weyl sequence passed through a
64-bit finaliser. It passes BigCrush, needs no warm-up and any seed is valid.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_S32 = np.uint64(32)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@numba.njit(inline="always", cache=True)
def _finalize(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(inline="always", cache=True)
def stream_seed(seed: int, a: int, b: int) -> np.uint64:
    """Initial state of the stream for (seed, a, b), e.g. (seed, epoch, block)."""
    z = _finalize(np.uint64(seed) + _GOLDEN)
    z = _finalize(z ^ (np.uint64(a) + _GOLDEN))
    return _finalize(z ^ (np.uint64(b) * _GOLDEN + _M1))


@numba.njit(inline="always", cache=True)
def next_u64(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Advance ``state``; return ``(new_state, 64 random bits)``."""
    state = state + _GOLDEN
    return state, _finalize(state)


@numba.njit(inline="always", cache=True)
def next_float(state: np.uint64) -> tuple[np.uint64, float]:
    """Uniform float64 in [0, 1) with 53 random bits."""
    state, z = next_u64(state)
    return state, np.float64(z >> _S11) * _INV53


@numba.njit(inline="always", cache=True)
def next_below(state: np.uint64, n: int) -> tuple[np.uint64, int]:
    """Uniform integer in [0, n) for 0 < n < 2**32 (Lemire's multiply-shift, bias < n/2**32)."""
    state, z = next_u64(state)
    return state, np.int64(((z >> _S32) * np.uint64(n)) >> _S32)
