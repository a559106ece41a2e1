"""Train a CNN on (pseudo-)classes: Fang et al. §2.2 and §4.1.

Laid out like torchvision's ``references/classification/train.py``: one small function each for
the device, the data, the model, the optimizer, the schedule, one training epoch, evaluation and
checkpoints. :func:`train` builds the pseudo-class task and hands it to :func:`fit`, the loop
every cfvision training shares. Distributed training is the same code path: started by
``torchrun --nproc-per-node N -m cfvision train ...`` it wraps the model in
DistributedDataParallel and shards every epoch with a distributed sampler (``gloo`` on CPU,
``nccl`` on CUDA).

Plugging in another task
------------------------
:func:`fit` knows nothing about classes. It runs a :class:`Run` — a model (any ``nn.Module``;
its output may be a tensor, a tuple or a dict), an :class:`Objective` (the loss of a batch and
the metrics of an epoch), the optimizer — over loaders of :class:`~cfvision.loader.CachedImages`
whose targets may be one array or a dict of named arrays (labels, CF vectors, per-item
weights, masks). Another head or loss (e.g. Bibas et al.'s multitask CF-vector
reconstruction) is a new model and a new :class:`Objective` on the same data path, loop,
schedule, divergence checks and checkpoints.

Reproducibility and ``--resume``
--------------------------------
Every random choice of an epoch — the shuffle (or class-balanced draw), the crops and flips,
dropout — comes from generators seeded with ``(seed, epoch, rank)`` at the start of that epoch.
A checkpoint is written atomically at the end of every epoch with the model, optimizer (and AMP
scaler) state, the next epoch, the history and the RNG states. A run killed in the middle of
epoch ``e`` and resumed restarts epoch ``e`` from the checkpoint of epoch ``e - 1`` with exactly
the random stream the uninterrupted run used, so both end with the same weights and metrics (on
the same device and thread count). The learning rate of epoch ``e`` is a function of ``e`` and
``--epochs`` (:func:`lr_factor`), so a resumed run with a larger ``--epochs`` continues on the
schedule of a run of the new length.

Divergence
----------
A non-finite loss (checked every few batches) or non-finite weights (checked after every epoch,
before anything is saved) stop the run with :class:`~cfcore.errors.DivergenceError` naming
``--lr``; the checkpoint on disk stays the last good epoch's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from cfcore.errors import DivergenceError, InputError
from cfcore.ids import id_positions
from cfvision.data import (
    ImageReport,
    ItemImages,
    Labels,
    Match,
    load_labels,
    match_items,
    open_image_index,
    prepare_images,
    resize_size,
)
from cfvision.loader import (
    AugmentSampler,
    CachedImages,
    channels_last_for,
    epoch_seed,
    make_loader,
    targets_to,
    to_model_input,
)
from cfvision.models import FeatureClassifier, build_model, load_checkpoint

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
REPORT = "image_report.txt"

#: The loss is checked for NaN/inf every this many batches (a check waits for the GPU).
CHECK_EVERY = 20

__all__ = [
    "ClassificationObjective",
    "Objective",
    "Run",
    "TrainConfig",
    "epoch_seed",
    "fit",
    "lr_factor",
    "train",
]


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint).

    ``lr=None`` picks 0.1·batch/256 for SGD (Goyal et al.'s linear scaling rule) and 1e-3 for
    AdamW; ``weight_decay=None`` picks 5e-4 for SGD (AlexNet's) and 0.05 for AdamW.
    ``workers=None`` picks per device (:func:`cfvision.loader.loader_settings`);
    ``cache_dir=None`` is :func:`cfvision.cache.default_cache_dir`.
    """

    images: str
    labels: str
    output: str
    arch: str = "resnet18"
    weights: str | None = None
    image_size: int = 224
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "cosine"
    step_size: int | None = None
    gamma: float = 0.1
    dropout: float = 0.5
    balanced: bool = False
    val_fraction: float = 0.1
    workers: int | None = None
    cache_dir: str | None = None
    on_bad_image: str = "skip"
    id_space: str | None = None
    allow_partial: bool = False
    item_col: str | None = None
    labels_col: str | None = None
    data_dir: str | None = None
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    resume: bool = False
    progress: bool = True

    def effective_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.1 * self.batch_size / 256 if self.optimizer == "sgd" else 1e-3

    def effective_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.05

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.image_size >= 8, f"image_size must be >= 8, got {self.image_size}"),
            (
                self.optimizer in ("sgd", "adamw"),
                f"optimizer must be sgd or adamw, got {self.optimizer!r}",
            ),
            (
                self.schedule in ("cosine", "step", "constant"),
                f"schedule must be cosine, step or constant, got {self.schedule!r}",
            ),
            (
                0.0 <= self.val_fraction < 1.0,
                f"val_fraction must lie in [0, 1), got {self.val_fraction}",
            ),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (
                self.workers is None or self.workers >= 0,
                f"workers must be >= 0, got {self.workers}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


# ----------------------------------------------------------------------------- device, ranks
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1 in the environment)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global state third-party code uses
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data
@dataclass
class TrainData:
    """The datasets of one run and what was left out."""

    train: CachedImages
    val: CachedImages | None
    labels: Labels
    images: ItemImages
    report: ImageReport
    train_items: np.ndarray
    val_items: np.ndarray
    match: Match | None = None


