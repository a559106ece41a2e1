"""Turn a run's records into a Markdown report and PNG plots (matplotlib, Agg backend).

Every ratio in the report is computed from records of the same run: absolute rates drift
between runs on a shared machine, ratios measured minutes apart much less.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from cfcore.io import atomic_write_text

FAMILY_LEAD = {
    "squared": "collabfeat-squared-fang",  # the same problem as libmf-squared
    "bpr": "collabfeat-bpr",
    "warp": "collabfeat-warp-10",  # the same problem as lightfm-warp
    "logistic": "collabfeat-logistic",
}

#: The issue's targets: (collabfeat method, peer, dataset, minimum ratio, equal-AUC required).
TARGETS = (
    ("collabfeat-squared-fang", "libmf-squared", "synth-ml1m", 2.0, False),
    ("collabfeat-squared-fang", "libmf-squared", "synth-16m", 1.0, False),
    ("collabfeat-warp-10", "lightfm-warp", "synth-ml1m", 5.0, True),
    ("collabfeat-warp-10", "lightfm-warp", "synth-16m", 5.0, True),
    ("collabfeat-warp-10", "lightfm-warp", "ml-100k", None, False),
    ("collabfeat-warp-10", "lightfm-warp", "ml-latest-small", None, False),
    ("collabfeat-squared-fang", "collabfeat-squared-random", "synth-ml1m", None, False),
    ("collabfeat-squared-fang", "collabfeat-squared-random", "synth-16m", None, False),
    ("collabfeat-bpr", "implicit-bpr", "synth-ml1m", None, False),
    ("collabfeat-bpr", "implicit-bpr", "synth-16m", None, False),
)
EQUAL_AUC_TOLERANCE = 0.01
PLOTS = (
    "thread_scaling.png",
    "size_scaling.png",
    "quality_vs_epochs.png",
    "ceiling_fraction.png",
    "vision_throughput.png",
)

#: The vision goals: (device, arch, crop) → minimum fraction of the model's ceiling.
VISION_GOALS = {("cpu", "small", 64): 0.9, ("cuda", "resnet18", 224): 0.8}


# ---------------------------------------------------------------------- helpers
def _ok(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok" and r.get("kind") == kind]


def _fmt(x: float | None, digits: int = 2, scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x / scale:.{digits}f}"


def _rate(r: dict[str, Any]) -> float | None:
    """Updates/s for SGD methods, epochs/s for ALS."""
    return r.get("updates_per_s") or r.get("epochs_per_s")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _index(fits: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(r["method"], r["dataset"], r["threads"]): r for r in fits}


def ceiling_rows(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Ceiling measurements by thread count: the best of the run's ceiling records (a suite
    measures at its start and its end; on a shared machine the better one is the ceiling)."""
    out: dict[int, dict[str, Any]] = {}
    for rec in _ok(records, "ceiling"):
        for row in rec["rows"]:
            t = int(row["threads"])
            if t not in out:
                out[t] = dict(row)
                continue
            for key, value in row.items():
                if key.endswith(("_per_s", "_gbs")) and value > out[t].get(key, 0):
                    out[t][key] = value
    return out


def table_bytes(r: dict[str, Any]) -> int:
    return (r["n_users"] + r["n_items"]) * r["factors"] * 4


def ceiling_for(r: dict[str, Any], ceilings: dict[int, dict[str, Any]]) -> tuple[float, str] | None:
    """The bare-loop rate a fit is compared with: same threads; in-cache or DRAM tables."""
    row = ceilings.get(int(r["threads"]))
    if row is None:
        return None
    l3 = (r.get("machine") or {}).get("l3_bytes") or 32 << 20
    where = "cache" if table_bytes(r) <= l3 else "dram"
    best = max(row[f"{where}_updates_per_s"], row[f"{where}_prefetch_updates_per_s"])
    return best, where


def fraction_of_ceiling(r: dict[str, Any], ceilings: dict[int, dict[str, Any]]) -> float | None:
    c = ceiling_for(r, ceilings)
    if c is None or not r.get("updates_per_s"):
        return None
    return r["updates_per_s"] / c[0]


def time_to(r: dict[str, Any], metric: str, value: float) -> float | None:
    """Training seconds until the curve first reaches ``metric >= value`` (None: never)."""
    for p in sorted(r.get("curve") or [], key=lambda p: p["epoch"]):
        if p.get(metric, -math.inf) >= value:
            return p["seconds"]
    return None


