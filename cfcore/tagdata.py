"""Tagged examples for tag prediction (Denton et al. 2015): who put which tags on which item.

An *example* is one (user, item) pair with the set of tags that user put on that item (a
hashtagged image post in the paper). :class:`TagData` holds the examples as a binary
examples × tags CSR with the raw user and item id of every example and the tag names of the
columns, and does what the paper does to a data set before training:

- :meth:`TagData.top_tags` — the vocabulary: the N most frequent tags (paper: 10,000);
- :meth:`TagData.balanced` — the "balanced" distribution: the M most frequent tags (paper:
  500) downsampled to the frequency of tag M+1 (§4.1);
- :meth:`TagData.split` — ``"users"``: disjoint users (the paper's split; needs user
  descriptors), or ``"items"``: each user's tagged items 80/20 (so a learned embedding per
  user applies to the test examples).

Tag frequency is the number of examples carrying the tag. Columns are kept in decreasing
frequency (ties by name), so column 0 is the most frequent tag.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfcore.errors import InputError
from cfcore.ids import id_positions
from cfcore.interactions import Interactions, binarize

SPLITS = ("users", "items")


def normalise_tags(tags: Any) -> np.ndarray:
    """Tags as stripped, lower-case strings (``" Sci-Fi "`` → ``"sci-fi"``)."""
    arr = np.asarray(tags).astype(str)
    return np.char.lower(np.char.strip(arr))


def _frequency_order(counts: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Column order by decreasing count, ties by name."""
    return np.lexsort((names, -counts))


