"""Seeded synthetic implicit feedback with a power-law shape and planted latent structure.

Real interaction logs are skewed on both sides: a few users do most of the clicking and a few
items get most of the clicks. Throughput depends on that skew (popular rows stay in cache), and
quality numbers need structure a factorization can find. The generator draws:

- **user activity** ``n_u``: ``min_per_user`` plus a log-normal share (σ = ``user_sigma``) of the
  remaining interactions, capped at half the catalogue (a log-normal fits observed activity
  distributions well; MovieLens-1M's is close to σ ≈ 1);
- **item popularity** ``p_i ∝ (r_i + q)^(-a)``: Zipf–Mandelbrot over a random popularity rank
  ``r_i`` (exponent ``zipf_a``, offset ``q = zipf_offset`` so the head is not absurdly heavy);
- **latent topics**: every item belongs to one of ``topics`` topics; every user has a primary
  and a secondary topic. Each interaction is drawn from the primary topic with probability
  ``0.75 · topic_affinity``, from the secondary with ``0.25 · topic_affinity``, otherwise from
  the whole catalogue — always proportionally to ``p_i`` within the chosen set. A model that
  learns the topics ranks held-out items well above popularity (``structure="topics"``, the
  ``synth-*`` datasets of the throughput suites);
- or **planted low-rank preferences** (``structure="low-rank"``, the ``lowrank-*`` datasets of
  the quality suite): every item has a soft membership ``m_i ~ Dirichlet(item_concentration)``
  over the ``topics`` topics and every user a mixture ``θ_u ~ Dirichlet(user_concentration)``;
  an interaction is drawn with probability ``a = topic_affinity`` from
  ``Σ_k θ_uk φ_k(i)``, ``φ_k(i) ∝ p_i m_ik``, otherwise from the catalogue ∝ ``p_i``. The
  expected matrix has rank ``topics + 1`` and no hard block structure, so recommenders are
  ranked by how well they recover a continuous low-rank preference, as on real logs.

Duplicate (user, item) draws are removed and each user is topped up (a few rounds) until it
has its ``n_u`` distinct items; a user whose candidates run out keeps fewer. Work is done in
chunks of users with one random stream per chunk (``numpy.random.default_rng([seed, chunk])``),
so the result depends only on the parameters and the seed, and memory stays bounded at 100 M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore.errors import InputError
from cfcore.interactions import Interactions

CHUNK_USERS = 32_768  # fixed: the output for a seed must not depend on anything else


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of :func:`power_law_interactions` (see the module docstring)."""

    n_users: int
    n_items: int
    nnz: int
    topics: int = 32
    user_sigma: float = 1.0
    zipf_a: float = 1.0
    zipf_offset: float = 10.0
    topic_affinity: float = 0.8
    min_per_user: int = 5
    seed: int = 0
    structure: str = "topics"
    user_concentration: float = 0.1
    item_concentration: float = 0.1


