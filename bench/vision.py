"""The ``vision`` suite's job: ``cfvision train`` images/s next to the model's ceiling.

One job = one backbone at one crop size on one device, with a thread count and a DataLoader
worker count:

1. **Images**: the MovieLens posters (1,661 with an ml-100k id) when the data directory has
   them, else a seeded synthetic set of 1,661 poster-sized (185 × 278) JPEGs generated once
   into the bench cache. Labels: 16 random classes (seeded), single-label — throughput does
   not depend on what the classes mean.
2. **Training**: :func:`cfvision.train.train` — the code path of ``cfvision train`` (image
   cache, sampler, augmentation, DataLoader, device transfer, AMP, optimizer, checks) — for a
   few epochs without validation; the rate is the median of the per-epoch images/s after the
   first epoch (the first pays for oneDNN/cuDNN set-up). The image cache is built before the
   timed run (``cache_seconds``; a later run reuses it).
3. **Ceiling**: the same model, optimizer, batch size, memory format and AMP setting doing
   forward + backward + step on random tensors already on the device — nothing the data path
   could add. Measured before and after the training (the better one is kept: on a shared
   machine the lower one is the noise).

``fraction = train ÷ ceiling`` is what the data path leaves of the model's speed.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

N_SYNTHETIC = 1661
N_CLASSES = 16


def _images(cache_dir: Path, source: str = "auto", n: int = N_SYNTHETIC):
    """(image source, id space, description): the posters, else ``n`` generated JPEGs
    (``source="synthetic"`` forces them)."""
    from cfcore.datasets import dataset_path
    from cfcore.errors import DatasetNotFoundError

    if source != "synthetic":
        try:
            return str(dataset_path("movielens-posters")), "ml-100k", "MovieLens posters"
        except DatasetNotFoundError:
            pass
    folder = cache_dir / f"vision-synthetic-{n}"
    done = folder / ".complete"
    if not done.exists():
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(1, n + 1):
            low = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)  # smooth, poster-like
            img = Image.fromarray(low).resize((185, 278), Image.Resampling.BICUBIC)
            img.save(folder / f"{i}.jpg", quality=90)
        done.write_text("ok\n")
    return str(folder), None, "synthetic 185×278 JPEGs"


def _labels(path: Path, images: str, id_space: str | None, n_items: int) -> Path:
    """``item_id,label`` for ``n_items`` items with an image (seeded random classes)."""
    from cfvision.data import load_image_index

    ids = np.sort(load_image_index(images, id_space).item_ids)[:n_items]
    classes = np.random.default_rng(0).integers(0, N_CLASSES, len(ids))
    lines = "".join(f"{i},{c}\n" for i, c in zip(ids.tolist(), classes.tolist(), strict=True))
    path.write_text("item_id,label\n" + lines)
    return path


def model_ceiling(cfg: Any, device: Any, steps: int) -> float:
    """Images/s of forward + backward + step on random tensors already on ``device``."""
    import torch

    from cfvision.loader import channels_last_for
    from cfvision.models import build_model
    from cfvision.train import (
        ClassificationObjective,
        build_optimizer,
        make_scaler,
        training_step,
    )

    torch.manual_seed(0)
    model = build_model(cfg.arch, N_CLASSES, None, cfg.dropout).to(device)
    fmt = torch.channels_last if channels_last_for(device) else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    optimizer = build_optimizer(model, cfg)
    objective = ClassificationObjective(False)
    amp = cfg.amp and device.type == "cuda"
    scaler = make_scaler(device, cfg.amp)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, N_CLASSES, (cfg.batch_size,), device=device)

    def step() -> None:  # the training loop's own step, without the data path
        training_step(model, objective, optimizer, x, y, device, amp, scaler)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(5):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def run_vision(job: dict[str, Any], cache_dir: Path) -> dict[str, Any]:
    import torch

    from cfvision.data import load_image_index, prepare_images, resize_size
    from cfvision.train import TrainConfig, resolve_device, train

    threads = int(job["threads"])
    torch.set_num_threads(threads)
    device = resolve_device(job["device"])
    images, id_space, what = _images(
        cache_dir, job.get("images", "auto"), int(job.get("n_images", N_SYNTHETIC))
    )
    work = cache_dir / "vision-runs" / job["id"]
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    labels = _labels(work / "labels.csv", images, id_space, int(job["items"]))
    image_cache = cache_dir / "images"
    cfg = TrainConfig(
        images=images,
        labels=str(labels),
        output=str(work / "run"),
        arch=job["arch"],
        image_size=int(job["image_size"]),
        epochs=int(job["epochs"]),
        batch_size=int(job["batch_size"]),
        val_fraction=0.0,
        workers=job.get("workers"),
        cache_dir=str(image_cache),
        id_space=id_space,
        device=job["device"],
        progress=False,
        seed=0,
    )
    t0 = time.perf_counter()
    ids = np.loadtxt(labels, delimiter=",", skiprows=1, usecols=0, dtype=np.int64, ndmin=1)
    prepare_images(
        load_image_index(images, id_space), ids, resize_size(cfg.image_size), image_cache
    )
    cache_seconds = time.perf_counter() - t0
    steps = max(5, min(40, int(job["items"]) // cfg.batch_size))
    ceilings = [model_ceiling(cfg, device, steps)]
    t0 = time.perf_counter()
    result = train(cfg, log=None)
    train_wall = time.perf_counter() - t0
    ceilings.append(model_ceiling(cfg, device, steps))
    rates = [h["images_per_s"] for h in result.history]
    steady = statistics.median(rates[1:]) if len(rates) > 1 else rates[0]
    ceiling = max(ceilings)
    from bench.system import peak_rss_mb

    return {
        "kind": "vision",
        "purpose": job.get("purpose", "table"),
        "arch": cfg.arch,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": threads,
        "workers": job.get("workers"),
        "workers_effective": _effective_workers(cfg, device),
        "images": what,
        "items": len(result.data.train_items),
        "epochs": cfg.epochs,
        "epoch_images_per_s": rates,
        "train_images_per_s": steady,
        "ceiling_images_per_s": ceiling,
        "ceilings": ceilings,
        "fraction": steady / ceiling,
        "cache_seconds": cache_seconds,
        "train_wall_seconds": train_wall,
        "amp": bool(cfg.amp and device.type == "cuda"),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def _effective_workers(cfg: Any, device: Any) -> int:
    from cfvision.loader import loader_settings

    return int(loader_settings(device, cfg.workers)["num_workers"])