# ---------------------------------------------------------------------- sections
#: Time-to-quality targets: these fractions of the best final NDCG@10 on the dataset.
QUALITY_TARGETS = (0.95, 0.99)


def quality_groups(fits: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Fits with an NDCG@10 curve, by (dataset, threads): the time-to-quality comparisons."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in fits:
        if any("ndcg@10" in p for p in r.get("curve") or []):
            groups[(r["dataset"], r["threads"])].append(r)
    return dict(groups)


def time_to_quality_section(fits: list[dict[str, Any]]) -> str:
    """The headline: per dataset, every method's wall time to reach 95% and 99% of the best
    final NDCG@10 of the run, next to its final NDCG@10, P@10 and AUC."""
    groups = quality_groups(fits)
    if not groups:
        return "_No quality curves in this run._"
    parts = []
    for (dataset, threads), rs in sorted(groups.items(), key=lambda kv: _dataset_order(kv[0][0])):
        best = max(rs, key=lambda r: r.get("ndcg@10", -1))
        targets = [q * best["ndcg@10"] for q in QUALITY_TARGETS]
        r0 = rs[0]
        rows = []
        for r in sorted(rs, key=lambda r: -r.get("ndcg@10", 0)):
            times = [time_to(r, "ndcg@10", t) for t in targets]
            peak = max(r["curve"], key=lambda p: p.get("ndcg@10", -1))
            rows.append(
                [
                    f"**{r['method']}**" if r is best else r["method"],
                    *[f"{t:.2f}" if t is not None else "–" for t in times],
                    _fmt(r["fit_seconds"], 2),
                    str(r["epochs"]),
                    _fmt(r.get("ndcg@10"), 4),
                    _fmt(r.get("precision@10"), 4),
                    _fmt(r.get("auc"), 4),
                    f"{peak['ndcg@10']:.4f} ({peak['epoch']})",
                ]
            )
        parts.append(
            f"### {dataset}: {r0['n_users']:,} users × {r0['n_items']:,} items, "
            f"{r0['train_nnz']:,} training interactions, {threads} thread"
            f"{'s' if threads > 1 else ''}\n\n"
            f"Targets: NDCG@10 ≥ {targets[0]:.4f} (95%) and ≥ {targets[1]:.4f} (99%) of the "
            f"best final NDCG@10, {best['ndcg@10']:.4f} ({best['method']}); metrics on "
            f"{r0['eval_users']:,} users.\n\n"
            + _table(
                [
                    "method",
                    "s to 95%",
                    "s to 99%",
                    "fit s",
                    "epochs",
                    "NDCG@10",
                    "P@10",
                    "AUC",
                    "best NDCG@10 (epoch)",
                ],
                rows,
            )
        )
    return "\n\n".join(parts)


def _dataset_order(dataset: str) -> tuple[int, str]:
    """Real data first, then synthetic data by size."""
    from bench.synthetic import is_synthetic, spec_for

    if not is_synthetic(dataset):
        return (0, dataset)
    return (spec_for(dataset).nnz, dataset)


def targets_section(fits: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    idx = _index(fits)
    rows, found = [], []
    threads = sorted({r["threads"] for r in fits})
    for ours, peer, dataset, goal, equal_auc in TARGETS:
        for t in threads:
            a, b = idx.get((ours, dataset, t)), idx.get((peer, dataset, t))
            if a is None or b is None or not a.get("updates_per_s") or not b.get("updates_per_s"):
                continue
            ratio = a["updates_per_s"] / b["updates_per_s"]
            d_auc = a.get("auc", float("nan")) - b.get("auc", float("nan"))
            sa, sb = a.get("steady_updates_per_s"), b.get("steady_updates_per_s")
            steady = f"{sa / sb:.2f}×" if sa and sb else "–"
            tta = ""
            if equal_auc and a.get("curve") and b.get("curve"):
                target_auc = min(
                    max(p.get("auc", 0) for p in a["curve"]),
                    max(p.get("auc", 0) for p in b["curve"]),
                )
                ta, tb = time_to(a, "auc", target_auc), time_to(b, "auc", target_auc)
                if ta and tb:
                    tta = f"{tb / ta:.1f}× (AUC {target_auc:.3f})"
            met = None
            if goal is not None and not equal_auc:
                met = ratio >= goal
            elif goal is not None:
                # at equal AUC: the throughput ratio at the same epochs, the final held-out AUC
                # no worse than the peer's (within the tolerance); time-to-AUC is shown beside
                met = ratio >= goal and d_auc >= -EQUAL_AUC_TOLERANCE
            found.append(
                {
                    "ours": ours,
                    "peer": peer,
                    "dataset": dataset,
                    "threads": t,
                    "ratio": ratio,
                    "goal": goal,
                    "met": met,
                    "auc_diff": d_auc,
                }
            )
            rows.append(
                [
                    f"{ours} ÷ {peer}",
                    dataset,
                    str(t),
                    _fmt(a["updates_per_s"], 2, 1e6),
                    _fmt(b["updates_per_s"], 2, 1e6),
                    f"**{ratio:.2f}×**",
                    steady,
                    "–"
                    if goal is None
                    else f"≥ {goal:g}×" + (" at equal AUC" if equal_auc else ""),
                    f"{a.get('auc', float('nan')):.4f} / {b.get('auc', float('nan')):.4f}",
                    tta or "–",
                    "–" if met is None else ("met" if met else "**not met**"),
                ]
            )
    if not rows:
        return "_No target pairs in this run._", found
    return _table(
        [
            "ratio",
            "dataset",
            "threads",
            "ours M upd/s",
            "peer M upd/s",
            "same-run ratio",
            "steady-state ratio",
            "goal",
            "held-out AUC ours / peer",
            "time to equal AUC",
            "status",
        ],
        rows,
    ), found


def ceiling_section(ceilings: dict[int, dict[str, Any]], prefetch: str) -> str:
    if not ceilings:
        return "_No ceiling measured in this run._"
    rows = []
    for t, c in sorted(ceilings.items()):
        rows.append(
            [
                str(t),
                _fmt(c["bandwidth_gbs"], 1),
                _fmt(c["cache_updates_per_s"], 1, 1e6),
                _fmt(c["cache_prefetch_updates_per_s"], 1, 1e6),
                _fmt(c["dram_updates_per_s"], 1, 1e6),
                _fmt(c["dram_prefetch_updates_per_s"], 1, 1e6),
                _fmt(c.get("dram_grouped_prefetch_updates_per_s"), 1, 1e6),
            ]
        )
    any_c = next(iter(ceilings.values()))
    cs = any_c.get("cache_shape", (6040, 3706))  # bench.ceiling's shapes (importing it compiles)
    ds = any_c.get("dram_shape", (200_000, 100_000))
    return (
        f"Triad bandwidth and the bare 64-factor float32 gather–dot–update loop (M updates/s) "
        f"on random rows: in cache = {cs[0]:,} × {cs[1]:,} rows, DRAM = {ds[0]:,} × {ds[1]:,} "
        f"rows; prefetch = {prefetch}. The last column visits the DRAM-sized tables user by user "
        "(the factorizer's order): not part of the ceiling, it shows what the order alone buys."
        "\n\n"
        + _table(
            [
                "threads",
                "triad GB/s",
                "cache",
                "cache + prefetch",
                "DRAM",
                "DRAM + prefetch",
                "DRAM + prefetch, user-grouped (not a ceiling)",
            ],
            rows,
        )
    )


def dataset_section(
    fits: list[dict[str, Any]], dataset: str, ceilings: dict[int, dict[str, Any]]
) -> str:
    rs = [r for r in fits if r["dataset"] == dataset]
    if not rs:
        return ""
    idx = _index(fits)
    r0 = rs[0]
    mib = table_bytes(r0) / 2**20
    c0 = ceiling_for(r0, ceilings)
    where = c0[1] if c0 else ("cache" if mib < 32 else "dram")
    head = (
        f"### {dataset}: {r0['n_users']:,} users × {r0['n_items']:,} items, "
        f"{r0['train_nnz']:,} training / {r0['test_nnz']:,} held-out interactions\n\n"
        f"Factor tables {mib:.1f} MiB ({'fit in cache' if where == 'cache' else 'in DRAM'}); "
        f"metrics on {r0['eval_users']:,} users with held-out items.\n\n"
    )
    rows = []
    for r in sorted(
        rs, key=lambda r: (r["threads"], r["family"], r["library"] != "collabfeat", r["method"])
    ):
        lead = FAMILY_LEAD.get(r["family"])
        ratio = "–"
        if lead and lead != r["method"]:
            a = idx.get((lead, dataset, r["threads"]))
            if a and a.get("updates_per_s") and r.get("updates_per_s"):
                ratio = f"{a['updates_per_s'] / r['updates_per_s']:.2f}×"
        rate = (
            _fmt(r.get("updates_per_s"), 2, 1e6)
            if r.get("updates_per_s")
            else f"{_fmt(r.get('epochs_per_s'), 2)} ep/s"
        )
        frac = fraction_of_ceiling(r, ceilings)
        steady = r.get("steady_updates_per_s")
        if steady is None and r.get("steady_seconds_per_epoch"):
            steady_txt = f"{1 / r['steady_seconds_per_epoch']:.2f} ep/s"
        else:
            steady_txt = _fmt(steady, 2, 1e6)
        rows.append(
            [
                r["method"],
                str(r["threads"]),
                str(r["epochs"]),
                _fmt(r["seconds_per_epoch"], 3),
                rate,
                steady_txt,
                ratio,
                "–" if frac is None else f"{frac:.0%}",
                _fmt(r.get("auc"), 4),
                _fmt(r.get("pr"), 4),
                _fmt(r.get("precision@10"), 4),
                _fmt(r.get("peak_rss_mb"), 0),
                _fmt(r.get("fit_peak_delta_mb"), 0),
            ]
        )
    return head + _table(
        [
            "method",
            "threads",
            "epochs",
            "s/epoch",
            "M updates/s",
            "steady M upd/s",
            "collabfeat ÷ this",
            "of ceiling",
            "AUC",
            "PR",
            "P@10",
            "peak RSS MiB",
            "fit Δ MiB",
        ],
        rows,
    )


def scaling_section(fits: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in fits:
        groups[(r["method"], r["dataset"])][r["threads"]] = r
    threads = sorted({r["threads"] for r in fits})
    rows = []
    for (m, d), by_t in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if len(by_t) < 2 or 1 not in by_t:
            continue
        base = _rate(by_t[1])
        cells = [
            _fmt(_rate(by_t[t]), 2, 1e6 if by_t[t].get("updates_per_s") else 1)
            if t in by_t
            else "–"
            for t in threads
        ]
        tmax = max(by_t)
        eff = _rate(by_t[tmax]) / (tmax * base) if base else None
        rows.append([m, d, *cells, "–" if eff is None else f"{eff:.0%}"])
    if not rows:
        return "_Only one thread count in this run._"
    return (
        "Rate (M updates/s; ALS: epochs/s) by thread count and parallel efficiency "
        "rate(N)/(N·rate(1)) at the largest N.\n\n"
        + _table(["method", "dataset", *[f"{t} thr" for t in threads], "efficiency"], rows)
    )


def _size_of(dataset: str) -> int | None:
    """Interactions of a size-scaling dataset (``synth-4m``, ``synth-4m@200kx100k``), else
    None."""
    from bench.synthetic import spec_for

    if not dataset.startswith("synth-") or dataset == "synth-ml1m":
        return None
    return spec_for(dataset).nnz


def size_section(fits: list[dict[str, Any]]) -> str:
    top = max((r["threads"] for r in fits), default=None)
    sized = [r for r in fits if _size_of(r["dataset"]) and r["threads"] == top]
    sizes = sorted({r["dataset"] for r in sized}, key=_size_of)
    methods = sorted({r["method"] for r in sized})
    rows = []
    for m in methods:
        by = {r["dataset"]: r for r in sized if r["method"] == m}
        if len(by) < 2:
            continue
        rows.append([m, *[_fmt(_rate(by[d]), 2, 1e6) if d in by else "–" for d in sizes]])
    if not rows:
        return "_Fewer than two sizes in this run._"
    return (
        f"M updates/s at {top} threads as the synthetic data grows (users = N/80, "
        f"items = N/160).\n\n" + _table(["method", *sizes], rows)
    )


def quality_section(fits: list[dict[str, Any]]) -> str:
    rows = []
    for r in sorted(fits, key=lambda r: (r["dataset"], r["method"])):
        curve = r.get("curve") or []
        if len(curve) < 2:
            continue
        pts = ", ".join(f"{p['epoch']}: {p.get('auc', float('nan')):.3f}" for p in curve)
        rows.append(
            [
                r["dataset"],
                r["method"],
                str(r["threads"]),
                pts,
                _fmt(r.get("auc"), 4),
                _fmt(r.get("precision@10"), 4),
            ]
        )
    if not rows:
        return "_No quality curves in this run._"
    return (
        "Held-out AUC after each checkpoint epoch (`epoch: AUC`), same split for every "
        "method; methods without a per-epoch hook are refit for each checkpoint.\n\n"
        + _table(["dataset", "method", "threads", "AUC by epoch", "final AUC", "final P@10"], rows)
    )


def components_section(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in _ok(records, "sampler"):
        rows.append(
            [
                f"negative sampler ({r['weighting']}, ratio {r['ratio']:g})",
                r["dataset"],
                str(r["threads"]),
                f"{r['samples_per_s'] / 1e6:.2f} M samples/s",
                f"{r['seconds']:.3f} s for {r['drawn']:,}",
            ]
        )
    for r in _ok(records, "kmeans"):
        rows.append(
            [
                f"k-means ({r['via']}, spherical, {r['niter']} iter)",
                f"{r['n']:,} × {r['d']} → K = {r['k']:,}",
                str(r["threads"]),
                f"{r['seconds']:.2f} s",
                "",
            ]
        )
    if not rows:
        return "_No component lines in this run._"
    return _table(["engine", "data", "threads", "throughput", "time"], rows)


def reader_section(records: list[dict[str, Any]]) -> str:
    """The reader against the pyarrow baseline, and peak memory per interaction."""
    rows = [
        [
            r["dataset"],
            r["format"],
            f"{r['rows']:,}",
            f"{r['seconds']:.2f} s",
            f"{r['baseline_seconds']:.2f} s",
            f"{r['ratio_to_baseline']:.2f}×",
            f"{r['peak_delta_mb']:.0f} MiB",
            f"{r['bytes_per_interaction']:.0f}",
        ]
        for r in _ok(records, "reader")
    ]
    rows += [
        [
            r["dataset"],
            f"`cfcore factorize` ({r['format']}, {r['factors']} factors, {r['epochs']} epoch)",
            f"{r['nnz']:,}",
            f"{r['seconds']:.1f} s",
            "",
            "",
            f"{r['peak_delta_mb']:.0f} MiB",
            f"{r['bytes_per_interaction']:.0f}",
        ]
        for r in _ok(records, "factorize-file")
    ]
    if not rows:
        return "_No reader lines in this run._"
    return (
        "`cfcore.read_interactions` (best of 3) against the baseline `pyarrow.csv.read_csv` + "
        "`np.unique` of the two integer id columns of the same interactions as a CSV, in the "
        "same job. Peak: the job's resident high-water mark (VmHWM) above the same process "
        "warmed up on a 200-row head of the file (imports, compiled kernels, thread pools), "
        "and that per interaction.\n\n"
        + _table(
            [
                "dataset",
                "format / command",
                "rows",
                "time",
                "baseline",
                "ratio",
                "peak",
                "B/interaction",
            ],
            rows,
        )
    )


def spark_section(fits: list[dict[str, Any]]) -> str:
    """The ``spark`` suite's table: DSGD on Spark vs MLlib ALS, single machine as reference."""
    rows = []
    order = {"collabfeat-squared": 0, "spark-dsgd-squared": 1, "spark-dsgd-bpr": 2, "spark-als": 3}
    spark = [r for r in fits if r["method"] in order]
    if not any(r["method"].startswith("spark-") for r in spark):
        return ""
    for r in sorted(
        spark,
        key=lambda r: (_dataset_order(r["dataset"]), r["threads"], order[r["method"]]),
    ):
        params = r.get("params", {})
        rows.append(
            [
                r["dataset"],
                r["method"],
                params.get("master", f"{r['threads']} threads"),
                _fmt(r["seconds_per_epoch"], 3),
                _fmt(r.get("steady_seconds_per_epoch"), 3),
                _fmt(params.get("stratum_seconds_median"), 3),
                _fmt(params.get("kernel_seconds_median"), 4),
                _fmt(r.get("prep_seconds"), 1),
                _fmt(r.get("auc"), 4),
                _fmt(r.get("ndcg@10"), 4),
                _fmt(r.get("precision@10"), 4),
            ]
        )
    return _table(
        [
            "dataset",
            "method",
            "where",
            "s/epoch",
            "steady s/epoch",
            "s/stratum (median)",
            "kernel s/stratum (slowest task, median)",
            "set-up s",
            "AUC",
            "NDCG@10",
            "P@10",
        ],
        rows,
    )


def problems_section(records: list[dict[str, Any]]) -> str:
    lines = [
        f"- `{r['id']}`: {r['status']} — {r.get('reason', '')}"
        for r in records
        if r.get("status") != "ok"
    ]
    return "\n".join(lines) if lines else "_None._"


def how_counted(fits: list[dict[str, Any]]) -> str:
    seen = {}
    for r in fits:
        seen.setdefault(r["method"], r["counting"])
    return "\n".join(f"- `{m}`: {c}" for m, c in sorted(seen.items()))


# ---------------------------------------------------------------------- vision
def _vision_goal(r: dict[str, Any]) -> str:
    goal = VISION_GOALS.get((r["device"], r["arch"], r["image_size"]))
    if goal is None:
        return "–"
    return f"≥ {100 * goal:.0f}% {'✔' if r['fraction'] >= goal else '✘'}"


def vision_section(records: list[dict[str, Any]]) -> str:
    """``cfvision train`` images/s vs the model's ceiling, per backbone and device."""
    recs = [r for r in _ok(records, "vision") if r.get("purpose", "table") == "table"]
    if not recs:
        return "_No vision jobs in this run._"
    rows = []
    for r in sorted(recs, key=lambda r: (r["device"], r["arch"] != "small", r["image_size"])):
        rows.append(
            [
                r["arch"],
                f"{r['image_size']} px",
                r["device"] if r["device"] == "cpu" else r.get("device_name", r["device"]),
                str(r["threads"]),
                str(r.get("workers_effective", r.get("workers"))),
                str(r["batch_size"]),
                f"{r['train_images_per_s']:.1f}",
                f"{r['ceiling_images_per_s']:.1f}",
                f"**{100 * r['fraction']:.0f}%**",
                _vision_goal(r),
            ]
        )
    return _table(
        [
            "backbone",
            "crop",
            "device",
            "threads",
            "workers",
            "batch",
            "cfvision train img/s",
            "model ceiling img/s",
            "fraction",
            "goal",
        ],
        rows,
    )


def vision_workers_section(records: list[dict[str, Any]]) -> str:
    """The small CNN's images/s (and fraction of the ceiling) for workers × threads."""
    recs = [r for r in _ok(records, "vision") if r["device"] == "cpu" and r["arch"] == "small"]
    if len(recs) < 2:
        return "_No workers × threads grid in this run._"
    grid = {(r["threads"], r.get("workers_effective", r.get("workers"))): r for r in recs}
    threads = sorted({t for t, _ in grid})
    workers = sorted({w for _, w in grid})
    rows = []
    for t in threads:
        row = [f"{t} thread{'s' if t > 1 else ''}"]
        for w in workers:
            r = grid.get((t, w))
            row.append(f"{r['train_images_per_s']:.0f} ({100 * r['fraction']:.0f}%)" if r else "–")
        rows.append(row)
    return _table(["torch threads", *[f"{w} worker{'' if w == 1 else 's'}" for w in workers]], rows)


def render_vision(records: list[dict[str, Any]], command: str, header: list[str]) -> str:
    """The Markdown report of a ``vision`` run (also the section published in RESULTS.md)."""
    recs = _ok(records, "vision")
    what = recs[0]["images"] if recs else "?"
    return "\n".join(
        [
            *header,
            "",
            "## Vision: `cfvision train` vs the model's ceiling",
            "",
            f"Reproduce: `{command}`. Images: {what}; 16 random classes, no validation split. "
            "`cfvision train` img/s is the median of the per-epoch rates after the first epoch "
            "(the whole data path: uint8 cache, sampler, crops and flips, DataLoader, transfer, "
            "normalisation, AMP on CUDA, the loss checks). The ceiling is the same model, "
            "optimizer, batch size, memory format and AMP on random tensors already on the "
            "device (forward + backward + step), the better of a measurement before and after "
            "the training. `fraction` = train ÷ ceiling.",
            "",
            vision_section(records),
            "",
            "DataLoader worker processes × torch threads, small CNN at 64 px on the CPU "
            "(img/s and fraction of the ceiling measured in the same job):",
            "",
            vision_workers_section(records),
            "",
            "## Skipped or failed jobs",
            "",
            problems_section(records),
            "",
        ]
    )


# ---------------------------------------------------------------------- report
def _load_text(records: list[dict[str, Any]]) -> str:
    load = next((r["run_load_average"] for r in records if r.get("run_load_average")), None)
    if not load or not load.get("start") or not load.get("end"):
        return ""
    return (
        f"Load average (1 min) at start / end of the run: {load['start'][0]:.1f} / "
        f"{load['end'][0]:.1f} — other work shared the cores when this exceeds the thread "
        "count."
    )


def render(
    records: list[dict[str, Any]],
    suite: str = "",
    command: str = "",
    elapsed: float | None = None,
    plots: list[str] | None = None,
) -> str:
    """The Markdown report of a run."""
    fits = _ok(records, "fit")
    ceilings = ceiling_rows(records)
    ceil_recs = _ok(records, "ceiling")
    prefetch = ceil_recs[-1].get("prefetch", "?") if ceil_recs else "?"
    any_rec = next((r for r in records if r.get("machine")), {})
    mach = any_rec.get("machine", {})
    vers = any_rec.get("versions", {})
    vtext = ", ".join(f"{k} {v}" for k, v in vers.items() if v)
    stamps = sorted(r["time"][:16].replace("T", " ") for r in records if r.get("time"))
    when = (
        f"Jobs ran {stamps[0]} – {stamps[-1][11:]}"
        if stamps
        else f"Run {time.strftime('%Y-%m-%d %H:%M')}"
    )
    kept = sum(1 for r in records if r.get("resumed"))
    if kept:  # this invocation's time leaves out the jobs kept from before
        elapsed = sum(r.get("wall_seconds") or 0 for r in records)

    def short_header(title: str) -> list[str]:
        return [
            title,
            "",
            f"{when} on {mach.get('cpu_model', '?')}, {mach.get('cores', '?')} cores"
            + (f"; {elapsed / 60:.1f} min" if elapsed else "")
            + ".",
            f"Versions: {vtext}.",
            _load_text(records),
        ]

    if suite == "vision":
        md = render_vision(records, command, short_header("# collabfeat benchmark: `vision` suite"))
        if plots:
            md += "\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
        return md
    if suite == "tags" or (_ok(records, "tags") and not fits):
        from bench.tags import section

        return "\n".join(
            [
                *short_header("# collabfeat benchmark: tag prediction (Denton et al. 2015)"),
                "",
                f"Reproduce: `{command}`. P@1, R@10, A@10 on the held-out examples "
                "(`cfcore.tags.tag_measures`); examples/s = training tag applications per "
                "second of training (evaluation excluded); `epochs (best)`: epochs run and the "
                "one kept by the validation score. Datasets, methods and the LightFM mapping: "
                "`bench/tags.py`.",
                "",
                section(records),
                "## Skipped or failed jobs",
                "",
                problems_section(records),
                "",
            ]
        )
    spark = spark_section(fits)
    parts = [
        f"# collabfeat benchmark: `{suite}` suite",
        "",
        f"{when} on {mach.get('cpu_model', '?')}, "
        f"{mach.get('cores', '?')} cores"
        + (f", L3 {mach['l3_bytes'] / 2**20:.0f} MiB" if mach.get("l3_bytes") else "")
        + (
            f", {mach['mem_total_bytes'] / 2**30:.0f} GiB RAM"
            if mach.get("mem_total_bytes")
            else ""
        )
        + (f"; {elapsed / 60:.1f} min" if elapsed else "")
        + (
            f" ({kept} of {len(records)} jobs kept from an interrupted run by --resume)."
            if kept
            else "."
        ),
        f"Versions: {vtext}.",
        _load_text(records),
        "",
        f"Reproduce: `{command}` (or `make bench` / `make bench-full`). 64 factors, float32, "
        "one process per method, same 80/20 per-user split for every method. Absolute rates "
        "vary on a shared machine; compare the same-run ratios.",
        "",
        "## Time to quality",
        "",
        "Held-out NDCG@10 is computed after every epoch on a copy of the factor tables taken "
        "during the timed fit and scored after it (the copy's time excluded), so each point is "
        "timed by the very fit it scores; peers without a per-epoch hook are refit for each "
        "checkpoint. `s to 95%` / `s to 99%`: training wall seconds (the library's fit call, its "
        "set-up included) until NDCG@10 first reaches that fraction of the best final NDCG@10 "
        "of the dataset, at epoch resolution; – = never. Final metrics after the last epoch; "
        "`best` shows where a method peaked when it declined afterwards. Full ranking of every "
        "item the user has not trained on.",
        "",
        time_to_quality_section(fits),
        "",
        "## Targets (same-run ratios of updates/s)",
        "",
        targets_section(fits)[0],
        "",
        'A goal "at equal AUC" is met when the throughput ratio at the same epochs reaches '
        f"it and our final held-out AUC is no worse than the peer's (within "
        f"{EQUAL_AUC_TOLERANCE}). `time to equal AUC` is the stricter view: the peer's "
        "training seconds to reach the best AUC both methods reach, divided by ours (read off "
        "the quality curves, so at checkpoint resolution).",
        "",
        *(
            [
                "## Spark: DSGD vs MLlib ALS",
                "",
                spark,
                "",
                "Same split, factors and epochs for every row. `where`: the Spark master (one "
                "process; `local[N]` = N task slots) or the single-machine factorizer's threads. "
                "`s/stratum`: wall time of one DSGD stratum (one Spark stage: p tasks training "
                "their blocks, then the factor blocks re-keyed for the next stratum); `kernel "
                "s/stratum`: the slowest task's time inside the Numba kernel in that stratum — the "
                "rest of the stratum is Spark's overhead. `set-up s`: the session and the data "
                "handed to Spark (not in the fit time). ALS (MLlib, `implicitPrefs`, λ 0.01, "
                "α 1) is not SGD; its epochs are ALS sweeps.",
                "",
            ]
            if spark
            else []
        ),
        "## Hardware ceiling",
        "",
        ceiling_section(ceilings, prefetch),
        "",
        "## Throughput and quality by dataset",
        "",
        "`collabfeat ÷ this`: the collabfeat method of the same loss family, same threads, "
        "divided by this row. `of ceiling`: updates/s over the bare loop's at the same threads "
        "(in cache or DRAM like the tables; best of with/without prefetch) — the bare loop "
        "visits uniformly random rows, so a method whose order keeps rows in cache (or whose "
        "data is skewed) can exceed 100%. AUC/PR against "
        "uniform unobserved items, P@10 with training items excluded (`cfcore.metrics`). "
        "Seconds per epoch are the library's whole fit call divided by epochs; `steady` "
        "leaves out the set-up and first epoch (epochs 2…E from per-epoch timestamps, or the "
        "difference of an E-epoch and a 1-epoch fit for methods without a per-epoch hook).",
        "",
    ]
    for d in sorted({r["dataset"] for r in fits}, key=_dataset_order):
        parts += [dataset_section(fits, d, ceilings), ""]
    parts += [
        "## Thread scaling",
        "",
        scaling_section(fits),
        "",
        "## Size scaling",
        "",
        size_section(fits),
        "",
        "## Quality vs epochs",
        "",
        quality_section(fits),
        "",
        "## Negative sampler and k-means",
        "",
        components_section(records),
        "",
        "## Reader and memory",
        "",
        reader_section(records),
        "",
        "## How updates are counted",
        "",
        how_counted(fits),
        "",
        "## Skipped or failed jobs",
        "",
        problems_section(records),
        "",
    ]
    if plots:
        parts += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    return "\n".join(parts)


def write_report(
    records: list[dict[str, Any]],
    out_dir: Path,
    suite: str = "",
    command: str = "",
    elapsed: float | None = None,
) -> str:
    """Write ``RESULTS.md`` and the PNG plots into ``out_dir``; return the Markdown."""
    from bench.plots import write_plots

    plots = write_plots(records, out_dir)
    md = render(records, suite, command, elapsed, plots)
    atomic_write_text(out_dir / "RESULTS.md", md)
    return md
