"""cfcore inside other recommender code: fit on a SciPy CSR, serve recommend / similar_items.

Your code already has its interactions as a users × items ``scipy.sparse.csr_matrix`` (rows
and columns are your own indices); cfcore's :class:`~cfcore.Factorizer` fits on it directly
and answers the two questions a service asks, with implicit's calling conventions:

- ``recommend(userids, user_items[userids], N)`` — top-N items per user, the user's own
  items filtered out (their rows tell the model what to filter);
- ``similar_items(itemids, N)`` — items nearest by cosine of the item factors, the item
  itself first (``include_self=False`` leaves it out).

Run (ml-100k from the data directory, about 2 seconds)::

    python examples/embed_recommender.py                 # users 0 and 1, item 0
    python examples/embed_recommender.py --user 10 --item 49
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp

from cfcore import Factorizer


def to_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """A binary users × items CSR from (user, item) index pairs (repeats count once)."""
    m = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items)
    )
    m.data[:] = 1.0  # duplicates were summed
    return m


def fit(user_items: sp.csr_matrix, seed: int = 0, **params) -> Factorizer:
    """Fit cfcore's factorizer (squared loss with sampled negatives, Fang eq. 3)."""
    return Factorizer(seed=seed, progress=False, **params).fit(user_items)


class Recommender:
    """A minimal service around a fitted model: the CSR stays the source of truth."""

    def __init__(self, model: Factorizer, user_items: sp.csr_matrix) -> None:
        self.model, self.user_items = model, user_items

    def recommend(self, user: int, n: int = 10) -> list[tuple[int, float]]:
        ids, scores = self.model.recommend([user], self.user_items[[user]], N=n)
        return list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))

    def similar(self, item: int, n: int = 10) -> list[tuple[int, float]]:
        ids, sims = self.model.similar_items([item], N=n, include_self=False)
        return list(zip(ids[0].tolist(), sims[0].tolist(), strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--user", type=int, default=0)
    p.add_argument("--item", type=int, default=0)
    p.add_argument("-n", type=int, default=5)
    args = p.parse_args()

    # Any code that has (user, item) pairs: here ml-100k's u.data, 1-based ids -> indices.
    from cfcore.datasets import dataset_path

    raw = np.loadtxt(dataset_path("ml-100k") / "u.data", dtype=np.int64, usecols=(0, 1))
    users, items = raw[:, 0] - 1, raw[:, 1] - 1
    user_items = to_csr(users, items, users.max() + 1, items.max() + 1)
    service = Recommender(fit(user_items, factors=64, epochs=20, threads=2), user_items)
    print(f"{user_items.shape[0]} users × {user_items.shape[1]} items, {user_items.nnz} views")
    print(f"recommend(user {args.user}):", service.recommend(args.user, args.n))
    print(f"similar_items(item {args.item}):", service.similar(args.item, args.n))


if __name__ == "__main__":
    main()