@dataclass(frozen=True)
class TagData:
    """Tagged examples: (user, item) pairs and the tags the user put on the item.

    Attributes
    ----------
    tags : scipy.sparse.csr_matrix, shape (n_examples, n_tags)
        float32 ones, sorted indices; row e holds example e's tags.
    users, items : ndarray, shape (n_examples,)
        Raw user and item id of each example (int64 or str).
    tag_names : ndarray of str, shape (n_tags,)
        Tag of each column, most frequent first.
    """

    tags: sp.csr_matrix
    users: np.ndarray
    items: np.ndarray
    tag_names: np.ndarray

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_applications(
        cls, users: Sequence[Any] | np.ndarray, items: Sequence[Any] | np.ndarray, tags: Any
    ) -> TagData:
        """Group tag applications (one (user, item, tag) triple each) into examples.

        Tags are normalised (:func:`normalise_tags`); empty tags are dropped; a repeated
        (user, item, tag) counts once.
        """
        users, items = np.asarray(users), np.asarray(items)
        names = normalise_tags(tags)
        if not (users.ndim == items.ndim == names.ndim == 1) or not (
            len(users) == len(items) == len(names)
        ):
            raise InputError(
                "users, items and tags must be 1-D arrays of equal length, got shapes "
                f"{users.shape}, {items.shape}, {names.shape}"
            )
        keep = names != ""
        users, items, names = users[keep], items[keep], names[keep]
        if len(names) == 0:
            raise InputError("no tag applications: the input is empty (or every tag is blank)")
        user_ids, u = np.unique(users, return_inverse=True)
        item_ids, i = np.unique(items, return_inverse=True)
        pair = u.astype(np.int64) * len(item_ids) + i
        keys, example = np.unique(pair, return_inverse=True)
        vocab, col = np.unique(names, return_inverse=True)
        m = sp.csr_matrix(
            (np.ones(len(col), np.float32), (example, col)), shape=(len(keys), len(vocab))
        )
        data = cls(
            binarize(m), user_ids[keys // len(item_ids)], item_ids[keys % len(item_ids)], vocab
        )
        return data._reordered(_frequency_order(data.tag_counts(), vocab))

    def __post_init__(self) -> None:
        n = self.tags.shape[0]
        if len(self.users) != n or len(self.items) != n:
            raise InputError(
                f"TagData: {n} examples but {len(self.users)} users and {len(self.items)} items"
            )
        if len(self.tag_names) != self.tags.shape[1]:
            raise InputError(
                f"TagData: {self.tags.shape[1]} tag columns but {len(self.tag_names)} tag names"
            )

    # ------------------------------------------------------------------ facts
    @property
    def n_examples(self) -> int:
        return int(self.tags.shape[0])

    @property
    def n_tags(self) -> int:
        return int(self.tags.shape[1])

    @property
    def n_applications(self) -> int:
        """Number of (example, tag) pairs — the positives WARP visits once per epoch."""
        return int(self.tags.nnz)

    def tag_counts(self) -> np.ndarray:
        """Examples carrying each tag, int64, in column order."""
        return np.bincount(self.tags.indices, minlength=self.n_tags).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"TagData({self.n_examples} examples, {self.n_applications} tag applications, "
            f"{self.n_tags} tags, {len(np.unique(self.users))} users, "
            f"{len(np.unique(self.items))} items)"
        )

    # ------------------------------------------------------------------ subsets
    def subset(self, rows: np.ndarray) -> TagData:
        """The examples ``rows`` (positions or a boolean mask), same vocabulary."""
        return TagData(
            binarize(self.tags[rows]), self.users[rows], self.items[rows], self.tag_names
        )

    def _reordered(self, columns: np.ndarray) -> TagData:
        """Keep the tag columns ``columns`` in that order; drop examples left without a tag."""
        m = binarize(self.tags[:, columns])
        out = TagData(m, self.users, self.items, self.tag_names[columns])
        has = np.diff(m.indptr) > 0
        return out if has.all() else out.subset(has)

    def top_tags(self, n: int = 10_000) -> TagData:
        """The vocabulary of the ``n`` most frequent tags (Denton et al.: 10,000); examples
        left without a tag are dropped."""
        if n < 1:
            raise InputError(f"vocabulary size must be >= 1, got {n}")
        counts = self.tag_counts()
        order = _frequency_order(counts, self.tag_names)[: min(n, self.n_tags)]
        order = order[counts[order] > 0]
        if len(order) == 0:
            raise InputError("empty vocabulary: no tag is used by any example")
        return self._reordered(order)

    def with_vocabulary(self, tag_names: np.ndarray) -> TagData:
        """Re-index the columns to ``tag_names`` (a model's vocabulary): tags outside it are
        dropped, and so are examples left without a tag."""
        vocab = np.asarray(tag_names).astype(str)
        pos = id_positions(vocab, self.tag_names)
        coo = self.tags.tocoo()
        keep = pos[coo.col] >= 0
        m = sp.csr_matrix(
            (coo.data[keep], (coo.row[keep], pos[coo.col[keep]])),
            shape=(self.n_examples, len(vocab)),
        )
        out = TagData(binarize(m), self.users, self.items, vocab)
        has = np.diff(out.tags.indptr) > 0
        if not has.any():
            raise InputError(
                "no example has a tag of the vocabulary (an empty vocabulary after restriction)"
            )
        return out if has.all() else out.subset(has)

    def only(self, *, items: Any = None, users: Any = None) -> tuple[TagData, int]:
        """Keep the examples whose item is in ``items`` and user in ``users`` (raw ids; None
        keeps all). Returns ``(data, number of examples dropped)``."""
        keep = np.ones(self.n_examples, dtype=bool)
        if items is not None:
            keep &= id_positions(np.asarray(items), self.items) >= 0
        if users is not None:
            keep &= id_positions(np.asarray(users), self.users) >= 0
        return (self if keep.all() else self.subset(keep)), int((~keep).sum())

    # ------------------------------------------------------------------ distributions
    def balanced(self, top: int = 500, seed: int = 0) -> TagData:
        """Denton et al.'s "balanced" data set: each of the ``top`` most frequent tags keeps
        a random subset of its applications, as many as tag ``top + 1`` has; examples left
        without a tag are dropped. With ``top`` at or beyond the vocabulary size nothing
        changes. Seeded (``numpy.random.default_rng(seed)``)."""
        if top < 1:
            raise InputError(f"balance_top must be >= 1, got {top}")
        counts = self.tag_counts()
        order = _frequency_order(counts, self.tag_names)
        if top >= len(order):
            return self
        cap = int(counts[order[top]])
        coo = self.tags.tocoo()
        rng = np.random.default_rng(seed)
        keys = rng.random(len(coo.col))
        # Within each tag, keep the ``cap`` entries with the smallest random keys.
        by_tag = np.lexsort((keys, coo.col))
        rank = np.empty(len(coo.col), dtype=np.int64)
        starts = np.searchsorted(coo.col[by_tag], np.arange(self.n_tags))
        rank[by_tag] = np.arange(len(coo.col)) - starts[coo.col[by_tag]]
        capped = np.zeros(self.n_tags, dtype=bool)
        capped[order[:top]] = True
        keep = ~capped[coo.col] | (rank < cap)
        m = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=self.tags.shape)
        out = TagData(binarize(m), self.users, self.items, self.tag_names)
        return out._reordered(_frequency_order(out.tag_counts(), out.tag_names))

    # ------------------------------------------------------------------ splits
    def split(
        self, by: str = "items", test_fraction: float = 0.2, seed: int = 0
    ) -> tuple[TagData, TagData]:
        """Seeded train/test split of the examples.

        Parameters
        ----------
        by : {"items", "users"}
            ``"items"``: each user's examples are split ``1 − test_fraction`` /
            ``test_fraction`` (:func:`cfcore.splits.holdout_split`; a user keeps at least one
            example in train), so every test user has training examples and a learned
            embedding. ``"users"``: a random ``test_fraction`` of the users with all their
            examples (Denton et al.: disjoint users), which needs user descriptors.
        test_fraction : float
            In (0, 1).
        seed : int

        Returns
        -------
        train, test : TagData
            Same vocabulary.
        """
        from cfcore.splits import holdout_split

        if by not in SPLITS:
            raise InputError(f"split: expected one of {SPLITS}, got {by!r}")
        if not 0.0 < test_fraction < 1.0:
            raise InputError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        if by == "users":
            user_ids = np.unique(self.users)
            n_test = int(round(len(user_ids) * test_fraction))
            if n_test < 1 or n_test >= len(user_ids):
                raise InputError(
                    f"split users: {len(user_ids)} users cannot be split {1 - test_fraction:.0%}"
                    f"/{test_fraction:.0%} (each side needs at least one user)"
                )
            held = np.random.default_rng(seed).permutation(len(user_ids))[:n_test]
            is_test = id_positions(user_ids[held], self.users) >= 0
        else:
            inter = Interactions.from_pairs(self.users, self.items)
            _, test = holdout_split(inter, test_fraction, seed=seed)
            rows = id_positions(inter.user_ids, self.users)
            cols = id_positions(inter.item_ids, self.items)
            coo = test.user_items.tocoo()
            test_keys = coo.row.astype(np.int64) * inter.n_items + coo.col
            is_test = np.isin(rows * inter.n_items + cols, test_keys)
            if not is_test.any():
                raise InputError(
                    "split items: no user has two tagged items, so nothing can be held out; "
                    "use split='users' (with user descriptors)"
                )
        return self.subset(~is_test), self.subset(is_test)


