"""Train a CNN on (pseudo-)classes: Fang et al. §2.2 and §4.1.

Laid out like torchvision's ``references/classification/train.py``: one small function each for
the device, the data, the model, the optimizer, the schedule, one training epoch, evaluation and
checkpoints; :func:`train` wires them together. Distributed training is the same code path:
started by ``torchrun --nproc-per-node N -m cfvision train ...`` it wraps the model in
DistributedDataParallel and shards every epoch with a distributed sampler (``gloo`` on CPU,
``nccl`` on CUDA).

Reproducibility and ``--resume``
--------------------------------
Every random choice of an epoch — the shuffle (or class-balanced draw), the crops and flips,
dropout — comes from generators seeded with ``(seed, epoch, rank)`` at the start of that epoch.
A checkpoint is written atomically at the end of every epoch with the model, optimizer,
scheduler (and AMP scaler) state, the next epoch, the history and the RNG states. A run killed
in the middle of epoch ``e`` and resumed restarts epoch ``e`` from the checkpoint of epoch
``e - 1`` with exactly the random stream the uninterrupted run used, so both end with the same
weights and metrics (on the same device and thread count).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from cfcore.errors import InputError
from cfvision.data import (
    ImageReport,
    ItemImageDataset,
    Labels,
    check_images,
    eval_transform,
    load_image_index,
    load_labels,
    match_items,
    resize_size,
    train_transform,
)
from cfvision.models import FeatureClassifier, build_model, load_checkpoint

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
REPORT = "image_report.txt"


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint).

    ``lr=None`` picks 0.1·batch/256 for SGD (Goyal et al.'s linear scaling rule) and 1e-3 for
    AdamW; ``weight_decay=None`` picks 5e-4 for SGD (AlexNet's) and 0.05 for AdamW.
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
    workers: int = 0
    cache_images: bool = False
    on_bad_image: str = "skip"
    id_space: str = "ml-100k"
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
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
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


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of every random choice in one epoch of one process (see the module docstring)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global state third-party transforms use
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data
@dataclass
class TrainData:
    """Datasets of one run and what was left out."""

    train: ItemImageDataset
    val: ItemImageDataset | None
    labels: Labels
    report: ImageReport
    train_items: list[str]
    val_items: list[str]
    n_unlabelled_images: int = 0


def split_items(items: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded random train/validation split of the labelled items."""
    if val_fraction <= 0:
        return list(items), []
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(items))
    n_val = max(1, int(round(len(items) * val_fraction)))
    if n_val >= len(items):
        raise InputError(
            f"val_fraction {val_fraction} leaves no training items ({len(items)} items)"
        )
    val = sorted(perm[:n_val].tolist())
    train = sorted(perm[n_val:].tolist())
    return [items[i] for i in train], [items[i] for i in val]


