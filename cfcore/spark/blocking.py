"""DSGD's blocking and stratum schedule (Gemulla, Nijkamp, Haas & Sismanis, KDD 2011).

The users × items matrix is cut into ``p × p`` blocks: users into ``p`` user blocks, items
into ``p`` item blocks. Two blocks that share neither a user block nor an item block touch
disjoint factor rows, so SGD on them can run at the same time without any locking; a
*stratum* is a set of ``p`` such blocks, ``{(b, (b + d) mod p) : b = 0..p−1}`` for an offset
``d``, and the ``p`` offsets cover every block once. An epoch visits the ``p`` strata one
after another in a fresh random order (Gemulla et al.'s "stratum schedule"); within a stratum
the ``p`` blocks are trained in parallel, each by the single-machine kernel.

Rows are assigned to blocks through a seeded affine permutation
``position(x) = (a·x + c) mod n`` (``gcd(a, n) = 1``), cut into ``p`` contiguous ranges of
``⌈n/p⌉`` or ``⌊n/p⌋`` positions. So the blocks are balanced in rows, decorrelated from the
order of the raw ids (often by time or popularity), and a row's block and its index inside
the block are arithmetic — computable in a Spark SQL expression, on an executor or on the
driver, with no lookup table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Multiplier of the affine permutation, as a fraction of ``n`` (the golden ratio spreads
#: consecutive ids evenly over the blocks); moved to the nearest value coprime with ``n``.
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class Blocking:
    """``n`` rows cut into ``p`` blocks through the permutation ``(a·x + c) mod n``."""

    n: int
    p: int
    a: int
    c: int

    @classmethod
    def of(cls, n: int, p: int, seed: int, salt: int) -> Blocking:
        """A seeded blocking of ``n`` rows into ``p`` blocks (``salt`` tells users from items)."""
        if n < 1 or p < 1:
            raise ValueError(f"need n >= 1 and p >= 1, got n={n}, p={p}")
        rng = np.random.default_rng([seed, salt])
        a = max(1, round(n * _GOLDEN)) + int(rng.integers(0, max(1, n // 8) + 1))
        while math.gcd(a, n) != 1:
            a += 1
        return cls(n, p, a % n if n > 1 else 1, int(rng.integers(0, n)))

    @property
    def starts(self) -> np.ndarray:
        """First position of every block, and ``n`` at the end (int64, length ``p + 1``)."""
        b = np.arange(self.p + 1, dtype=np.int64)
        return (b * self.n + self.p - 1) // self.p

    @property
    def sizes(self) -> np.ndarray:
        """Rows per block (int64, length ``p``)."""
        return np.diff(self.starts)

    def position(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.int64) * self.a + self.c) % self.n

    def block(self, x: np.ndarray) -> np.ndarray:
        """Block of each row (int64)."""
        return self.position(x) * self.p // self.n

    def local(self, x: np.ndarray) -> np.ndarray:
        """Index of each row inside its block (int64)."""
        pos = self.position(x)
        return pos - self.starts[pos * self.p // self.n]

    def rows(self, b: int) -> np.ndarray:
        """The rows of block ``b`` in local order (int64): ``rows(b)[local(x)] == x``."""
        pos = np.arange(self.starts[b], self.starts[b + 1], dtype=np.int64)
        inverse = pow(self.a, -1, self.n) if self.n > 1 else 0
        return ((pos - self.c) % self.n) * inverse % self.n

    def sql(self, column: str) -> tuple[str, str]:
        """Spark SQL expressions ``(block, local index)`` of the integer column ``column``."""
        position = f"pmod({column} * {self.a}L + {self.c}L, {self.n}L)"
        block = f"cast(({position} * {self.p}L) div {self.n}L as int)"
        start = f"(({block} * {self.n}L + {self.p - 1}L) div {self.p}L)"
        return block, f"cast({position} - {start} as int)"


def stratum_order(p: int, seed: int, epoch: int) -> list[int]:
    """The offsets ``d`` of the strata of ``epoch`` in the order they are visited: a fresh
    permutation of ``0..p−1`` per epoch, from ``(seed, epoch)``."""
    return [int(d) for d in np.random.default_rng([seed, epoch, 7]).permutation(p)]


def stratum_blocks(p: int, offset: int) -> list[tuple[int, int]]:
    """The ``p`` blocks ``(user block, item block)`` of the stratum with ``offset``."""
    return [(b, (b + offset) % p) for b in range(p)]


def item_block_at(p: int, offset: int, user_block: int) -> int:
    """The item block that meets ``user_block`` in the stratum with ``offset``."""
    return (user_block + offset) % p


def user_block_at(p: int, offset: int, item_block: int) -> int:
    """The user block that meets ``item_block`` in the stratum with ``offset``."""
    return (item_block - offset) % p