def split_items(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/validation split of ``n`` items: sorted positions of each part."""
    if val_fraction <= 0:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise InputError(f"val_fraction {val_fraction} leaves no training items ({n} items)")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def build_data(cfg: TrainConfig) -> TrainData:
    """Images ∩ labels (matched-fraction check), the image cache, train/val datasets."""
    labels = load_labels(cfg.labels, cfg.data_dir, cfg.item_col, cfg.labels_col)
    index = open_image_index(cfg.images, cfg.id_space, labels.item_ids, cfg.data_dir)
    match = match_items(index, labels, cfg.allow_partial)
    labels = labels.select(match.label_rows)
    images = prepare_images(
        index,
        labels.item_ids,
        resize_size(cfg.image_size),
        cfg.cache_dir,
        cfg.on_bad_image,
        cfg.progress,
    )
    images.report.match = match
    if len(images) < 2:
        raise InputError(f"only {len(images)} labelled item(s) have a readable image")
    labels = labels.select(id_positions(labels.item_ids, images.item_ids))  # usable ones
    tr, va = split_items(len(images), cfg.val_fraction, cfg.seed)
    train_ds = CachedImages(images, tr, labels.targets[tr], cfg.image_size)
    val_ds = CachedImages(images, va, labels.targets[va], cfg.image_size) if len(va) else None
    return TrainData(
        train_ds,
        val_ds,
        labels,
        images,
        images.report,
        images.item_ids[tr],
        images.item_ids[va],
        match,
    )


class ClassBalancedSampler(Sampler[int]):
    """Draw ``len(targets)`` items per epoch, uniformly over classes then over members.

    DeepCluster (Caron et al. 2018) samples uniformly over pseudo-classes so that a few huge
    k-means clusters do not dominate; sampling is with replacement. The draw for epoch ``e``
    uses a generator seeded by ``(seed, e)``, and each of ``world_size`` processes takes every
    ``world_size``-th draw, like :class:`~torch.utils.data.DistributedSampler`.
    """

    def __init__(
        self, targets: np.ndarray, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        targets = np.asarray(targets)
        if targets.ndim != 1:
            raise InputError("class-balanced sampling needs single-label targets")
        counts = np.bincount(targets)
        weights = 1.0 / counts[targets]
        self.weights = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.num_samples = math.ceil(len(targets) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        draws = torch.multinomial(
            self.weights, self.num_samples * self.world_size, True, generator=g
        )
        return iter(draws[self.rank :: self.world_size].tolist())


def shuffled_sampler(dataset: CachedImages, cfg: TrainConfig, dist: DistInfo) -> Sampler[int]:
    """A seeded permutation of the items per epoch, sharded over the ranks.

    :class:`~torch.utils.data.DistributedSampler` also serves one process; its epoch's
    permutation is seeded by ``(seed, epoch)``.
    """
    from torch.utils.data import DistributedSampler

    return DistributedSampler(
        dataset,
        num_replicas=dist.world_size,
        rank=dist.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=False,
    )


def make_train_loader(
    dataset: CachedImages,
    cfg: TrainConfig,
    dist: DistInfo,
    device: torch.device,
    base: Sampler | None = None,
    batch_size: int | None = None,
) -> DataLoader:
    """The training loader: ``base`` (default :func:`shuffled_sampler`) with each draw's crop
    and flip (:class:`~cfvision.loader.AugmentSampler`); the last partial batch is dropped
    when there is more than one batch."""
    base = shuffled_sampler(dataset, cfg, dist) if base is None else base
    batch = batch_size or cfg.batch_size
    sampler = AugmentSampler(base, dataset.size, dataset.crop, cfg.seed, dist.rank)
    return make_loader(
        dataset,
        batch,
        device,
        sampler=sampler,
        workers=cfg.workers,
        drop_last=len(sampler) > batch,
    )


def build_loaders(
    data: TrainData, cfg: TrainConfig, dist: DistInfo, device: torch.device
) -> tuple[DataLoader, DataLoader | None]:
    """Training loader (shuffled or class-balanced, sharded, augmented) and validation loader."""
    base = None
    if cfg.balanced:
        base = ClassBalancedSampler(data.train.targets, cfg.seed, dist.rank, dist.world_size)
    train = make_train_loader(data.train, cfg, dist, device, base)
    val = None
    if data.val is not None:
        val = make_loader(data.val, cfg.batch_size, device, workers=cfg.workers)
    return train, val


# ----------------------------------------------------------------------------- objective
class Objective(Protocol):
    """What :func:`fit` optimises: the loss of a batch and the measures of an epoch.

    ``output`` is whatever the model returns, ``target`` whatever the loader's targets are
    (a tensor or a dict of tensors), both on the device. An objective may set
    ``collects_outputs = False`` when :meth:`epoch_stats` needs nothing (validation then keeps
    no outputs).
    """

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """Mean loss of the batch (a float32 scalar)."""
        ...

    def batch_stats(self, output: Any, target: Any) -> dict[str, torch.Tensor]:
        """Sums over the batch (e.g. correct predictions), divided by the item count later;
        reported as ``train_<name>`` and ``val_<name>``."""
        ...

    def epoch_stats(self, outputs: list[Any], targets: list[Any]) -> dict[str, float]:
        """Validation measures that need every output at once (e.g. mAP), or ``{}``."""
        ...


class ClassificationObjective:
    """Cross-entropy over K classes, or binary cross-entropy over K labels (multi-label).

    Measures: ``acc`` (top-1; multi-label: the top-scored label is a positive) and ``top5``
    per batch; mAP over classes on validation for multi-label data
    (:func:`cfcore.metrics.mean_average_precision`).
    """

    def __init__(self, multilabel: bool = False) -> None:
        self.multilabel = multilabel
        self.criterion = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(output.float(), target)

    def _hits(self, output: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
        top = output.topk(min(k, output.shape[1]), dim=1).indices
        if self.multilabel:
            return target.gather(1, top).amax(dim=1).sum()
        return (top == target[:, None]).any(dim=1).sum()

    def batch_stats(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        output = output.detach()
        return {"acc": self._hits(output, target, 1), "top5": self._hits(output, target, 5)}

    def epoch_stats(self, outputs: list[Any], targets: list[Any]) -> dict[str, float]:
        if not self.multilabel:
            return {}
        from cfcore.metrics import mean_average_precision

        y = torch.cat(targets).cpu().numpy()
        s = torch.cat(outputs).float().cpu().numpy()
        try:
            return {"map": mean_average_precision(y, s)}
        except InputError:  # no positive in the validation items
            return {"map": float("nan")}

    @property
    def collects_outputs(self) -> bool:
        return self.multilabel


# ----------------------------------------------------------------------------- optimisation
def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW; no weight decay on biases and norm layers."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.effective_weight_decay()},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.effective_lr(), momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.effective_lr())


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of ``epoch`` relative to the base rate.

    ``cosine``: ½(1 + cos(π·epoch/epochs)), from 1 to 0 over the run (Loshchilov & Hutter,
    without restarts); ``step``: ``gamma`` every ``step_size`` epochs (default epochs/3);
    ``constant``: 1. A function of the epoch and ``epochs`` only, so that a resumed run — also
    one extended to more epochs — follows the schedule of a run of that length.
    """
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "step":
        step = cfg.step_size or max(1, cfg.epochs // 3)
        return cfg.gamma ** (epoch // step)
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, epoch: int, cfg: TrainConfig) -> float:
    lr = cfg.effective_lr() * lr_factor(epoch, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def average_buffers(model: nn.Module, dist: DistInfo) -> None:
    """Average floating-point buffers (batch-norm running statistics) over the ranks.

    DDP keeps parameters identical but each rank updates its running statistics on its own
    shard; averaging them at the end of every epoch makes every rank hold the same model
    (integer buffers such as ``num_batches_tracked`` already agree).
    """
    import torch.distributed as tdist

    for buf in model.buffers():
        if buf.is_floating_point():
            tdist.all_reduce(buf)
            buf.div_(dist.world_size)


def _autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers holding NaN or inf."""
    named = [*model.named_parameters(), *model.named_buffers()]
    named = [(n, t) for n, t in named if t.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu().tolist()
    return [n for (n, _), good in zip(named, ok, strict=True) if not good]


def _diverged(where: str, what: str, lr: float) -> DivergenceError:
    return DivergenceError(
        f"{where}: {what} — training diverged; try a lower learning rate (--lr, this run {lr:g})"
    )


def make_scaler(device: torch.device, amp: bool) -> Any:
    """A gradient scaler for float16 autocast on CUDA; None for bf16 (no scaling needed) or
    without AMP."""
    if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.amp.GradScaler("cuda")
    return None


# ----------------------------------------------------------------------------- loop
def training_step(
    model: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: Any,
    device: torch.device,
    amp: bool = False,
    scaler: Any = None,
) -> tuple[Any, torch.Tensor]:
    """Forward (under autocast when ``amp``), loss, backward, optimizer step; returns the
    output and the loss (not synchronised: nothing here waits for the GPU)."""
    with _autocast(device, amp):
        output = model(x)
        loss = objective.loss(output, y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return output, loss


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    epoch: int,
    amp: bool = True,
    scaler: Any = None,
    dist: DistInfo = DistInfo(),
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; mean loss and measures, images/s (over all ranks).

    Statistics are summed on the device and read every :data:`CHECK_EVERY` batches, when the
    loss is also checked for NaN/inf (a read waits for the GPU; the CPU runs ahead otherwise).
    """
    model.train()
    channels_last = channels_last_for(device)
    lr = optimizer.param_groups[0]["lr"]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    start = time.perf_counter()
    it: Any = loader
    if progress and dist.main:
        from tqdm import tqdm

        it = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False)
    for step, (x, y) in enumerate(it):
        if on_batch is not None:
            on_batch(epoch, step)
        x = to_model_input(x, device, channels_last)
        y = targets_to(y, device)
        output, loss = training_step(model, objective, optimizer, x, y, device, amp, scaler)
        n = x.shape[0]
        loss_sum += loss.detach().double() * n
        for k, v in objective.batch_stats(output, y).items():
            sums[k] = sums[k] + v if k in sums else v.double()
        seen += n
        if step % CHECK_EVERY == 0:
            mean = float(loss_sum) / seen
            if not math.isfinite(mean):
                raise _diverged(f"epoch {epoch}, batch {step}", f"the loss is {mean}", lr)
            if hasattr(it, "set_postfix"):
                elapsed = time.perf_counter() - start
                it.set_postfix(loss=f"{mean:.3f}", img_s=f"{seen / max(elapsed, 1e-9):.0f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    names = sorted(sums)
    totals = torch.tensor(
        [float(loss_sum), seen, *[float(sums[k]) for k in names]], dtype=torch.float64
    )
    if dist.distributed:
        import torch.distributed as tdist

        tdist.all_reduce(totals)
    loss_total, n_total, *values = totals.tolist()
    out = {"train_loss": loss_total / max(n_total, 1)}
    out.update({f"train_{k}": v / max(n_total, 1) for k, v in zip(names, values, strict=True)})
    out.update({"images_per_s": n_total / max(elapsed, 1e-9), "train_seconds": elapsed})
    return out


def to_cpu(obj: Any) -> Any:
    """A model's output or a batch's targets — a tensor, a dict or a tuple of tensors — on the
    CPU, detached."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    objective: Objective,
    device: torch.device,
    *,
    amp: bool = True,
) -> dict[str, float]:
    """Validation loss and measures (``val_*``) in eval mode."""
    model.eval()
    channels_last = channels_last_for(device)
    loss_sum = 0.0
    sums: dict[str, float] = {}
    seen = 0
    outputs: list[Any] = []
    targets: list[Any] = []
    collect = getattr(objective, "collects_outputs", True)
    for x, y in loader:
        x = to_model_input(x, device, channels_last)
        y = targets_to(y, device)
        with _autocast(device, amp):
            output = model(x)
        loss_sum += float(objective.loss(output, y)) * x.shape[0]
        for k, v in objective.batch_stats(output, y).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        seen += x.shape[0]
        if collect:
            outputs.append(to_cpu(output))
            targets.append(to_cpu(y))
    out = {"val_loss": loss_sum / max(seen, 1)}
    out.update({f"val_{k}": v / max(seen, 1) for k, v in sums.items()})
    if collect:
        out.update({f"val_{k}": v for k, v in objective.epoch_stats(outputs, targets).items()})
    return out


# ----------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 - saved so --resume restores it
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *map(float, np_state[2:]),
        ],
        "python": _py_state_to_tensor(random.getstate()),
    }


def _py_state_to_tensor(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {
        "version": version,
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss": gauss,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    numpy_state = (name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached))
    np.random.set_state(numpy_state)  # noqa: NPY002 (third-party code uses the global state)
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))


@dataclass
class Run:
    """One training run: what :func:`fit` trains and what its checkpoint holds.

    Attributes
    ----------
    model : nn.Module
        The model (not wrapped); a :class:`~cfvision.models.FeatureClassifier` for
        :func:`train`, any module for other tasks.
    objective : Objective
    optimizer : torch.optim.Optimizer
    cfg : TrainConfig
        Epochs, schedule, learning rate, seed, AMP, progress (and everything else is saved).
    device : torch.device
    meta : dict
        Extra checkpoint entries describing the model (``arch``, ``num_classes``,
        ``class_names``…), so that the checkpoint can be rebuilt without the code that made it.
    scaler : GradScaler or None
    dist : DistInfo
    """

    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)
    scaler: Any = None
    dist: DistInfo = field(default_factory=DistInfo)

    @property
    def checkpoint(self) -> Path:
        return Path(self.cfg.output) / CHECKPOINT


def save_checkpoint(run: Run, epoch: int, history: list[dict[str, Any]]) -> None:
    """Write the checkpoint atomically (temporary file, then rename)."""
    from cfcore.io import atomic_path

    state = {
        **run.meta,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "epoch": epoch,  # the next epoch to run
        "history": history,
        "config": asdict(run.cfg),
        "rng": _rng_state(),
    }
    with atomic_path(run.checkpoint) as tmp:
        torch.save(state, tmp)


def restore(run: Run, check: Callable[[dict[str, Any]], None] | None = None):
    """Load the run's checkpoint into it; returns ``(next epoch, history, saved config)``.

    ``check(state)`` may refuse a checkpoint that does not fit the run (another K, arch…).
    Refuses an ``epochs`` smaller than the epochs already done; a larger one continues on the
    new schedule (:func:`lr_factor`).
    """
    path = run.checkpoint
    state = load_checkpoint(path)
    if check is not None:
        check(state)
    done = int(state["epoch"])
    if run.cfg.epochs < done:
        raise InputError(
            f"--epochs {run.cfg.epochs}: {path} already holds {done} epochs; pass "
            f"--epochs {done} or more (a larger value continues on the longer schedule)"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return done, list(state["history"]), state.get("config", {})


def write_metrics(output: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` (one JSON object per epoch) and ``curves.png``, both atomically.

    The curves: every loss of the history (``train_loss``, ``val_loss`` and the parts of a
    multitask loss, ``train_main``/``train_aux``) on the left, the accuracies and mAP on the
    right.
    """
    from cfcore.io import atomic_write_text
    from cfcore.plots import new_figure, save_figure

    atomic_write_text(output / METRICS, "".join(json.dumps(h) + "\n" for h in history))
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = new_figure(ncols=2, size=(10, 4))
    panels = (
        (ax1, ("train_loss", "val_loss", "train_main", "train_aux", "val_main"), "loss"),
        (ax2, ("train_acc", "val_acc", "val_top5", "val_map"), "accuracy / mAP"),
    )
    for ax, keys, ylabel in panels:
        for key in keys:
            if all(key in h for h in history):
                ax.plot(epochs, [h[key] for h in history], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if ax.get_lines():
            ax.legend()
    save_figure(fig, output / CURVES, dpi=80)


def fit(
    run: Run,
    train_loader: DataLoader,
    val_loader: DataLoader | None = None,
    start_epoch: int = 0,
    history: list[dict[str, Any]] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, Any]]:
    """Train ``run`` from ``start_epoch`` to ``run.cfg.epochs``: the loop every task shares.

    Each epoch: seed every random choice from ``(seed, epoch, rank)``, set the learning rate
    (:func:`lr_factor`), train, average batch-norm statistics over ranks, check the weights,
    validate, then (rank 0) append to the history, write the checkpoint, ``metrics.jsonl`` and
    ``curves.png``.

    Raises
    ------
    DivergenceError
        NaN/inf loss or weights; nothing of the diverged epoch is saved.
    """
    cfg, dist, device = run.cfg, run.dist, run.device
    history = list(history or [])
    net: nn.Module = run.model
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(run.model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    use_amp = cfg.amp and device.type == "cuda"
    for epoch in range(start_epoch, cfg.epochs):
        s = epoch_seed(cfg.seed, epoch, dist.rank)
        seed_everything(s)  # dropout of this epoch (module docstring)
        if train_loader.generator is not None:
            train_loader.generator.manual_seed(s)
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        lr = set_lr(run.optimizer, epoch, cfg)
        stats = train_one_epoch(
            net,
            train_loader,
            run.objective,
            run.optimizer,
            device,
            epoch=epoch,
            amp=use_amp,
            scaler=run.scaler,
            dist=dist,
            progress=cfg.progress,
            on_batch=on_batch,
        )
        if dist.distributed:
            average_buffers(run.model, dist)
        bad = nonfinite_tensors(run.model)
        if bad or not math.isfinite(stats["train_loss"]):
            raise _diverged(
                f"epoch {epoch}",
                f"{len(bad)} weight tensor(s) hold NaN/inf (e.g. {bad[0]}) after a train loss "
                f"of {stats['train_loss']:.3g}"
                if bad
                else f"the train loss is {stats['train_loss']}",
                lr,
            ) from None
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, **stats}
        if dist.main:
            if val_loader is not None:
                record.update(evaluate(run.model, val_loader, run.objective, device, amp=use_amp))
                if not math.isfinite(record["val_loss"]):
                    raise _diverged(
                        f"epoch {epoch}", f"the validation loss is {record['val_loss']}", lr
                    )
            history.append(record)
            save_checkpoint(run, epoch + 1, history)
            write_metrics(Path(cfg.output), history)
            say(
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items()
                )
            )
        if dist.distributed:
            import torch.distributed as tdist

            tdist.barrier()
    return history


# ----------------------------------------------------------------------------- the run
@dataclass
class TrainResult:
    model: FeatureClassifier
    history: list[dict[str, Any]]
    checkpoint: Path
    data: TrainData
    dist: DistInfo = field(default_factory=DistInfo)


def prepare_output(cfg: TrainConfig) -> Path:
    """The run folder; refuses to overwrite a run without ``resume`` (and resume without one)."""
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    ckpt = output / CHECKPOINT
    if ckpt.exists() and not cfg.resume:
        raise InputError(
            f"{ckpt} exists: pass --resume to continue that run, or choose another --output"
        )
    if cfg.resume and not ckpt.exists():
        raise InputError(f"--resume: no checkpoint at {ckpt}")
    return output


def train(
    cfg: TrainConfig,
    on_batch: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.labels`` over the images of ``cfg.images``.

    Parameters
    ----------
    cfg : TrainConfig
    on_batch : callable, optional
        Called as ``on_batch(epoch, step)`` before every training batch (progress hooks; the
        tests raise from it to simulate a run killed mid-epoch).
    log : callable, optional
        Where one-line messages go (rank 0 only); ``None`` silences them.

    Returns
    -------
    TrainResult
        The trained model (unwrapped from DDP), per-epoch history, checkpoint path.
    """
    cfg.validate()
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = setup_distributed(device)
    say = log if (log is not None and dist.main) else (lambda _m: None)
    output = prepare_output(cfg)

    seed_everything(cfg.seed)
    data = build_data(cfg)
    if dist.main:
        data.report.write(output / REPORT)
    bad = data.report.bad
    say(
        f"{len(data.train_items)} train / {len(data.val_items)} val items, "
        f"K = {data.labels.n_classes}; {len(bad)} bad image(s)"
        + (f" (listed in {output / REPORT})" if bad else "")
    )
    if data.match is not None and data.match.fraction < 1:
        say(data.match.line())
    if cfg.balanced and data.labels.multilabel:
        raise InputError("--balanced needs single-label classes (a pseudo-labels file)")

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg.arch, data.labels.n_classes, cfg.weights, cfg.dropout).to(device)
    if channels_last_for(device):
        model = model.to(memory_format=torch.channels_last)
    run = Run(
        model,
        ClassificationObjective(data.labels.multilabel),
        build_optimizer(model, cfg),
        cfg,
        device,
        meta={
            "arch": model.arch,
            "num_classes": model.num_classes,
            "feature_dim": model.feature_dim,
            "dropout": cfg.dropout,
            "image_size": cfg.image_size,
            "class_names": data.labels.class_names,
            "multilabel": data.labels.multilabel,
        },
        scaler=make_scaler(device, cfg.amp),
        dist=dist,
    )
    start_epoch, history = 0, []
    if cfg.resume:
        start_epoch, history, saved = restore(run, lambda s: _check_resumable(s, cfg, data.labels))
        before = saved.get("epochs")
        if before is not None and before != cfg.epochs and start_epoch < cfg.epochs:
            say(
                f"extending the run from {before} to {cfg.epochs} epochs: the {cfg.schedule} "
                f"schedule is that of a {cfg.epochs}-epoch run (lr at epoch {start_epoch}: "
                f"{cfg.effective_lr() * lr_factor(start_epoch, cfg):.3g})"
            )
        say(
            f"resumed from {run.checkpoint} at epoch {start_epoch}"
            if start_epoch < cfg.epochs
            else f"{run.checkpoint} already holds all {cfg.epochs} epochs; nothing to do"
        )
    train_loader, val_loader = build_loaders(data, cfg, dist, device)
    history = fit(run, train_loader, val_loader, start_epoch, history, on_batch, say)
    return TrainResult(model, history, run.checkpoint, data, dist)


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, labels: Labels) -> None:
    path = Path(cfg.output) / CHECKPOINT
    if int(state["num_classes"]) != labels.n_classes:
        raise InputError(
            f"{path}: the checkpoint has K = {state['num_classes']} classes but "
            f"{cfg.labels} has K = {labels.n_classes}; use the same labels file "
            "or another --output folder"
        )
    for key in ("arch", "image_size"):
        if state.get(key) != getattr(cfg, key):
            raise InputError(
                f"{path}: the checkpoint has {key} = {state.get(key)!r}, "
                f"this run {getattr(cfg, key)!r}"
            )
