"""cfvision training: the loss goes down, resume is exact, DDP ranks agree, checkpoints check K."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from cfcore.errors import DivergenceError, InputError  # noqa: E402
from cfvision.train import ClassBalancedSampler, TrainConfig, lr_factor, train  # noqa: E402

COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]


def make_dataset(root, n=48, k=4, seed=0):
    """``n`` tiny noisy images whose class is their dominant colour, and labels.csv."""
    rng = np.random.default_rng(seed)
    img = root / "img"
    img.mkdir(parents=True)
    rows = []
    for i in range(n):
        c = i % k
        a = (np.array(COLORS[c])[None, None, :] + rng.normal(0, 40, (18, 22, 3))).clip(0, 255)
        Image.fromarray(a.astype(np.uint8)).save(img / f"{i}.png")
        rows.append(f"{i},{c}")
    (root / "labels.csv").write_text("item_id,label\n" + "\n".join(rows) + "\n")
    return img, root / "labels.csv"


def config(root, **kw):
    img, labels = (root / "img", root / "labels.csv")
    base = dict(
        images=str(img),
        labels=str(labels),
        output=str(root / "run"),
        arch="small",
        image_size=16,
        epochs=3,
        batch_size=8,
        val_fraction=0.25,
        device="cpu",
        progress=False,
        seed=0,
        cache_dir=str(root / "cache"),
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture()
def data(tmp_path):
    make_dataset(tmp_path)
    return tmp_path


def test_training_lowers_the_loss_and_writes_logs(data):
    torch.set_num_threads(1)
    result = train(config(data, epochs=4, lr=0.05), log=None)
    hist = result.history
    assert len(hist) == 4
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.2
    assert hist[-1]["val_acc"] >= 0.75  # 4 colour classes: chance is 0.25
    assert all(h["images_per_s"] > 0 for h in hist)
    run = data / "run"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3]
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "image_report.txt").read_text().splitlines()
    assert report[0].startswith("48 images usable")
    assert report[1].startswith("48 labelled items: 48 with an image (100.0%)")
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # atomic writes left nothing


def test_multilabel_training_reports_map(data):
    torch.set_num_threads(1)
    multi = data / "multi.csv"
    names = ["red", "green", "blue", "yellow"]
    multi.write_text(
        "item_id,labels\n" + "".join(f"{i},{names[i % 4]}|bright\n" for i in range(48))
    )
    result = train(config(data, labels=str(multi), epochs=2, lr=0.05), log=None)
    assert result.data.labels.multilabel and result.model.num_classes == 5
    assert 0.0 <= result.history[-1]["val_map"] <= 1.0
    with pytest.raises(InputError, match="single-label"):
        train(config(data, labels=str(multi), output=str(data / "b"), balanced=True), log=None)


class Killed(Exception):
    pass


def _strip_timing(history):
    return [
        {k: v for k, v in h.items() if k not in ("images_per_s", "train_seconds")} for h in history
    ]


@pytest.mark.slow
@pytest.mark.parametrize("balanced", [False, True])
def test_resume_after_a_mid_epoch_kill_matches_an_uninterrupted_run(tmp_path, balanced):
    torch.set_num_threads(1)
    make_dataset(tmp_path)
    full = train(config(tmp_path, output=str(tmp_path / "full"), balanced=balanced), log=None)

    def kill(epoch, step):  # the process dies in the middle of epoch 1
        if epoch == 1 and step == 2:
            raise Killed

    cfg = config(tmp_path, output=str(tmp_path / "killed"), balanced=balanced)
    with pytest.raises(Killed):
        train(cfg, on_batch=kill, log=None)
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1  # only epoch 0 was checkpointed
    resumed = train(replace(cfg, resume=True), log=None)
    assert _strip_timing(resumed.history) == _strip_timing(full.history)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_divergence_stops_with_an_error_naming_lr_and_keeps_the_last_good_checkpoint(data):
    torch.set_num_threads(1)
    with pytest.raises(
        DivergenceError, match=r"diverged; try a lower learning rate \(--lr, this run 1e\+06\)"
    ):
        train(config(data, lr=1e6, epochs=3), log=None)
    ckpt = data / "run" / "checkpoint.pt"
    assert not ckpt.exists()  # the first epoch diverged: nothing was saved
    train(config(data, output=str(data / "ok"), epochs=1), log=None)
    good = torch.load(data / "ok" / "checkpoint.pt", weights_only=True)
    with pytest.raises(DivergenceError, match="--lr"):
        train(config(data, output=str(data / "ok"), lr=1e6, epochs=3, resume=True), log=None)
    kept = torch.load(data / "ok" / "checkpoint.pt", weights_only=True)
    assert kept["epoch"] == 1 and len(kept["history"]) == 1  # still the last good epoch
    for name, tensor in kept["model"].items():
        assert torch.equal(tensor, good["model"][name]), name


def test_resume_with_more_epochs_continues_on_the_longer_schedule(data):
    torch.set_num_threads(1)
    short = train(config(data, epochs=2, lr=0.05), log=None)
    assert [round(h["lr"], 6) for h in short.history] == [0.05, 0.025]  # cosine over 2 epochs
    messages = []
    longer = train(config(data, epochs=4, lr=0.05, resume=True), log=messages.append)
    cfg = config(data, epochs=4, lr=0.05)
    assert [h["lr"] for h in longer.history[2:]] == [0.05 * lr_factor(e, cfg) for e in (2, 3)]
    assert longer.history[2]["lr"] == pytest.approx(0.025) and longer.history[3]["lr"] > 0
    assert longer.history[:2] == short.history  # the first two epochs are kept as they were
    assert any("extending the run from 2 to 4 epochs" in m for m in messages)
    with pytest.raises(InputError, match="already holds 4 epochs; pass --epochs 4 or more"):
        train(config(data, epochs=3, resume=True), log=None)


def test_resume_refuses_other_k_and_needs_a_checkpoint(data):
    torch.set_num_threads(1)
    with pytest.raises(InputError, match="no checkpoint"):
        train(config(data, resume=True), log=None)
    train(config(data, epochs=1), log=None)
    with pytest.raises(InputError, match="exists: pass --resume"):
        train(config(data, epochs=1), log=None)
    other = data / "labels5.csv"
    other.write_text("item_id,label\n" + "\n".join(f"{i},{i % 5}" for i in range(48)) + "\n")
    with pytest.raises(InputError, match="K = 4 classes but .* K = 5"):
        train(config(data, labels=str(other), resume=True, epochs=2), log=None)


def test_class_balanced_sampler_is_uniform_over_classes_and_seeded():
    targets = np.array([0] * 90 + [1] * 9 + [2] * 1)
    s = ClassBalancedSampler(targets, seed=3)
    draws = []
    for epoch in range(30):
        s.set_epoch(epoch)
        draws += list(s)
    freq = np.bincount(targets[draws], minlength=3) / len(draws)
    assert np.allclose(freq, 1 / 3, atol=0.03)
    s.set_epoch(5)
    first = list(s)
    s.set_epoch(5)
    assert list(s) == first
    shards = [ClassBalancedSampler(targets, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for sh in shards:
        sh.set_epoch(5)
    merged = [x for pair in zip(*shards, strict=True) for x in pair]
    assert merged == first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, root, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from cfvision.train import TrainConfig, train

    cfg = TrainConfig(
        images=str(root / "img"),
        labels=str(root / "labels.csv"),
        output=str(root / "ddp"),
        arch="small",
        image_size=16,
        epochs=2,
        batch_size=4,
        val_fraction=0.25,
        device="cpu",
        progress=False,
    )
    result = train(cfg, log=None)
    torch.save(result.model.state_dict(), out / f"rank{rank}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_end_with_identical_weights(data):
    import torch.multiprocessing as mp

    out = data / "weights"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), data, out), nprocs=2, join=True)
    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    ckpt = torch.load(data / "ddp" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    from cfvision.models import build_model

    torch.manual_seed(0)  # the seeded initial weights: training moved away from them
    start = build_model("small", 4).state_dict()
    assert not torch.equal(start["head.1.weight"], w0["head.1.weight"])


def test_another_head_loss_and_targets_plug_into_the_same_loop(data):
    """The extension point for other tasks (e.g. multitask CF-vector reconstruction):
    a two-output model, dict targets and an own Objective through cfvision.train.fit."""
    from cfvision.data import load_image_index, prepare_images
    from cfvision.loader import AugmentSampler, CachedImages, make_loader
    from cfvision.models import build_model
    from cfvision.train import Run, build_optimizer, fit

    torch.set_num_threads(1)
    images = prepare_images(load_image_index(data / "img"), None, 18, data / "cache")
    classes = (images.item_ids % 4).astype(np.int64)
    vectors = np.eye(4, dtype=np.float32)[classes] * 3  # a per-item vector to reconstruct
    targets = {"label": classes, "vector": vectors}
    ds = CachedImages(images, None, targets, crop=16)
    sampler = AugmentSampler(torch.utils.data.RandomSampler(ds), 18, 16, seed=0)
    loader = make_loader(ds, 8, torch.device("cpu"), sampler=sampler)

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = build_model("small", 4, dropout=0.0)
            self.cf = torch.nn.Linear(self.net.feature_dim, 4)

        def forward(self, x):
            f = self.net.features(x)
            return {"logits": self.net.head(f), "vector": self.cf(f)}

    class Multitask:
        collects_outputs = False

        def loss(self, out, y):
            ce = torch.nn.functional.cross_entropy(out["logits"].float(), y["label"])
            return ce + torch.nn.functional.mse_loss(out["vector"].float(), y["vector"])

        def batch_stats(self, out, y):
            return {"acc": (out["logits"].argmax(1) == y["label"]).sum()}

        def epoch_stats(self, outputs, targets):
            return {}

    torch.manual_seed(0)
    model = TwoHeads()
    cfg = config(data, epochs=4, lr=0.05, output=str(data / "mt"))
    (data / "mt").mkdir()
    run = Run(
        model,
        Multitask(),
        build_optimizer(model, cfg),
        cfg,
        torch.device("cpu"),
        meta={"task": "two-heads"},
    )
    history = fit(
        run, loader, make_loader(CachedImages(images, None, targets, 16), 8, torch.device("cpu"))
    )
    assert len(history) == 4 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"train_acc", "val_loss", "val_acc", "lr"} <= set(history[-1])
    saved = torch.load(data / "mt" / "checkpoint.pt", weights_only=True)
    assert saved["task"] == "two-heads" and saved["epoch"] == 4
