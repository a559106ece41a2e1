"""Collaborative image understanding: labels from images, guided by CF vectors (Bibas et al. 2022).

A CNN learns to predict an item's labels from its image (the main task) while a second head
reconstructs the item's collaborative-filtering vector ``q_i`` (the auxiliary task). The CF
vectors are only needed at training time, so the model then labels *new* images, which no
user has seen yet. Everything runs through :func:`cfvision.train.fit` — the loop, schedule,
divergence checks, AMP and checkpoints of every cfvision training — with the model
:class:`~cfvision.models.MultitaskNet` and the :class:`MultitaskObjective` below.

Losses (§3.4)
-------------
- **Main**, eq. 1: class-balanced binary cross-entropy,
  ``ℓ_MAIN = −Σ_n w_n [yⁿ log ŷⁿ + (1 − yⁿ) log(1 − ŷⁿ)]`` per item (summed over the K
  classes, averaged over the labelled items of the batch), ``w_n ∝ 1/η_n`` normalised to mean
  1 (:func:`class_weights`; η_n = training items with label n, at least 1).
- **Auxiliary**, eq. 2: ``ℓ_AUX = min(ω_i, Ω) · exp(L1(q_i, q̂_i) + L2(q_i, q̂_i))`` averaged
  over the items of the batch that have a CF vector — labelled or not.
- **Total**, eq. 3: ``ℓ = ℓ_MAIN + α ℓ_AUX`` (α = 1.5; the paper found 1 < α < 2 best).

Keeping ``exp`` finite
----------------------
BPR item factors have L1 norms around 13 (ml-100k, 64 factors): ``exp(L1 + L2)`` of raw
vectors would start near 10⁶ and its gradient would swamp the main task. Two measures:

1. **Scaling.** The CF vectors are centred and scaled so that their mean ``L1 + L2``
   distance from the centre is 1: the loss of predicting the centre is ``e`` on average and
   falls toward 1 as reconstructions improve. The head itself predicts the vectors in units
   of their root-mean-square coordinate (or, with ``cf_standardize``, each dimension in
   units of its deviation), numbers of order 1, and the distance is multiplied back by the
   factor κ between the two (:func:`cf_targets`; κ ≈ 1/59 for 64 factors). Without that,
   the L1 term's gradient (a sign per coordinate, whatever the scale) moves 64 outputs of
   size ~0.02 by whole units per SGD step and the run diverges. The CF head's last layer
   starts at zero, so the first reconstruction is the centre.
2. **A linear tail.** ``exp`` is continued linearly past ``d = 5``:
   ``ℓ_CF_R(d) = exp(d)`` for ``d ≤ 5`` and ``e⁵ (1 + d − 5)`` beyond (value and slope
   continuous), so a wild prediction pulls back with a bounded gradient (e⁵ ≈ 148 per unit
   of distance) instead of overflowing; ``d`` is computed in float64 and capped at 10⁶, so
   the loss is finite for any finite prediction (:func:`reconstruction_loss`).

Confidences (§3.4)
------------------
``ω_i`` per training item with a CF vector: ``uniform`` (1), ``interactions`` (``√|U_i|``,
its training users) or ``loss`` (``1 / ℓ_WEIGHT(CF2Label(q_i), y_i)``, out of fold:
:func:`cfvision.cf2label.loss_confidence`; items whose label was dropped by the label ratio
get the mean of the others). ``ω`` is divided by its mean over the training items before
the cap Ω (default 5), so that α weighs the auxiliary task alike under every confidence and
Ω is in units of the mean.

Methods
-------
- ``image-only``: the main loss alone, on the labelled training items.
- ``mtl``: MTL-reconstruct, eq. 3, on every training item (an item without a kept label
  trains the CF head only; one without a CF vector the label head only).
- ``sequential`` (§4.3.2): ``aux_epochs`` epochs of the auxiliary loss alone (run folder
  ``aux/``), then the main loss alone from those weights, on a fresh schedule.
- ``contrastive`` (§4.3.1): every epoch, each item is an anchor once, followed in its batch by
  its positive (the nearest training item by L2 distance of the CF targets) and a random
  negative; the auxiliary loss is the triplet loss
  ``max(‖q̂_a − q̂_p‖ − ‖q̂_a − q̂_n‖ + τ, 0)`` on L2-normalised predictions (without the
  normalisation any margin is met by scaling the predictions up; τ = 0.2), weighted by the
  anchor's confidence. The main loss sees the anchors only, so every item counts once per
  epoch as in the other methods (a step costs three images per anchor).

Evaluation: mAP over the classes with a positive test item (a class without one has no
average precision and is left out; ``result.json`` names how many were evaluated), with a
95% CI of ± 1.96 bootstrap standard deviations over the test items
(:func:`cfcore.metrics.bootstrap_ci` with ``interval="normal"``: resampling biases mAP
upward, so percentile intervals sit above the estimate). The
test items' scores are saved (``test_scores.npz``) so that two runs on the same split can be
compared item by item (:func:`cfcore.metrics.paired_bootstrap`, ``cfvision experiment``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from cfcore.errors import InputError
from cfvision.loader import CachedImages, make_loader
from cfvision.models import MultitaskNet, build_multitask_model
from cfvision.protocol import HOLDOUT, TEST, TRAIN, VAL, CollabItems, build_items, keep_labels
from cfvision.train import (
    CHECKPOINT,
    DistInfo,
    Run,
    TrainConfig,
    build_optimizer,
    fit,
    make_scaler,
    make_train_loader,
    resolve_device,
    restore,
    seed_everything,
    setup_distributed,
    shuffled_sampler,
)

METHODS = ("image-only", "mtl", "sequential", "contrastive")
CONFIDENCES = ("uniform", "interactions", "loss")

#: ``exp`` of the reconstruction loss is continued linearly past this distance.
EXP_LINEAR_FROM = 5.0
#: Distances are capped here (the loss stays finite for any finite prediction).
DISTANCE_CAP = 1e6

AUX_DIR = "aux"
RESULT = "result.json"
SCORES = "test_scores.npz"
SCORES_KIND = "label-scores"

__all__ = [
    "CONFIDENCES",
    "METHODS",
    "MultitaskConfig",
    "MultitaskObjective",
    "MultitaskResult",
    "TripletSampler",
    "class_balanced_bce",
    "class_weights",
    "confidence_weights",
    "cf_targets",
    "load_scores",
    "reconstruction_loss",
    "train_multitask",
    "triplet_loss",
]


@dataclass
class MultitaskConfig(TrainConfig):
    """A :class:`~cfvision.train.TrainConfig` plus the multitask settings.

    ``labels`` are the main task's labels, ``interactions`` the users' interactions (a file
    or a dataset name) that give the CF vectors. ``val_fraction`` and ``balanced`` do not
    apply: validation and test are the protocol's held-out halves
    (:mod:`cfvision.protocol`). ``split`` / ``cf_model`` reuse a split file and a CF model
    (``cfvision experiment`` shares them between the methods of a seed); without them the
    run makes its own in its folder. ``aux_epochs`` (sequential only) defaults to
    ``epochs``.
    """

    interactions: str = ""
    method: str = "mtl"
    confidence: str = "uniform"
    alpha: float = 1.5
    omega_cap: float = 5.0
    margin: float = 0.2
    label_ratio: float = 1.0
    holdout: float = HOLDOUT
    split: str | None = None
    cf_model: str | None = None
    factors: int = 64
    cf_loss: str = "bpr"
    cf_epochs: int = 30
    cf_standardize: bool = False
    min_rating: float | None = None
    aux_epochs: int | None = None
    n_boot: int = 1000

    def validate(self) -> None:
        super().validate()
        checks = [
            (bool(self.interactions), "interactions are required (a file or a dataset name)"),
            (
                self.method in METHODS,
                f"method must be one of {', '.join(METHODS)}, got {self.method!r}",
            ),
            (
                self.confidence in CONFIDENCES,
                f"confidence must be one of {', '.join(CONFIDENCES)}, got {self.confidence!r}",
            ),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (self.omega_cap > 0, f"omega_cap must be > 0, got {self.omega_cap}"),
            (self.margin >= 0, f"margin must be >= 0, got {self.margin}"),
            (0 < self.label_ratio <= 1, f"label_ratio must lie in (0, 1], got {self.label_ratio}"),
            (0 < self.holdout < 1, f"holdout must lie in (0, 1), got {self.holdout}"),
            (self.factors >= 1, f"factors must be >= 1, got {self.factors}"),
            (
                self.aux_epochs is None or self.aux_epochs >= 1,
                f"aux_epochs must be >= 1, got {self.aux_epochs}",
            ),
            (not self.balanced, "balanced sampling does not apply to multi-label multitask runs"),
            (self.n_boot >= 1, f"n_boot must be >= 1, got {self.n_boot}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    @property
    def variant(self) -> str:
        """``image-only``, ``sequential``, ``contrastive`` or ``mtl-<confidence>``."""
        return f"mtl-{self.confidence}" if self.method == "mtl" else self.method


# ----------------------------------------------------------------------------- losses
def class_weights(counts: Any) -> np.ndarray:
    """Eq. 1's class weights: ``1/η_n`` normalised to mean 1 (float32).

    A class without a training positive (possible at small label ratios) counts as seen
    once, the rarest possible, instead of getting an infinite weight.
    """
    eta = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    w = 1.0 / eta
    return (w / w.mean()).astype(np.float32)


def class_balanced_bce(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """ℓ_MAIN of each item (eq. 1): ``−Σ_n w_n [y log σ(z) + (1 − y) log(1 − σ(z))]``."""
    return nn.functional.binary_cross_entropy_with_logits(
        logits.float(), targets.float(), weight=weights, reduction="none"
    ).sum(dim=1)


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """ℓ_CF_R of each item: ``exp(L1 + L2)`` of ``κ q̂`` and ``κ q``, with a linear tail.

    ``d = κ (‖q̂ − q‖₁ + ‖q̂ − q‖₂)`` in float64, capped at :data:`DISTANCE_CAP`;
    ``exp(min(d, 5)) · (1 + max(d − 5, 0))`` (module docstring). Finite for any finite
    ``pred``, with a gradient of at most ``2 κ e⁵`` per coordinate.
    """
    diff = pred.double() - target.double()
    d = kappa * (diff.abs().sum(dim=1) + torch.linalg.vector_norm(diff, dim=1))
    d = d.clamp(max=DISTANCE_CAP)
    c = EXP_LINEAR_FROM
    return (torch.exp(d.clamp(max=c)) * (1.0 + (d - c).clamp(min=0.0))).float()


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """``max(‖a − p‖ − ‖a − n‖ + τ, 0)`` per triplet, on L2-normalised rows (§4.3.1)."""
    a, p, n = (
        nn.functional.normalize(t.float(), dim=1, eps=1e-12) for t in (anchor, positive, negative)
    )
    return (
        torch.linalg.vector_norm(a - p, dim=1) - torch.linalg.vector_norm(a - n, dim=1) + margin
    ).clamp(min=0)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ w v / #(w > 0)`` (0 when no weight is positive); a zero weight never lets a value
    through, whatever it is."""
    has = weights > 0
    total = torch.where(has, weights * values, torch.zeros_like(values)).sum()
    return total / has.sum().clamp(min=1)