# ----------------------------------------------------------------------------- synthetic
@dataclass(frozen=True)
class SyntheticTags:
    """A seeded tag data set whose tags depend on the users' attributes by construction.

    Attributes
    ----------
    data : TagData
    item_vectors : cfcore.vectors.ItemVectors
        Item descriptors: the item's topic centre plus noise.
    user_table : cfcore.readers.Table
        The users' attributes (``user_id, age, gender, country``) as a user file would hold
        them; :meth:`user_attributes` encodes them, :meth:`save` writes them as a CSV.
    """

    data: TagData
    item_vectors: Any
    user_table: Any

    def user_attributes(self):  # -> UserAttributes
        """The encoded user attributes (:mod:`cfcore.attributes`)."""
        from cfcore.attributes import AttributeEncoder, UserAttributes

        encoder = AttributeEncoder.fit(self.user_table)
        return UserAttributes(*encoder.transform(self.user_table), encoder)

    def save(self, folder: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``tags.csv`` (``user_id,item_id,tag``), ``users.csv`` and ``items.npz``
        (item-vectors) into ``folder``; returns their paths."""
        from cfcore.io import atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        coo = self.data.tags.tocoo()
        lines = ["user_id,item_id,tag"] + [
            f"{self.data.users[r]},{self.data.items[r]},{self.data.tag_names[c]}"
            for r, c in zip(coo.row, coo.col, strict=True)
        ]
        paths = {k: folder / n for k, n in (("tags", "tags.csv"), ("users", "users.csv"))}
        atomic_write_text(paths["tags"], "\n".join(lines) + "\n")
        rows = [",".join(self.user_table.names)] + [",".join(r) for r in self.user_table.rows]
        atomic_write_text(paths["users"], "\n".join(rows) + "\n")
        paths["items"] = self.item_vectors.save(folder / "items.npz")
        return paths


def synthetic_tags(
    n_users: int = 600,
    n_items: int = 400,
    per_user: int = 12,
    topics: int = 12,
    n_features: int = 32,
    noise: float = 0.5,
    seed: int = 0,
) -> SyntheticTags:
    """A tag data set where which tag a user puts on an item depends on both.

    Users have an age (18–70), a gender (M/F) and a country (one of three); their *group* is
    (gender, country), 6 groups. Items have a topic; their descriptor is the topic's random
    unit centre plus Gaussian ``noise`` per feature. Each user tags ``per_user`` random items;
    an example (user, item) carries

    - ``"t{topic}-g{group}"`` with probability 0.9 — needs the item *and* the user;
    - ``"topic{topic}"`` with probability 0.3 — the item alone;
    - one of three ``"popular{k}"`` tags (probabilities 0.15, 0.1, 0.05) — neither.

    So the frequency baseline knows only the popular tags, a bilinear model (item only)
    cannot tell the six group variants of a topic apart, and the user-conditioned models
    can. Seeded: the same arguments give the same data.
    """
    from cfcore.readers import Table
    from cfcore.vectors import ItemVectors

    rng = np.random.default_rng(seed)
    genders = rng.choice(["M", "F"], n_users)
    countries = rng.choice(["au", "ca", "uk"], n_users)
    ages = rng.integers(18, 71, n_users)
    group = (genders == "M") * 3 + np.searchsorted(np.array(["au", "ca", "uk"]), countries)
    topic = rng.integers(0, topics, n_items)
    centres = rng.standard_normal((topics, n_features))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[topic] + noise * rng.standard_normal((n_items, n_features)) / np.sqrt(n_features)
    users, items, tags = [], [], []
    for u in range(n_users):
        for i in rng.choice(n_items, size=min(per_user, n_items), replace=False):
            chosen = []
            if rng.random() < 0.9:
                chosen.append(f"t{topic[i]}-g{group[u]}")
            if rng.random() < 0.3:
                chosen.append(f"topic{topic[i]}")
            r = rng.random()
            if r < 0.3:
                chosen.append(f"popular{0 if r < 0.15 else 1 if r < 0.25 else 2}")
            if not chosen:
                chosen.append(f"topic{topic[i]}")
            for tag in chosen:
                users.append(u + 1)
                items.append(i + 1)
                tags.append(tag)
    table = Table(
        Path("<synthetic users>"),
        ["user_id", "age", "gender", "country"],
        [[str(u + 1), str(ages[u]), genders[u], countries[u]] for u in range(n_users)],
        list(range(2, n_users + 2)),
        ",",
        True,
    )
    vectors = ItemVectors(np.arange(1, n_items + 1), x.astype(np.float32), {"source": "synthetic"})
    return SyntheticTags(
        TagData.from_applications(np.array(users), np.array(items), tags), vectors, table
    )