def build_data(cfg: TrainConfig) -> TrainData:
    """Images ∩ labels, bad images reported (and skipped or fatal), train/val datasets."""
    index = load_image_index(cfg.images, cfg.id_space)
    labels = load_labels(cfg.labels)
    common = match_items(index, labels)
    cache: dict[str, Any] | None = {} if cfg.cache_images else None
    report = check_images(
        index,
        common,
        cfg.on_bad_image,
        cache=cache,
        cache_size=resize_size(cfg.image_size),
        progress=cfg.progress,
    )
    usable = report.ok
    if len(usable) < 2:
        raise InputError(f"only {len(usable)} labelled item(s) have a readable image")
    labels = labels.subset(usable)
    train_items, val_items = split_items(usable, cfg.val_fraction, cfg.seed)
    lab_train = labels.subset(train_items)
    train_ds = ItemImageDataset(
        train_items, index, lab_train.targets, train_transform(cfg.image_size), cache
    )
    val_ds = None
    if val_items:
        val_ds = ItemImageDataset(
            val_items,
            index,
            labels.subset(val_items).targets,
            eval_transform(cfg.image_size),
            cache,
        )
    return TrainData(
        train_ds,
        val_ds,
        labels,
        report,
        train_items,
        val_items,
        n_unlabelled_images=len(index) - len(common),
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


def build_loaders(
    data: TrainData, cfg: TrainConfig, dist: DistInfo, device: torch.device
) -> tuple[DataLoader, DataLoader | None]:
    """Training loader (shuffled or class-balanced, sharded across ranks) and validation loader."""
    from torch.utils.data import DistributedSampler

    if cfg.balanced:
        sampler: Any = ClassBalancedSampler(
            data.train.targets, cfg.seed, dist.rank, dist.world_size
        )
    else:
        # DistributedSampler also serves one process: a seeded permutation per epoch.
        sampler = DistributedSampler(
            data.train,
            num_replicas=dist.world_size,
            rank=dist.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=False,
        )
    pin = device.type == "cuda"
    train = DataLoader(
        data.train,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=pin,
        drop_last=len(data.train) > cfg.batch_size,
        persistent_workers=False,
        generator=torch.Generator(),
    )
    val = None
    if data.val is not None:
        val = DataLoader(
            data.val,
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=cfg.workers,
            pin_memory=pin,
        )
    return train, val


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


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: cosine to 0 over ``epochs``, step (×gamma every ``step_size``), or constant."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "step":
        step = cfg.step_size or max(1, cfg.epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


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


def _criterion(multilabel: bool) -> nn.Module:
    return nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()


def _autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    import contextlib

    return contextlib.nullcontext()


def _correct(logits: torch.Tensor, target: torch.Tensor, multilabel: bool, k: int = 1) -> float:
    if multilabel:  # exact-match of the thresholded prediction is too strict; count hit@1
        top = logits.argmax(dim=1)
        return float(target.gather(1, top[:, None]).sum())
    k = min(k, logits.shape[1])
    return float((logits.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum())


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    epoch: int,
    amp: bool = True,
    scaler: Any = None,
    multilabel: bool = False,
    dist: DistInfo = DistInfo(),
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, top-1 accuracy and images/s (all ranks)."""
    model.train()
    channels_last = device.type == "cuda"
    loss_sum = correct = seen = 0.0
    start = time.perf_counter()
    it: Any = loader
    if progress and dist.main:
        from tqdm import tqdm

        it = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False)
    for step, (x, y) in enumerate(it):
        if on_batch is not None:
            on_batch(epoch, step)
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
            loss = criterion(logits.float(), y)
        if not torch.isfinite(loss):
            from cfcore.errors import DivergenceError

            raise DivergenceError(
                f"epoch {epoch} batch {step}: loss is {loss.item()}; try a lower --lr"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = x.shape[0]
        loss_sum += float(loss.detach()) * n
        correct += _correct(logits.detach(), y, multilabel)
        seen += n
        if progress and dist.main and hasattr(it, "set_postfix"):
            elapsed = time.perf_counter() - start
            it.set_postfix(loss=f"{loss_sum / seen:.3f}", img_s=f"{seen / max(elapsed, 1e-9):.0f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
    if dist.distributed:
        import torch.distributed as tdist

        tdist.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "images_per_s": seen / max(elapsed, 1e-9),
        "train_seconds": elapsed,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    device: torch.device,
    *,
    amp: bool = True,
    multilabel: bool = False,
) -> dict[str, float]:
    """Validation loss, top-1 and top-5 accuracy (multi-label: hit@1 and mAP)."""
    model.eval()
    loss_sum = top1 = top5 = seen = 0.0
    scores, targets = [], []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = model(x).float()
        loss_sum += float(criterion(logits, y)) * x.shape[0]
        top1 += _correct(logits, y, multilabel, 1)
        top5 += _correct(logits, y, multilabel, 5)
        seen += x.shape[0]
        if multilabel:
            scores.append(logits.cpu().numpy())
            targets.append(y.cpu().numpy())
    out = {"val_loss": loss_sum / max(seen, 1), "val_acc": top1 / max(seen, 1)}
    if multilabel:
        from cfvision.evaluate import mean_average_precision

        out["val_map"] = mean_average_precision(np.concatenate(targets), np.concatenate(scores))
    else:
        out["val_top5"] = top5 / max(seen, 1)
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
    np.random.set_state(numpy_state)  # noqa: NPY002 (DataLoader workers use the global state)
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))


def save_checkpoint(
    path: Path,
    model: FeatureClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    epoch: int,
    history: list[dict[str, Any]],
    cfg: TrainConfig,
    labels: Labels,
) -> None:
    """Write the checkpoint atomically (temporary file, then rename)."""
    from cfcore.io import atomic_path

    state = {
        "arch": model.arch,
        "num_classes": model.num_classes,
        "feature_dim": model.feature_dim,
        "dropout": cfg.dropout,
        "image_size": cfg.image_size,
        "class_names": labels.class_names,
        "multilabel": labels.multilabel,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,  # the next epoch to run
        "history": history,
        "config": {k: v for k, v in asdict(cfg).items()},
        "rng": _rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def restore(
    path: Path,
    model: FeatureClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    cfg: TrainConfig,
    labels: Labels,
) -> tuple[int, list[dict[str, Any]]]:
    """Load a checkpoint into the run; returns (next epoch, history)."""
    state = load_checkpoint(path)
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
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return int(state["epoch"]), list(state["history"])


def write_metrics(output: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` (one JSON object per epoch) and ``curves.png``, both atomically."""
    from cfcore.io import atomic_path, atomic_write_text

    atomic_write_text(output / METRICS, "".join(json.dumps(h) + "\n" for h in history))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        if all(key in h for h in history):
            ax1.plot(epochs, [h[key] for h in history], marker="o", label=key)
    for key in ("train_acc", "val_acc", "val_top5", "val_map"):
        if all(key in h for h in history):
            ax2.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend()
    ax2.set_xlabel("epoch"), ax2.set_ylabel("accuracy"), ax2.legend()
    fig.tight_layout()
    with atomic_path(output / CURVES) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- the run
@dataclass
class TrainResult:
    model: FeatureClassifier
    history: list[dict[str, Any]]
    checkpoint: Path
    data: TrainData
    dist: DistInfo = field(default_factory=DistInfo)


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
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    ckpt = output / CHECKPOINT
    if ckpt.exists() and not cfg.resume:
        raise InputError(
            f"{ckpt} exists: pass --resume to continue that run, or choose another --output"
        )
    if cfg.resume and not ckpt.exists():
        raise InputError(f"--resume: no checkpoint at {ckpt}")

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
    if cfg.balanced and data.labels.multilabel:
        raise InputError("--balanced needs single-label classes (a pseudo-labels file)")

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg.arch, data.labels.n_classes, cfg.weights, cfg.dropout).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = (
        torch.amp.GradScaler("cuda") if use_amp and not torch.cuda.is_bf16_supported() else None
    )
    start_epoch, history = 0, []
    if cfg.resume:
        start_epoch, history = restore(ckpt, model, optimizer, scheduler, scaler, cfg, data.labels)
        say(f"resumed from {ckpt} at epoch {start_epoch}")

    net: nn.Module = model
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    train_loader, val_loader = build_loaders(data, cfg, dist, device)
    criterion = _criterion(data.labels.multilabel)

    for epoch in range(start_epoch, cfg.epochs):
        s = epoch_seed(cfg.seed, epoch, dist.rank)
        seed_everything(s)  # crops, flips, dropout of this epoch (module docstring)
        train_loader.generator.manual_seed(s)  # worker seeds
        train_loader.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(
            net,
            train_loader,
            criterion,
            optimizer,
            device,
            epoch=epoch,
            amp=use_amp,
            scaler=scaler,
            multilabel=data.labels.multilabel,
            dist=dist,
            progress=cfg.progress,
            on_batch=on_batch,
        )
        scheduler.step()
        if dist.distributed:
            average_buffers(model, dist)
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, **stats}
        if dist.main:
            if val_loader is not None:
                record.update(
                    evaluate(
                        model,
                        val_loader,
                        criterion,
                        device,
                        amp=use_amp,
                        multilabel=data.labels.multilabel,
                    )
                )
            history.append(record)
            save_checkpoint(
                ckpt, model, optimizer, scheduler, scaler, epoch + 1, history, cfg, data.labels
            )
            write_metrics(output, history)
            say(
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items()
                )
            )
        if dist.distributed:
            import torch.distributed as tdist

            tdist.barrier()
    return TrainResult(model, history, ckpt, data, dist)