class MultitaskObjective:
    """``ℓ = ℓ_MAIN + α ℓ_AUX`` (eq. 3) for :func:`cfvision.train.fit`.

    Parameters
    ----------
    class_weights : Tensor (K,)
        :func:`class_weights` of the training labels.
    alpha : float
    main : bool
        Include the main loss (False: the auxiliary phase of ``sequential``).
    aux : {"reconstruct", "triplet", None}
    margin : float
        τ of the triplet loss.
    kappa : float
        κ of :func:`cf_targets`: distances of the targets' units to the paper's.

    Targets (dict, one row per image): ``labels`` (K 0/1), ``labelled`` (1 when the label
    trains), ``cf`` (the scaled CF vector), ``weight`` (``min(ω, Ω)``, 0 without a vector);
    ``role`` (0 anchor, 1 positive, 2 negative) in contrastive batches. Measures: ``main``
    and ``aux`` (batch means) and, on validation, ``map``.
    """

    def __init__(
        self,
        class_weights: torch.Tensor,
        alpha: float = 1.5,
        main: bool = True,
        aux: str | None = "reconstruct",
        margin: float = 0.2,
        kappa: float = 1.0,
    ) -> None:
        if aux not in ("reconstruct", "triplet", None):
            raise InputError(f"aux must be reconstruct, triplet or None, got {aux!r}")
        self.class_weights = class_weights
        self.alpha, self.main, self.aux, self.margin = alpha, main, aux, margin
        self.kappa = kappa

    @property
    def collects_outputs(self) -> bool:
        return self.main

    def parts(self, output: dict[str, torch.Tensor], target: dict[str, torch.Tensor]):
        """``(main, aux)`` means of the batch (each 0 when it does not apply)."""
        logits, cf = output["logits"], output["cf"]
        zero = logits.new_zeros((), dtype=torch.float32)
        role = target.get("role")
        rows = slice(None) if role is None else role == 0
        main = zero
        if self.main:
            per = class_balanced_bce(
                logits[rows], target["labels"][rows], self.class_weights.to(logits.device)
            )
            main = _weighted_mean(per, target["labelled"][rows])
        aux = zero
        if self.aux == "reconstruct":
            per = reconstruction_loss(cf, target["cf"], self.kappa)
            aux = _weighted_mean(per, target["weight"])
        elif self.aux == "triplet" and role is not None:
            per = triplet_loss(cf[role == 0], cf[role == 1], cf[role == 2], self.margin)
            aux = _weighted_mean(per, target["weight"][role == 0])
        return main, aux

    def loss(
        self, output: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        main, aux = self.parts(output, target)
        return main + self.alpha * aux if self.main else aux

    def batch_stats(self, output: Any, target: Any) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            main, aux = self.parts(output, target)
        n = output["logits"].shape[0]
        return {"main": main.double() * n, "aux": aux.double() * n}

    def epoch_stats(self, outputs: list[Any], targets: list[Any]) -> dict[str, float]:
        from cfcore.metrics import mean_average_precision

        y = torch.cat([t["labels"] for t in targets]).numpy()
        s = torch.cat([o["logits"] for o in outputs]).float().numpy()
        try:
            return {"map": mean_average_precision(y, s)}
        except InputError:
            return {"map": float("nan")}


# ----------------------------------------------------------------------------- targets
def cf_targets(
    vectors: np.ndarray, fit_rows: np.ndarray, standardize: bool = False
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """The CF head's targets ``z_i`` and the distance scale κ (module docstring).

    ``z_i = (q_i − μ) / r``: centred with the mean μ over ``fit_rows`` and divided by the
    root-mean-square ``r`` of the centred coordinates (with ``standardize``, by each
    dimension's deviation instead), so the head predicts numbers of order 1. κ is chosen so
    that ``κ (‖z_i‖₁ + ‖z_i‖₂)`` averages 1 over ``fit_rows``: the reconstruction loss
    ``exp(κ (L1 + L2))`` is the paper's ``exp(L1 + L2)`` of the vectors ``κ z_i``, whose mean
    distance from their centre is 1.

    Returns
    -------
    targets : ndarray float32 (n, f)
        Every row transformed alike (rows without a vector are meaningless; they weigh 0).
    kappa : float
    transform : dict
        ``center``, ``scale`` (r, or the per-dimension deviations) and ``kappa``.
    """
    q = np.asarray(vectors, dtype=np.float64)
    fit = q[fit_rows]
    if len(fit) == 0:
        raise InputError("no training item has a CF vector")
    center = fit.mean(axis=0)
    centred = fit - center
    if standardize:
        scale: Any = centred.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
    else:
        scale = float(np.sqrt(np.mean(centred**2)))
        if not scale > 1e-12:
            raise InputError("the training items' CF vectors are all equal: nothing to reconstruct")
    z_fit = centred / scale
    kappa = 1.0 / float(np.mean(np.abs(z_fit).sum(axis=1) + np.linalg.norm(z_fit, axis=1)))
    targets = ((q - center) / scale).astype(np.float32)
    transform = {
        "center": center.tolist(),
        "scale": np.asarray(scale).tolist(),
        "kappa": kappa,
    }
    return targets, kappa, transform


def confidence_weights(
    kind: str,
    has_vector: np.ndarray,
    n_users: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
    cap: float = 5.0,
    seed: int = 0,
) -> np.ndarray:
    """``min(ω_i / mean ω, Ω)`` for the items with a CF vector, 0 for the others.

    Parameters
    ----------
    kind : {"uniform", "interactions", "loss"}
    has_vector : bool (n,)
    n_users : int (n,)
        ``interactions``: training users of each item, ``ω = √|U_i|``.
    vectors, targets, labelled : (n, f), (n, K), bool (n,)
        ``loss``: ``ω = 1 / ℓ_WEIGHT`` of CF2Label, out of fold over the items with a
        vector and a (kept) label; the other items with a vector get the mean ω.
    cap : float
        Ω, in units of the mean ω.
    """
    has = np.asarray(has_vector, dtype=bool)
    if not has.any():
        raise InputError("no item has a CF vector")
    if kind == "uniform":
        omega = np.ones(len(has))
    elif kind == "interactions":
        if n_users is None:
            raise InputError("the interaction confidence needs the items' user counts")
        omega = np.sqrt(np.asarray(n_users, dtype=np.float64))
    elif kind == "loss":
        from cfvision.cf2label import CF2LabelConfig, loss_confidence

        if vectors is None or targets is None or labelled is None:
            raise InputError("the loss confidence needs the CF vectors and the labels")
        sel = has & np.asarray(labelled, dtype=bool) & (np.asarray(targets).sum(axis=1) > 0)
        omega = np.full(len(has), np.nan)
        omega[sel] = loss_confidence(vectors[sel], targets[sel], cfg=CF2LabelConfig(seed=seed))
        omega[has & ~sel] = np.nanmean(omega[sel])
    else:
        raise InputError(f"confidence must be one of {', '.join(CONFIDENCES)}, got {kind!r}")
    omega = np.where(has, omega, 0.0)
    mean = omega[has].mean()
    if not mean > 0:
        raise InputError(f"the {kind} confidence is 0 for every item")
    return np.minimum(omega / mean, cap).astype(np.float32)


def nearest_neighbours(vectors: np.ndarray, rows: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each of ``rows``, the row among ``rows`` nearest by L2 distance (itself excluded);
    ``-1`` for every other row. Ties go to the lower row."""
    out = np.full(len(vectors), -1, dtype=np.int64)
    if len(rows) < 2:
        return out
    x = torch.from_numpy(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    for start in range(0, len(rows), chunk):
        d = torch.cdist(x[start : start + chunk], x)
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = float("inf")
        out[rows[start : start + chunk]] = rows[d.argmin(dim=1).numpy()]
    return out


class TripletSampler(Sampler[int]):
    """Each anchor of ``base`` followed by its positive and a random negative (§4.3.1).

    ``positives[a]`` is the anchor's nearest item (``-1`` without a CF vector: the anchor
    then stands in for both, and its triplet weighs 0). Negatives are drawn uniformly from
    ``candidates`` with a generator seeded by ``(seed, epoch, rank)``.
    """

    def __init__(
        self,
        base: Sampler[int],
        positives: np.ndarray,
        candidates: np.ndarray,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.base, self.positives, self.candidates = base, positives, np.asarray(candidates)
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return 3 * len(self.base)  # type: ignore[arg-type]

    def __iter__(self):
        anchors = np.fromiter(iter(self.base), dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 3])
        negatives = self.candidates[rng.integers(0, len(self.candidates), len(anchors))]
        pos = self.positives[anchors]
        alone = pos < 0
        pos = np.where(alone, anchors, pos)
        neg = np.where(alone, anchors, negatives)
        return iter(np.stack([anchors, pos, neg], axis=1).ravel().tolist())


class TripletImages(CachedImages):
    """Batches of consecutive (anchor, positive, negative) draws, with a ``role`` target."""

    def __getitems__(self, keys: list[Any]) -> tuple[torch.Tensor, Any]:
        x, y = super().__getitems__(keys)
        y["role"] = torch.arange(len(keys)) % 3
        return x, y


# ----------------------------------------------------------------------------- the run
@dataclass
class MultitaskData:
    """What one method trains on: rows of the items and their targets."""

    items: CollabItems
    train_rows: np.ndarray
    kept: np.ndarray  #: bool (n,): the label trains (training part, labelled, within the ratio)
    cf: np.ndarray
    kappa: float
    weight: np.ndarray
    class_weights: np.ndarray
    transform: dict[str, Any] = field(default_factory=dict)

    def targets(self, rows: np.ndarray, evaluation: bool = False) -> dict[str, np.ndarray]:
        it = self.items
        return {
            "labels": it.targets[rows],
            "labelled": (it.labelled[rows] if evaluation else self.kept[rows]).astype(np.float32),
            "cf": self.cf[rows],
            "weight": np.zeros(len(rows), np.float32) if evaluation else self.weight[rows],
        }


def build_data(items: CollabItems, cfg: MultitaskConfig) -> MultitaskData:
    """Label ratio, class weights, CF targets and confidences of ``cfg.method``."""
    train = items.part == TRAIN
    lab_train = np.flatnonzero(train & items.labelled)
    if len(lab_train) == 0:
        raise InputError("no training item has a label")
    kept = np.zeros(len(items), dtype=bool)
    kept[lab_train[keep_labels(len(lab_train), cfg.label_ratio, cfg.seed)]] = True
    cw = class_weights(items.targets[kept].sum(axis=0))
    cf, kappa, transform = cf_targets(
        items.vectors, np.flatnonzero(items.has_vector), cfg.cf_standardize
    )
    if cfg.method == "image-only":
        weight = np.zeros(len(items), dtype=np.float32)
        rows = np.flatnonzero(kept)
    else:
        weight = confidence_weights(
            cfg.confidence,
            items.has_vector,
            items.n_users,
            items.vectors,
            items.targets,
            kept,
            cfg.omega_cap,
            cfg.seed,
        )
        rows = np.flatnonzero(train & (kept | items.has_vector))
    return MultitaskData(items, rows, kept, cf, kappa, weight, cw, transform)


@dataclass
class MultitaskResult:
    """A finished run: the model, its history and ``result.json``'s content."""

    model: MultitaskNet
    history: list[dict[str, Any]]
    result: dict[str, Any]
    output: Path
    data: MultitaskData | None = None
    dist: DistInfo = field(default_factory=DistInfo)


def _prepare_output(cfg: MultitaskConfig) -> Path:
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    found = [p for p in (output / CHECKPOINT, output / AUX_DIR / CHECKPOINT) if p.exists()]
    if found and not cfg.resume:
        raise InputError(
            f"{found[0]} exists: pass --resume to continue that run, or choose another --output"
        )
    if cfg.resume and not found:
        raise InputError(f"--resume: no checkpoint in {output}")
    return output


def _meta(model: MultitaskNet, cfg: MultitaskConfig, items: CollabItems) -> dict[str, Any]:
    return {
        "task": "multitask",
        "arch": model.arch,
        "num_classes": model.num_classes,
        "cf_dim": model.cf_dim,
        "feature_dim": model.feature_dim,
        "dropout": cfg.dropout,
        "image_size": cfg.image_size,
        "class_names": items.class_names,
        "multilabel": True,
        "method": cfg.method,
        "confidence": cfg.confidence,
    }


def _check_resumable(state: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    for key in ("task", "arch", "num_classes", "cf_dim", "image_size", "method", "confidence"):
        if state.get(key) != meta[key]:
            raise InputError(
                f"{path}: the checkpoint has {key} = {state.get(key)!r}, this run "
                f"{meta[key]!r}; use the same settings or another --output folder"
            )


def _run_phase(
    cfg: MultitaskConfig,
    model: MultitaskNet,
    objective: MultitaskObjective,
    train_ds: CachedImages,
    val_ds: CachedImages | None,
    meta: dict[str, Any],
    device: torch.device,
    dist: DistInfo,
    triplets: tuple[np.ndarray, np.ndarray] | None,
    on_batch: Callable[[int, int], None] | None,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One :func:`~cfvision.train.fit` into ``cfg.output``, resumed when its checkpoint exists."""
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    run = Run(
        model,
        objective,
        build_optimizer(model, cfg),
        cfg,
        device,
        meta=meta,
        scaler=make_scaler(device, cfg.amp),
        dist=dist,
    )
    start, history = 0, []
    if run.checkpoint.exists():
        start, history, _ = restore(run, lambda s: _check_resumable(s, meta, run.checkpoint))
        say(
            f"resumed {run.checkpoint} at epoch {start}"
            if start < cfg.epochs
            else f"{run.checkpoint} already holds all {cfg.epochs} epochs"
        )
    if triplets is None:
        loader = make_train_loader(train_ds, cfg, dist, device)
    else:
        positives, candidates = triplets
        base = TripletSampler(
            shuffled_sampler(train_ds, cfg, dist), positives, candidates, cfg.seed, dist.rank
        )
        loader = make_train_loader(train_ds, cfg, dist, device, base, 3 * cfg.batch_size)
    val = (
        None if val_ds is None else make_loader(val_ds, cfg.batch_size, device, workers=cfg.workers)
    )
    return fit(run, loader, val, start, history, on_batch, say)


@torch.no_grad()
def predict_logits(
    model: MultitaskNet, dataset: CachedImages, device: torch.device, batch_size: int = 128
) -> np.ndarray:
    """The label head's logits for every item of ``dataset`` (centre crops, eval mode)."""
    from cfvision.loader import channels_last_for, to_model_input

    model.eval()
    loader = make_loader(dataset, batch_size, device)
    channels_last = channels_last_for(device)
    out = [
        model(to_model_input(x, device, channels_last))["logits"].float().cpu() for x, _ in loader
    ]
    return torch.cat(out).numpy()


def train_multitask(
    cfg: MultitaskConfig,
    on_batch: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> MultitaskResult:
    """Train one method of collaborative image understanding and score it on the test items.

    Writes into ``cfg.output``: ``split.csv`` and ``cf_model.npz`` (unless given),
    ``checkpoint.pt`` (every epoch; ``--resume`` continues it), ``metrics.jsonl``,
    ``curves.png``, ``image_report.txt``, and at the end ``test_scores.npz`` (the test items'
    logits and labels) and ``result.json`` (test mAP with its bootstrap CI, per-class AP,
    validation mAP, counts, timings and the configuration). ``sequential`` trains its
    auxiliary phase in ``aux/`` first.

    Parameters
    ----------
    cfg : MultitaskConfig
    on_batch : callable, optional
        ``on_batch(epoch, step)`` before every training batch (the tests interrupt from it).
    log : callable, optional
        One-line messages (rank 0); ``None`` silences them.

    Returns
    -------
    MultitaskResult
    """
    from cfcore.io import atomic_write_text, save_artifact
    from cfcore.metrics import average_precision, bootstrap_ci, mean_average_precision

    cfg.validate()
    started = time.perf_counter()
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = setup_distributed(device)
    say = log if (log is not None and dist.main) else (lambda _m: None)
    output = _prepare_output(cfg)
    seed_everything(cfg.seed)
    items = build_items(cfg, output, say)
    for note in items.notes:
        say(note)
    if dist.main:
        items.images.report.write(output / "image_report.txt")
    data = build_data(items, cfg)
    say(
        f"{cfg.variant}: {len(data.train_rows):,} training images, "
        f"{int(data.kept.sum()):,} with a label (ratio {cfg.label_ratio:g}), "
        f"{int((data.weight > 0).sum()):,} with a CF target; K = {items.n_classes}, "
        f"f = {items.cf_dim}"
    )

    torch.manual_seed(cfg.seed)
    model = build_multitask_model(
        cfg.arch, items.n_classes, items.cf_dim, cfg.weights, cfg.dropout
    ).to(device)
    from cfvision.loader import channels_last_for

    if channels_last_for(device):
        model = model.to(memory_format=torch.channels_last)
    meta = _meta(model, cfg, items)
    cw = torch.from_numpy(data.class_weights)
    size = cfg.image_size

    def dataset(rows: np.ndarray, evaluation: bool = False, kind=CachedImages) -> CachedImages:
        return kind(items.images, rows, data.targets(rows, evaluation), size)

    val_ds = dataset(items.rows(VAL), evaluation=True)
    test_ds = dataset(items.rows(TEST), evaluation=True)
    history: list[dict[str, Any]] = []
    if cfg.method == "sequential" and not (output / CHECKPOINT).exists():
        aux_rows = np.flatnonzero(data.weight > 0)
        aux_cfg = replace(cfg, output=str(output / AUX_DIR), epochs=cfg.aux_epochs or cfg.epochs)
        say(f"sequential, phase 1: the auxiliary task alone for {aux_cfg.epochs} epochs")
        _run_phase(
            aux_cfg,
            model,
            MultitaskObjective(cw, cfg.alpha, main=False, aux="reconstruct", kappa=data.kappa),
            dataset(aux_rows),
            None,
            meta,
            device,
            dist,
            None,
            on_batch,
            say,
        )
        say("sequential, phase 2: the main task alone from those weights")
    if cfg.method == "contrastive":
        rows = data.train_rows
        has = np.flatnonzero(data.weight[rows] > 0)
        positives = nearest_neighbours(data.cf[rows], has)
        train_ds = dataset(rows, kind=TripletImages)
        triplets: tuple[np.ndarray, np.ndarray] | None = (positives, has)
        objective = MultitaskObjective(cw, cfg.alpha, aux="triplet", margin=cfg.margin)
    else:
        train_ds = dataset(
            np.flatnonzero(data.kept) if cfg.method == "sequential" else data.train_rows
        )
        triplets = None
        aux = "reconstruct" if cfg.method == "mtl" else None
        objective = MultitaskObjective(cw, cfg.alpha, aux=aux, kappa=data.kappa)
    history = _run_phase(
        cfg, model, objective, train_ds, val_ds, meta, device, dist, triplets, on_batch, say
    )

    # ------------------------------------------------------------------ test
    scores = predict_logits(model, test_ds, device)
    y_test = items.targets[items.rows(TEST)]
    test_ids = items.item_ids[items.rows(TEST)]
    point, low, high = bootstrap_ci(
        mean_average_precision, y_test, scores, n_boot=cfg.n_boot, seed=cfg.seed, interval="normal"
    )
    ap = average_precision(y_test, scores)
    val_scores = predict_logits(model, val_ds, device)
    try:
        val_map = mean_average_precision(items.targets[items.rows(VAL)], val_scores)
    except InputError:
        val_map = float("nan")
    missing = [n for n, a in zip(items.class_names, ap, strict=True) if not np.isfinite(a)]
    result = {
        "variant": cfg.variant,
        "method": cfg.method,
        "confidence": cfg.confidence if cfg.method != "image-only" else None,
        "alpha": cfg.alpha,
        "label_ratio": cfg.label_ratio,
        "seed": cfg.seed,
        "test_map": point,
        "test_map_ci": [low, high],
        "val_map": val_map,
        "per_class_ap": {
            n: (float(a) if np.isfinite(a) else None)
            for n, a in zip(items.class_names, ap, strict=True)
        },
        "classes_evaluated": len(items.class_names) - len(missing),
        "classes_without_test_positive": missing,
        "n_train_images": len(data.train_rows),
        "n_train_labelled": int(data.kept.sum()),
        "n_train_vectors": int((data.weight > 0).sum()),
        "n_val": len(items.rows(VAL)),
        "n_test": len(test_ids),
        "epochs": cfg.epochs,
        "train_seconds": float(sum(h.get("train_seconds", 0.0) for h in history)),
        "seconds": time.perf_counter() - started,
        "cf_kappa": data.kappa,
        "config": asdict(cfg),
    }
    if dist.main:
        save_artifact(
            output / SCORES,
            SCORES_KIND,
            {"item_ids": test_ids, "scores": scores, "targets": y_test},
            {"class_names": items.class_names, "variant": cfg.variant, "seed": cfg.seed},
        )
        atomic_write_text(output / RESULT, json.dumps(result, indent=2) + "\n")
    ci = f"95% CI {low:.4f}–{high:.4f}"
    say(
        f"{cfg.variant}: test mAP {point:.4f} ({ci}) over {result['classes_evaluated']} classes "
        f"and {len(test_ids)} test items; validation mAP {val_map:.4f}"
    )
    return MultitaskResult(model, history, result, output, data, dist)


def load_scores(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(item_ids, scores, targets, header)`` of a run's ``test_scores.npz``."""
    from cfcore.io import load_artifact, require_keys

    arrays, header = load_artifact(path, SCORES_KIND)
    require_keys(path, arrays, ["item_ids", "scores", "targets"])
    return arrays["item_ids"], arrays["scores"], arrays["targets"], header
