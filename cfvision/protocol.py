"""The items of collaborative image understanding and the paper's protocol (Bibas et al. §4.1).

One seed fixes everything the methods of an experiment must share, so that their test scores
pair up item by item:

1. **Items.** Every item with an image and a label or an interaction. Items missing from the
   labels file (or with an empty label set) are *unlabelled*: they still train the auxiliary
   CF head when they have interactions.
2. **Hold-out** (:func:`make_split`). 30% of the labelled items with an image are held out —
   "new images" — and split evenly into validation and test; the rest is the training pool.
   Written as ``split.csv`` (``item_id,part``) and readable back (:func:`read_split`).
3. **CF vectors** (:func:`fit_cf_model`). The held-out items' interactions are removed
   *before* factorizing, so no held-out item shapes any vector; the item factors of the
   rest (BPR, 64 factors: the paper's CF dimension) are the CF vectors ``q_i``, and the
   number of training users ``|U_i|`` of each item is kept for the interaction confidence.
   Any factor model (or item-vectors file) that knows no held-out item may be given instead.
4. **Label ratio** (:func:`keep_labels`). A seeded fraction of the training pool's labels is
   kept; smaller ratios keep subsets of larger ones (one permutation per seed), so a
   label-ratio curve compares nested training sets.

Ids are raw ids (:mod:`cfcore.ids`); items are kept in sorted id order, so the same inputs
give the same rows whatever the order of the files.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cfcore.errors import InputError
from cfcore.ids import id_positions, parse_ids

if TYPE_CHECKING:
    from cfcore.interactions import Interactions
    from cfvision.data import ItemImages, Match
    from cfvision.multitask import MultitaskConfig

TRAIN, VAL, TEST = 0, 1, 2
PARTS = ("train", "val", "test")
SPLIT_FILE = "split.csv"
CF_MODEL_FILE = "cf_model.npz"

#: The paper's hold-out: 30% of the items, half validation, half test.
HOLDOUT = 0.3


# ----------------------------------------------------------------------------- split
@dataclass
class Split:
    """Which items are held out: ``part[k]`` (0 train, 1 val, 2 test) of ``item_ids[k]``."""

    item_ids: np.ndarray
    part: np.ndarray
    source: str = ""

    def ids(self, part: int) -> np.ndarray:
        return self.item_ids[self.part == part]

    @property
    def held_out(self) -> np.ndarray:
        return self.item_ids[self.part != TRAIN]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """``item_id,part`` rows (part: train, val or test), atomically."""
        from cfcore.io import atomic_write_text

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["item_id", "part"])
        for item, part in zip(self.item_ids.tolist(), self.part.tolist(), strict=True):
            writer.writerow([item, PARTS[part]])
        atomic_write_text(path, buf.getvalue())
        return Path(path)


def make_split(item_ids: Any, holdout: float = HOLDOUT, seed: int = 0) -> Split:
    """Hold out a seeded ``holdout`` fraction of ``item_ids``, half validation, half test.

    The ids are sorted first, so the split depends on the set of items and the seed only.
    """
    from cfvision.train import split_items

    if not 0 < holdout < 1:
        raise InputError(f"holdout must lie in (0, 1), got {holdout}")
    ids = np.sort(parse_ids(np.asarray(item_ids)))
    if len(ids) < 4:
        raise InputError(f"the hold-out protocol needs at least 4 labelled items, got {len(ids)}")
    rest, held = split_items(len(ids), holdout, seed)
    if len(held) < 2:
        raise InputError(f"holdout {holdout} of {len(ids)} items leaves no validation/test pair")
    test_pos, val_pos = split_items(len(held), 0.5, seed + 1)
    part = np.full(len(ids), TRAIN, dtype=np.int8)
    part[held[val_pos]] = VAL
    part[held[test_pos]] = TEST
    return Split(ids, part, f"seed {seed}, holdout {holdout}")


def read_split(path: str | os.PathLike[str]) -> Split:
    """Read ``item_id,part`` (as :meth:`Split.save` writes it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"split {path}: no such file")
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["item_id", "part"]:
        raise InputError(f"{path}: expected a header item_id,part")
    ids, parts = [], []
    for lineno, row in enumerate(rows[1:], 2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or row[1].strip() not in PARTS:
            raise InputError(f"{path}:{lineno}: expected item_id,part with part in {PARTS}")
        ids.append(row[0])
        parts.append(PARTS.index(row[1].strip()))
    if not ids:
        raise InputError(f"{path}: no rows")
    out = parse_ids(ids)
    if len(np.unique(out)) != len(out):
        raise InputError(f"{path}: an item is listed twice")
    part = np.asarray(parts, dtype=np.int8)
    for p in (VAL, TEST):
        if not (part == p).any():
            raise InputError(f"{path}: no {PARTS[p]} item")
    return Split(out, part, str(path))


def keep_labels(n: int, ratio: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of the ``⌈ratio · n⌉`` training labels kept (``--label-ratio``).

    The kept rows are the first ones of a permutation seeded by ``seed`` alone, so the
    labels kept at a smaller ratio are a subset of those kept at a larger one.
    """
    if not 0 < ratio <= 1:
        raise InputError(f"label_ratio must lie in (0, 1], got {ratio}")
    perm = np.random.default_rng([seed, 0x1ABE1]).permutation(n)
    mask = np.zeros(n, dtype=bool)
    mask[perm[: math.ceil(ratio * n - 1e-9)]] = True
    return mask


# ----------------------------------------------------------------------------- CF vectors
def fit_cf_model(
    interactions: Interactions,
    held_out: Any,
    factors: int = 64,
    loss: str = "bpr",
    epochs: int = 30,
    seed: int = 0,
    progress: bool = False,
):
    """Factorize ``interactions`` without the items ``held_out`` (their columns removed).

    One thread, so the vectors are the same on every run with the same seed (Hogwild with
    several threads is not bit-reproducible). Returns the fitted
    :class:`~cfcore.factorize.Factorizer`, whose ``item_ids_`` are the training items.
    """
    from cfcore.factorize import Factorizer

    cols = id_positions(interactions.item_ids, held_out)
    keep = np.ones(interactions.n_items, dtype=bool)
    keep[cols[cols >= 0]] = False
    train = interactions.subset(items=np.flatnonzero(keep))
    model = Factorizer(
        factors=factors, loss=loss, epochs=epochs, threads=1, seed=seed, progress=progress
    )
    return model.fit(train)


def _cached_model(path: Path, wanted: dict[str, Any]) -> Any:
    """The model at ``path`` when it was fitted with ``wanted``, else None."""
    from cfcore.factorize import Factorizer
    from cfcore.io import load_artifact

    if not path.is_file():
        return None
    _, header = load_artifact(path, "factor-model")
    params = header.get("params", {})
    if any(params.get(k) != v for k, v in wanted.items()):
        return None
    return Factorizer.load(path)


# ----------------------------------------------------------------------------- items
@dataclass
class CollabItems:
    """Every item of a run: image, labels, CF vector, part of the split.

    Attributes
    ----------
    item_ids : ndarray
        Raw ids, sorted; only items with a usable image.
    part : ndarray of int8
        :data:`TRAIN`, :data:`VAL` or :data:`TEST`.
    targets : ndarray of float32 (n, K)
        0/1 label rows (zeros for unlabelled items).
    labelled : ndarray of bool
        The item has a label in the labels file (before any label ratio).
    class_names : list of str
    vectors : ndarray of float32 (n, f)
        Raw CF vectors; zeros where ``has_vector`` is False (held-out items, items
        without training interactions).
    has_vector : ndarray of bool
    n_users : ndarray of int64
        ``|U_i|``: training users of each item (0 for held-out items).
    images : ItemImages
        The cached images, one per item, same order.
    notes : list of str
        What was found and done, one line each (matched fractions, the CF model used…).
    """

    item_ids: np.ndarray
    part: np.ndarray
    targets: np.ndarray
    labelled: np.ndarray
    class_names: list[str]
    vectors: np.ndarray
    has_vector: np.ndarray
    n_users: np.ndarray
    images: ItemImages
    match: Match | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.part == part)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def cf_dim(self) -> int:
        return int(self.vectors.shape[1])


def _check_overlap(
    ids: np.ndarray, known: np.ndarray, what: str, source: str, allow_partial: bool
) -> None:
    from cfvision.data import MIN_MATCHED_FRACTION

    found = int((id_positions(known, ids) >= 0).sum())
    fraction = found / max(len(ids), 1)
    if found == 0 or (fraction < MIN_MATCHED_FRACTION and not allow_partial):
        raise InputError(
            f"only {found:,} of the {len(ids):,} labelled items with an image "
            f"({100 * fraction:.1f}%) have {what} in {source}: do they use the same item ids "
            f"(e.g. {ids[:3].tolist()} vs {known[:3].tolist()})?"
            + ("" if found == 0 else " Pass --allow-partial to go on anyway")
        )


@dataclass
class _Inputs:
    labels: Any  # cfvision.data.Labels
    index: Any  # cfvision.data.ImageIndex
    match: Any  # cfvision.data.Match
    with_image: np.ndarray  #: labelled items with an image (raw ids)
    interactions: Interactions


def _read_inputs(cfg: MultitaskConfig) -> _Inputs:
    """Labels, image index and interactions, and checks that their ids match."""
    from cfcore.datasets import load_interactions
    from cfvision.data import load_labels, match_items, open_image_index

    labels = load_labels(cfg.labels, cfg.data_dir, cfg.item_col, cfg.labels_col)
    index = open_image_index(cfg.images, cfg.id_space, labels.item_ids, cfg.data_dir)
    match = match_items(index, labels, cfg.allow_partial)
    with_image = labels.item_ids[match.label_rows]
    inter = load_interactions(cfg.interactions, cfg.data_dir, cfg.min_rating)
    _check_overlap(
        with_image, inter.item_ids, "interactions", str(cfg.interactions), cfg.allow_partial
    )
    return _Inputs(labels, index, match, with_image, inter)


def _split(cfg: MultitaskConfig, inputs: _Inputs, output: Path) -> Split:
    """``cfg.split`` (checked), or a new seeded split written to ``output/split.csv``."""
    if not cfg.split:
        split = make_split(inputs.with_image, cfg.holdout, cfg.seed)
        split.save(output / SPLIT_FILE)
        return split
    split = read_split(cfg.split)
    held = split.held_out
    bad = held[id_positions(inputs.with_image, held) < 0]
    if len(bad):
        raise InputError(
            f"{cfg.split}: held-out item {bad[0].item()!r} has no label or no image "
            f"({len(bad)} such items); validation and test items need both"
        )
    return split


def _vectors(
    cfg: MultitaskConfig, inputs: _Inputs, held: np.ndarray, output: Path, say: Callable
) -> tuple[Any, str]:
    """The CF vectors: ``cfg.cf_model`` (checked to know no held-out item) or a model fitted
    without the held-out items (``output/cf_model.npz``, reused when its settings match)."""
    from cfcore.vectors import as_item_vectors

    if cfg.cf_model:
        vectors = as_item_vectors(cfg.cf_model)
        leak = id_positions(vectors.ids, held)
        if (leak >= 0).any():
            first = held[leak >= 0][0]
            raise InputError(
                f"{cfg.cf_model} holds vectors of {int((leak >= 0).sum())} held-out item(s) "
                f"(e.g. {first.item()!r}): it was fitted with their interactions, which the "
                "protocol removes before factorizing; fit it on the training items only "
                "(leave out --cf-model and the run fits one)"
            )
        return vectors, f"CF vectors: {cfg.cf_model} ({len(vectors)} items × {vectors.dim})"
    path = output / CF_MODEL_FILE
    wanted = {
        "factors": cfg.factors,
        "loss": cfg.cf_loss,
        "epochs": cfg.cf_epochs,
        "seed": cfg.seed,
    }
    model = _cached_model(path, wanted)
    if model is None:
        say(
            f"factorizing the interactions without the {len(held):,} held-out items "
            f"({cfg.cf_loss}, {cfg.factors} factors, {cfg.cf_epochs} epochs)"
        )
        model = fit_cf_model(
            inputs.interactions, held, cfg.factors, cfg.cf_loss, cfg.cf_epochs, cfg.seed, False
        )
        model.save(path)
    return as_item_vectors(model), f"CF vectors: {path} ({cfg.cf_loss}, {cfg.factors} factors)"


def prepare_protocol(
    cfg: MultitaskConfig,
    output: str | os.PathLike[str],
    say: Callable[[str], None] = lambda _m: None,
) -> tuple[Path, Path]:
    """Write the split and the CF model that several runs will share (``cfvision
    experiment``: one per seed) into ``output``; returns their paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    inputs = _read_inputs(cfg)
    split = _split(cfg, inputs, output)
    _vectors(cfg, inputs, split.held_out, output, say)
    return output / SPLIT_FILE, output / CF_MODEL_FILE


def build_items(
    cfg: MultitaskConfig,
    output: str | os.PathLike[str],
    say: Callable[[str], None] = lambda _m: None,
) -> CollabItems:
    """Images, labels, split and CF vectors of a run (steps 1–3 of the module docstring).

    Uses ``cfg.split`` and ``cfg.cf_model`` when given; otherwise makes the split
    (``output/split.csv``) and fits the CF model (``output/cf_model.npz``, reused by a rerun
    with the same settings).

    Raises
    ------
    InputError
        Ids of the images, labels and interactions that do not match; a given CF model that
        knows a held-out item; a split whose held-out items have no label or image.
    """
    from cfvision.data import prepare_images, resize_size

    output = Path(output)
    inputs = _read_inputs(cfg)
    labels, index = inputs.labels, inputs.index
    split = _split(cfg, inputs, output)
    held = split.held_out
    vectors, vector_note = _vectors(cfg, inputs, held, output, say)
    notes = [inputs.match.line(), vector_note]
    inter = inputs.interactions
    train_inter = inter.subset(items=np.flatnonzero(id_positions(held, inter.item_ids) < 0))

    # the items: an image and a label or a training interaction
    with_inter = train_inter.item_ids[index.positions(train_inter.item_ids) >= 0]
    universe = np.unique(
        parse_ids(np.concatenate([inputs.with_image.astype(str), with_inter.astype(str)]))
    )
    images = prepare_images(
        index,
        universe,
        resize_size(cfg.image_size),
        cfg.cache_dir,
        cfg.on_bad_image,
        cfg.progress,
    )
    images.report.match = inputs.match
    ids = images.item_ids
    n = len(ids)
    lab_rows = id_positions(labels.item_ids, ids)
    labelled = lab_rows >= 0
    targets = np.zeros((n, labels.n_classes), dtype=np.float32)
    targets[labelled] = labels.one_hot()[lab_rows[labelled]]
    part = np.full(n, TRAIN, dtype=np.int8)
    split_rows = id_positions(split.item_ids, ids)
    part[split_rows >= 0] = split.part[split_rows[split_rows >= 0]]
    vec_rows = id_positions(vectors.ids, ids)
    has_vector = (vec_rows >= 0) & (part == TRAIN)
    q = np.zeros((n, vectors.dim), dtype=np.float32)
    q[has_vector] = vectors.vectors[vec_rows[has_vector]]
    pop = train_inter.item_popularity()
    inter_rows = id_positions(train_inter.item_ids, ids)
    n_users = np.where(inter_rows >= 0, pop[np.maximum(inter_rows, 0)], 0).astype(np.int64)
    n_users[part != TRAIN] = 0
    for p in (VAL, TEST):
        if not (part == p).any():
            raise InputError(f"no {PARTS[p]} item has a usable image")
    train = part == TRAIN
    if not has_vector[train].any():
        raise InputError(
            f"no training item has a CF vector: do the CF model's ids "
            f"(e.g. {vectors.ids[:3].tolist()}) match the images' (e.g. {ids[:3].tolist()})?"
        )
    notes.append(
        f"{n:,} items with an image: {int(train.sum()):,} train "
        f"({int((train & labelled).sum()):,} labelled, {int(has_vector.sum()):,} with a CF "
        f"vector), {int((part == VAL).sum()):,} validation, {int((part == TEST).sum()):,} test"
    )
    return CollabItems(
        ids,
        part,
        targets,
        labelled,
        list(labels.class_names),
        q,
        has_vector,
        n_users,
        images,
        inputs.match,
        notes,
    )