def _activity(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """Per-user target counts: ``min_per_user`` + a log-normal share of the rest, capped."""
    cap = max(1, spec.n_items // 2)
    base = min(spec.min_per_user, cap)
    rest = spec.nnz - base * spec.n_users
    if rest < 0:
        raise InputError(
            f"nnz={spec.nnz} is smaller than n_users × min_per_user = {base * spec.n_users}"
        )
    weights = rng.lognormal(0.0, spec.user_sigma, spec.n_users)
    counts = np.full(spec.n_users, base, dtype=np.int64)
    remaining = rest
    free = np.ones(spec.n_users, dtype=bool)
    for _ in range(8):  # redistribute what the cap cut off among the uncapped users
        if remaining <= 0 or not free.any():
            break
        share = weights * free
        extra = np.floor(share / share.sum() * remaining).astype(np.int64)
        counts += extra
        over = counts > cap
        counts[over] = cap
        free &= ~over
        remaining = spec.nnz - int(counts.sum())
    if remaining > 0 and free.any():  # the rounding leftovers: +1 to the heaviest free users
        idx = np.flatnonzero(free)
        idx = idx[np.argsort(-weights[idx], kind="stable")][:remaining]
        counts[idx] += 1
    return counts


def power_law_interactions(spec: SyntheticSpec, return_latent: bool = False) -> Any:
    """Generate a users × items binary matrix with power-law skew and planted structure.

    Parameters
    ----------
    spec : SyntheticSpec
        Shape (``n_users``, ``n_items``, ``nnz``), skew and topic parameters, and the seed.

    return_latent : bool
        Also return the latent structure: ``(interactions, item_topic, user_topics)`` with
        ``item_topic`` (n_items,) and ``user_topics`` (n_users, 2: primary, secondary) for
        ``structure="topics"``; ``(interactions, item_membership, user_mixture)``, both
        (n, topics), for ``structure="low-rank"``.

    Returns
    -------
    Interactions
        ``nnz`` distinct interactions (fewer only if heavy users exhaust their candidates;
        the shortfall is tiny for realistic densities), ids ``0..n-1``.

    Raises
    ------
    InputError
        Non-positive sizes, or more interactions than the matrix can hold.
    """
    if spec.n_users <= 0 or spec.n_items <= 0 or spec.nnz <= 0:
        raise InputError(f"n_users, n_items and nnz must be positive, got {spec}")
    if spec.nnz > 0.5 * spec.n_users * spec.n_items:
        raise InputError(f"nnz={spec.nnz} is too dense for {spec.n_users} × {spec.n_items}")
    if not 0.0 <= spec.topic_affinity <= 1.0:
        raise InputError(f"topic_affinity must lie in [0, 1], got {spec.topic_affinity}")
    if spec.topics < 1:
        raise InputError(f"topics must be >= 1, got {spec.topics}")
    if spec.structure not in STRUCTURES:
        raise InputError(f"structure must be one of {STRUCTURES}, got {spec.structure!r}")

    rng = np.random.default_rng([spec.seed, 0])
    counts = _activity(spec, rng)
    # Zipf–Mandelbrot popularity over a random rank order.
    ranks = rng.permutation(spec.n_items)
    popularity = (ranks + spec.zipf_offset) ** (-spec.zipf_a)
    structure = STRUCTURES[spec.structure](spec, popularity, rng)

    indices: list[np.ndarray] = []
    final_counts = np.empty(spec.n_users, dtype=np.int64)
    for chunk, u0 in enumerate(range(0, spec.n_users, CHUNK_USERS)):
        u1 = min(spec.n_users, u0 + CHUNK_USERS)
        crng = np.random.default_rng([spec.seed, 1, chunk])
        want = counts[u0:u1]
        keys = np.empty(0, dtype=np.int64)
        have = np.zeros(u1 - u0, dtype=np.int64)
        for round_ in range(6):
            need = want - have
            if not need.any():
                break
            # Over-draw a little (more in later rounds: what is left is mostly duplicates).
            n_draw = np.where(need > 0, np.ceil(need * (1.1 + round_)).astype(np.int64) + 2, 0)
            local = np.repeat(np.arange(u1 - u0), n_draw)
            if round_ < 3:
                drawn = structure.draw(crng, local + u0)
            else:  # saturated heavy users: finish with uniform draws (rare; keeps it fast)
                drawn = crng.integers(0, spec.n_items, len(local))
            keys = _sorted_unique(np.concatenate((keys, local * spec.n_items + drawn)))
            have = np.bincount(keys // spec.n_items, minlength=u1 - u0)
        # Keep a random ``want[u]`` of each user's distinct draws.
        users = keys // spec.n_items
        if (have > want).any():
            # users (< 2^15 per chunk) in the high bits, a random priority in the low 40
            prio = (users << 40) | crng.integers(0, 1 << 40, len(keys))
            by = np.argsort(prio)
            rank = np.empty(len(keys), dtype=np.int64)
            starts_u = np.concatenate(([0], np.cumsum(have)[:-1]))
            rank[by] = np.arange(len(keys)) - starts_u[users[by]]
            keep = rank < want[users]
            keys = keys[keep]
            users = users[keep]
        final_counts[u0:u1] = np.bincount(users, minlength=u1 - u0)
        indices.append((keys % spec.n_items).astype(np.int32))

    indptr = np.concatenate(([0], np.cumsum(final_counts))).astype(np.int64)
    flat = np.concatenate(indices) if indices else np.empty(0, dtype=np.int32)
    matrix = sp.csr_matrix(
        (np.ones(len(flat), dtype=np.float32), flat, indptr), shape=(spec.n_users, spec.n_items)
    )
    matrix.has_sorted_indices = True
    matrix.has_canonical_format = True
    inter = Interactions(matrix)
    if return_latent:
        return (inter, *structure.latent)
    return inter


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy 2's hash-based unique is far slower on int64 keys)."""
    keys.sort()
    if len(keys) < 2:
        return keys
    keep = np.empty(len(keys), dtype=bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


class _Topics:
    """``structure="topics"``: every item in one topic, every user a primary and a secondary
    topic (see the module docstring)."""

    def __init__(self, spec: SyntheticSpec, popularity: np.ndarray, rng: np.random.Generator):
        self.affinity = spec.topic_affinity
        self.item_topic = rng.integers(0, spec.topics, spec.n_items)
        self.user_topics = rng.integers(0, spec.topics, (spec.n_users, 2))
        # Items sorted by topic; one cumulative popularity covers every topic as a contiguous
        # range.
        self.order = np.argsort(self.item_topic, kind="stable")
        self.cum = np.cumsum(popularity[self.order])
        topics = np.arange(spec.topics)
        starts = np.searchsorted(self.item_topic[self.order], topics, side="left")
        ends = np.searchsorted(self.item_topic[self.order], topics, side="right")
        self.lo_mass = np.where(starts > 0, self.cum[np.maximum(starts - 1, 0)], 0.0)
        self.hi_mass = np.where(ends > 0, self.cum[np.maximum(ends - 1, 0)], 0.0)
        self.total = float(self.cum[-1])

    @property
    def latent(self) -> tuple[np.ndarray, np.ndarray]:
        """``(item_topic (n_items,), user_topics (n_users, 2: primary, secondary))``."""
        return self.item_topic, self.user_topics

    def draw(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One item per entry of ``users``: primary topic, secondary topic or global, ∝
        popularity."""
        c = rng.random(len(users))
        affinity = self.affinity
        topic = np.where(
            c < 0.75 * affinity, self.user_topics[users, 0], self.user_topics[users, 1]
        )
        lo = self.lo_mass[topic]
        hi = self.hi_mass[topic]
        glob = (c >= affinity) | (hi <= lo)  # global draw (or an empty topic)
        lo = np.where(glob, 0.0, lo)
        hi = np.where(glob, self.total, hi)
        r = lo + rng.random(len(users)) * (hi - lo)
        pos = np.searchsorted(self.cum, r, side="right")
        np.minimum(pos, len(self.cum) - 1, out=pos)
        return self.order[pos].astype(np.int64)


class _LowRank:
    """``structure="low-rank"``: soft memberships, ``P(i | u) = a Σ_k θ_uk φ_k(i) + (1 − a)
    p_i / Σp`` with ``φ_k(i) ∝ p_i m_ik`` (see the module docstring): rank ``topics + 1``."""

    def __init__(self, spec: SyntheticSpec, popularity: np.ndarray, rng: np.random.Generator):
        k = spec.topics
        self.affinity = spec.topic_affinity
        self.item_membership = rng.dirichlet(np.full(k, spec.item_concentration), spec.n_items)
        self.user_mixture = rng.dirichlet(np.full(k, spec.user_concentration), spec.n_users)
        # One flat table of the topics' cumulative item distributions, topic k's shifted by k,
        # so that searching ``k + U(0, 1)`` draws from φ_k; the same for the users' mixtures.
        phi = self.item_membership.T * popularity  # (topics, n_items)
        self.item_cum = (np.cumsum(phi, axis=1) / phi.sum(axis=1, keepdims=True)).ravel()
        self.item_cum += np.repeat(np.arange(k, dtype=np.float64), spec.n_items)
        self.pop_cum = np.cumsum(popularity) / popularity.sum()
        self.n_items = spec.n_items

    @property
    def latent(self) -> tuple[np.ndarray, np.ndarray]:
        """``(item_membership (n_items, topics), user_mixture (n_users, topics))``; the planted
        preference is ``P(i | u) ∝ a · (user_mixture @ φ)[u, i] + (1 − a) p_i``."""
        return self.item_membership, self.user_mixture

    def draw(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One item per entry of ``users`` (sorted): a topic from the user's mixture, then an
        item of that topic ∝ popularity × membership — or, with probability ``1 − a``, an item
        of the whole catalogue ∝ popularity."""
        n, k = len(users), self.user_mixture.shape[1]
        lo, hi = int(users[0]), int(users[-1]) + 1
        local = users - lo
        cum_u = np.cumsum(self.user_mixture[lo:hi], axis=1)
        cum_u /= cum_u[:, -1:]
        cum_u += np.arange(hi - lo, dtype=np.float64)[:, None]
        topic = np.searchsorted(cum_u.ravel(), local + rng.random(n), side="right") - local * k
        np.clip(topic, 0, k - 1, out=topic)
        pos = np.searchsorted(self.item_cum, topic + rng.random(n), side="right")
        item = np.clip(pos - topic * self.n_items, 0, self.n_items - 1)
        glob = rng.random(n) >= self.affinity
        g = np.searchsorted(self.pop_cum, rng.random(int(glob.sum())), side="right")
        item[glob] = np.minimum(g, self.n_items - 1)
        return item.astype(np.int64)


#: ``SyntheticSpec.structure`` → its generator.
STRUCTURES = {"topics": _Topics, "low-rank": _LowRank}


# ---------------------------------------------------------------------- named shapes
#: The planted low-rank family (``lowrank-*``): 32 soft topics, users and items concentrated on
#: one or two each (Dirichlet 0.05), 90% of the draws from the user's topics and a flatter
#: popularity head than ``synth-*`` (offset 25). On the ML-1M shape (80/20 split, 64 factors)
#: popularity reaches NDCG@10 0.14, the planted preference itself 0.42 and implicit's ALS 0.34;
#: the top 10% of items hold 37% of the interactions (ml-100k: 43%).
LOW_RANK = {
    "structure": "low-rank",
    "topics": 32,
    "user_concentration": 0.05,
    "item_concentration": 0.05,
    "topic_affinity": 0.9,
    "zipf_offset": 25.0,
}

#: Dataset-name prefix → the generator parameters of that family.
FAMILIES: dict[str, dict[str, Any]] = {"synth": {}, "lowrank": LOW_RANK}


def is_synthetic(name: str) -> bool:
    """Whether ``name`` names a generated dataset (``synth-…`` or ``lowrank-…``)."""
    family, _, size = name.partition("-")
    return family in FAMILIES and bool(size)


def spec_for(name: str, seed: int = 0) -> SyntheticSpec:
    """The synthetic shape behind a dataset name.

    - ``synth-ml1m``: MovieLens-1M's shape — 6,040 users × 3,706 items, 1,000,209
      interactions (min 20 per user, like ML-1M) — with hard topics.
    - ``synth-<N>``: ``N`` interactions (``N`` like ``1m``, ``16m``, ``100m``, ``250k``) over
      ``N/80`` users × ``N/160`` items; ``synth-16m`` is 200,000 × 100,000.
    - ``synth-<N>@<U>x<I>``: ``N`` interactions over ``U`` users × ``I`` items
      (``synth-4m@200kx100k``: the shape of ``synth-16m``, a quarter of its interactions).
    - ``lowrank-ml1m``, ``lowrank-<N>``: the same shapes with planted low-rank structure
      (:data:`LOW_RANK`), for ranking-quality comparisons.
    """
    if not is_synthetic(name):
        raise InputError(f"not a synthetic dataset name: {name!r}")
    family, _, size = name.partition("-")
    params = FAMILIES[family]
    if size == "ml1m":
        return SyntheticSpec(6040, 3706, 1_000_209, min_per_user=20, seed=seed, **params)
    size, _, shape = size.partition("@")
    nnz = parse_count(size)
    if shape:
        users, x, items = shape.partition("x")
        if not x:
            raise InputError(f"{name!r}: the shape after '@' is <users>x<items>, e.g. 200kx100k")
        return SyntheticSpec(parse_count(users), parse_count(items), nnz, seed=seed, **params)
    return SyntheticSpec(max(1, nnz // 80), max(1, nnz // 160), nnz, seed=seed, **params)


def parse_count(text: str) -> int:
    """``'16m'`` → 16,000,000; ``'250k'`` → 250,000; ``'1000'`` → 1000."""
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    num = t[:-1] if mult != 1 else t
    try:
        value = float(num) * mult
    except ValueError:
        raise InputError(f"cannot read a size from {text!r} (use e.g. 1m, 16m, 250k)") from None
    if value <= 0:
        raise InputError(f"size must be positive, got {text!r}")
    return int(value)
