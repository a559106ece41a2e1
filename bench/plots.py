"""PNG plots of a run (matplotlib, Agg backend; nothing is shown on screen).

- ``ndcg_vs_time.png`` — held-out NDCG@10 vs training seconds (log x) per method and dataset,
  with the 95% / 99% targets of the time-to-quality table;
- ``thread_scaling.png`` — rate vs threads per method and dataset, with parallel efficiency;
- ``size_scaling.png`` — updates/s vs interactions (log x), with the bare-loop ceilings;
- ``quality_vs_epochs.png`` — held-out AUC and training seconds per epoch checkpoint;
- ``ceiling_fraction.png`` — each method's updates/s as a fraction of the ceiling;
- ``vision_throughput.png`` — ``cfvision train`` images/s next to the model's ceiling.

A plot with nothing to show is not written.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from cfcore.io import atomic_path  # noqa: E402

# More methods than the default 10-colour cycle: tab20 keeps every line distinct.
plt.rcParams["axes.prop_cycle"] = plt.cycler(color=plt.get_cmap("tab20").colors)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _fits(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok" and r.get("kind") == "fit"]


def _rate(r: dict[str, Any]) -> float | None:
    return r.get("updates_per_s") or r.get("epochs_per_s")


def thread_scaling(records: list[dict[str, Any]], path: Path) -> bool:
    groups: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in _fits(records):
        if r.get("updates_per_s"):
            groups[r["dataset"]][r["method"]][r["threads"]] = r["updates_per_s"]
    groups = {d: {m: v for m, v in ms.items() if len(v) >= 2} for d, ms in groups.items()}
    groups = {d: ms for d, ms in groups.items() if ms}
    if not groups:
        return False
    fig, axes = plt.subplots(
        2, len(groups), figsize=(5.5 * len(groups), 7.5), squeeze=False, constrained_layout=True
    )
    for col, (dataset, methods) in enumerate(sorted(groups.items())):
        ax, eff = axes[0, col], axes[1, col]
        for m, by_t in sorted(methods.items()):
            ts = sorted(by_t)
            style = "-o" if m.startswith("collabfeat") else "--s"
            ax.plot(ts, [by_t[t] / 1e6 for t in ts], style, label=m)
            if 1 in by_t:
                eff.plot(ts, [by_t[t] / (t * by_t[1]) for t in ts], style, label=m)
        ax.set_title(f"{dataset}: updates/s by threads")
        ax.set_xlabel("threads")
        ax.set_ylabel("M updates/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_xticks(sorted({t for v in methods.values() for t in v}))
        eff.set_xticks(ax.get_xticks())
        eff.set_title("parallel efficiency rate(N) / (N · rate(1))")
        eff.set_xlabel("threads")
        eff.set_ylim(0, 1.3)
        eff.axhline(1.0, color="grey", lw=0.8)
        eff.grid(alpha=0.3)
    _save(fig, path)
    return True


def size_scaling(records: list[dict[str, Any]], path: Path) -> bool:
    from bench.report import ceiling_rows
    from bench.synthetic import parse_count

    fits = [
        r
        for r in _fits(records)
        if r["dataset"].startswith("synth-")
        and r["dataset"] != "synth-ml1m"
        and r.get("updates_per_s")
    ]
    if not fits:
        return False
    top = max(r["threads"] for r in fits)
    by_m: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in fits:
        if r["threads"] == top:
            by_m[r["method"]].append((parse_count(r["dataset"][6:]), r["updates_per_s"]))
    by_m = {m: sorted(v) for m, v in by_m.items() if len(v) >= 2}
    if not by_m:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, pts in sorted(by_m.items()):
        ax.plot(
            [p[0] for p in pts],
            [p[1] / 1e6 for p in pts],
            "-o" if m.startswith("collabfeat") else "--s",
            label=m,
        )
    c = ceiling_rows(records).get(top)
    if c:
        for key, label, ls in (
            ("cache_prefetch_updates_per_s", "bare loop, in cache", ":"),
            ("dram_prefetch_updates_per_s", "bare loop, DRAM + prefetch", "-."),
        ):
            ax.axhline(c[key] / 1e6, color="grey", ls=ls, lw=1, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("interactions (users = N/80, items = N/160)")
    ax.set_ylabel("M updates/s")
    ax.set_title(f"size scaling at {top} threads")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def quality_vs_epochs(records: list[dict[str, Any]], path: Path) -> bool:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _fits(records):
        if len(r.get("curve") or []) >= 2:
            groups[r["dataset"]].append(r)
    if not groups:
        return False
    fig, axes = plt.subplots(
        2, len(groups), figsize=(5.5 * len(groups), 7.5), squeeze=False, constrained_layout=True
    )
    for col, (dataset, rs) in enumerate(sorted(groups.items())):
        ax, tx = axes[0, col], axes[1, col]
        for r in sorted(rs, key=lambda r: r["method"]):
            curve = sorted(r["curve"], key=lambda p: p["epoch"])
            style = "-o" if r["method"].startswith("collabfeat") else "--s"
            ax.plot(
                [p["epoch"] for p in curve],
                [p.get("auc") for p in curve],
                style,
                label=r["method"],
                ms=3,
            )
            tx.plot(
                [p["seconds"] for p in curve],
                [p.get("auc") for p in curve],
                style,
                label=r["method"],
                ms=3,
            )
        ax.set_title(f"{dataset}: held-out AUC vs epochs")
        ax.set_xlabel("epoch")
        ax.set_ylabel("AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        tx.set_title("held-out AUC vs training seconds")
        tx.set_xscale("log")
        tx.set_xlabel("seconds")
        tx.set_ylabel("AUC")
        tx.grid(alpha=0.3, which="both")
    _save(fig, path)
    return True


def ndcg_vs_time(records: list[dict[str, Any]], path: Path) -> bool:
    from bench.report import QUALITY_TARGETS, _dataset_order, quality_groups

    groups = quality_groups(_fits(records))
    if not groups:
        return False
    keys = sorted(groups, key=lambda k: _dataset_order(k[0]))
    cols = min(2, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False, constrained_layout=True
    )
    for ax, (dataset, threads) in zip(axes.flat, keys, strict=False):
        rs = groups[(dataset, threads)]
        best = max(r.get("ndcg@10", 0) for r in rs)
        for r in sorted(rs, key=lambda r: r["method"]):
            if r["family"] == "baseline":  # no training time: a level, not a curve
                ax.axhline(r["ndcg@10"], color="black", lw=1, ls="--", label=r["method"])
                continue
            curve = sorted(r["curve"], key=lambda p: p["epoch"])
            style = "-o" if r["method"].startswith("collabfeat") else "--s"
            xs = [max(p["seconds"], 1e-3) for p in curve]
            ax.plot(xs, [p.get("ndcg@10") for p in curve], style, label=r["method"], ms=3)
        for q in QUALITY_TARGETS:
            ax.axhline(q * best, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow decade labels every minor tick
        ax.set_title(f"{dataset} ({threads} threads): NDCG@10 vs training seconds")
        ax.set_xlabel("wall seconds of training (log)")
        ax.set_ylabel("held-out NDCG@10")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    _save(fig, path)
    return True


def ceiling_fraction(records: list[dict[str, Any]], path: Path) -> bool:
    from bench.report import ceiling_rows, fraction_of_ceiling

    ceilings = ceiling_rows(records)
    bars = []
    for r in _fits(records):
        f = fraction_of_ceiling(r, ceilings)
        if f is not None:
            bars.append(
                (
                    f"{r['method']} · {r['dataset']} · {r['threads']}t",
                    f,
                    r["method"].startswith("collabfeat"),
                )
            )
    if not bars:
        return False
    bars.sort(key=lambda b: b[0])
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(bars) + 1.5))
    ax.barh(
        range(len(bars)),
        [b[1] for b in bars],
        color=["tab:blue" if b[2] else "tab:gray" for b in bars],
    )
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("updates/s ÷ bare gather–dot–update loop (same threads, cache or DRAM)")
    ax.set_title("fraction of the hardware ceiling")
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)
    return True


def vision_throughput(records: list[dict[str, Any]], path: Path) -> bool:
    recs = [
        r
        for r in records
        if r.get("status") == "ok"
        and r.get("kind") == "vision"
        and r.get("purpose", "table") == "table"
    ]
    if not recs:
        return False
    recs.sort(key=lambda r: (r["device"], r["arch"] != "small", r["image_size"]))
    labels = [f"{r['arch']} {r['image_size']}px\n{r['device']}" for r in recs]
    x = range(len(recs))
    fig, ax = plt.subplots(figsize=(1.6 * len(recs) + 2, 4))
    w = 0.38
    ax.bar(
        [i - w / 2 for i in x], [r["train_images_per_s"] for r in recs], w, label="cfvision train"
    )
    ax.bar(
        [i + w / 2 for i in x], [r["ceiling_images_per_s"] for r in recs], w, label="model ceiling"
    )
    for i, r in zip(x, recs, strict=True):
        ax.annotate(
            f"{100 * r['fraction']:.0f}%",
            (i - w / 2, r["train_images_per_s"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("images/s (log)")
    ax.set_title("training throughput: data path + model vs model alone")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y", which="both")
    _save(fig, path)
    return True


def write_plots(records: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """Write every plot that has data; return the file names written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (
        ("ndcg_vs_time.png", ndcg_vs_time),
        ("thread_scaling.png", thread_scaling),
        ("size_scaling.png", size_scaling),
        ("quality_vs_epochs.png", quality_vs_epochs),
        ("ceiling_fraction.png", ceiling_fraction),
        ("vision_throughput.png", vision_throughput),
    ):
        if fn(records, out_dir / name):
            written.append(name)
    return written
