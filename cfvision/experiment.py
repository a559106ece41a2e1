"""The paper's experiment: methods × confidences × seeds × label ratios (Bibas et al. §4.4).

:func:`run_experiment` runs :func:`cfvision.multitask.train_multitask` once per cell of the
grid into ``OUTPUT/seed-S/ratio-R/VARIANT/`` and then compares the variants:

- **one split and one CF model per seed** (``OUTPUT/seed-S/split.csv``, ``cf_model.npz``:
  :func:`cfvision.protocol.prepare_protocol`), shared by every variant and label ratio of
  that seed, so that their test scores pair up item by item;
- **reruns skip finished runs** (a ``result.json`` whose settings are the job's) and resume
  interrupted ones from their checkpoint; a finished run with other settings is an error
  (choose another output folder);
- **the table** (``table.md``, like the paper's Table 5): per label ratio and variant, the
  test mAP (mean over seeds of each seed's mAP) and its 95% CI, the relative change against
  image-only, the difference with its CI and p-value (a paired test: both variants scored on
  the same bootstrap resamples of the test items of all seeds; ``*`` marks p < 0.01 as in the
  paper). Intervals are ± 1.96 bootstrap standard deviations and the p-value a paired z-test
  with that deviation (the paper used paired t-tests): resampling biases mAP upward, so
  percentile intervals would sit above the estimates (:func:`cfcore.metrics.bootstrap_ci`);
- **the figure** (``label_ratio.png``, like Figs. 3–4): mAP against the label ratio (CI
  bands for image-only and MTL-reconstruct uniform, Fig. 3's pair), and the relative change
  against image-only per ratio with the paired CI;
- ``summary.json``: every number of the table, and each seed's mAP.

The variants are ``image-only``, ``sequential`` and ``contrastive`` (each once, with the
``uniform`` confidence where one applies) and ``mtl-<confidence>`` for each confidence.

A job is a TOML file (:func:`load_job`) whose keys are the grid (``methods``,
``confidences``, ``seeds``, ``label_ratios``) and any :class:`MultitaskConfig` field::

    images = "movielens-posters"
    id_space = "ml-100k"
    labels = "ml-100k"
    interactions = "ml-100k"
    output = "runs/bibas"
    methods = ["image-only", "mtl", "sequential", "contrastive"]
    confidences = ["uniform", "interactions", "loss"]
    seeds = [0, 1, 2]
    label_ratios = [1.0, 0.2]
    arch = "small"
    image_size = 64
    epochs = 15
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.errors import InputError
from cfvision.multitask import (
    CONFIDENCES,
    METHODS,
    RESULT,
    SCORES,
    MultitaskConfig,
    load_scores,
    train_multitask,
)

TABLE = "table.md"
FIGURE = "label_ratio.png"
SUMMARY = "summary.json"
GRID_KEYS = ("methods", "confidences", "seeds", "label_ratios")

#: Settings that do not change a run's result (a finished run is kept when only these differ).
NOT_RESULT = (
    "output",
    "resume",
    "progress",
    "workers",
    "cache_dir",
    "data_dir",
    "device",
    "n_boot",
    "images",
    "split",
    "cf_model",
)

#: The variants whose CI is drawn as a band (Fig. 3 compares these two).
BANDS = ("image-only", "mtl-uniform")

#: The paper's names (Table 5).
DISPLAY = {
    "image-only": "Image-only",
    "sequential": "Sequential",
    "contrastive": "Contrastive-loss",
    "mtl-uniform": "MTL-reconstruct (uniform)",
    "mtl-interactions": "MTL-reconstruct (interaction)",
    "mtl-loss": "MTL-reconstruct (loss)",
}

__all__ = ["ExperimentConfig", "load_job", "run_experiment", "summarize"]


@dataclass
class ExperimentConfig:
    """The grid and the settings every run shares (``base.output`` is the experiment's folder;
    ``base.method``, ``confidence``, ``seed``, ``label_ratio``, ``split`` and ``cf_model``
    are set per run)."""

    base: MultitaskConfig
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    confidences: list[str] = field(default_factory=lambda: list(CONFIDENCES))
    seeds: list[int] = field(default_factory=lambda: [0])
    label_ratios: list[float] = field(default_factory=lambda: [1.0])

    def validate(self) -> None:
        for name, values, allowed in (
            ("methods", self.methods, METHODS),
            ("confidences", self.confidences, CONFIDENCES),
        ):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise InputError(f"{name}: {bad or 'empty'}; choose from {', '.join(allowed)}")
        if not self.seeds:
            raise InputError("seeds: empty")
        if not self.label_ratios or any(not 0 < r <= 1 for r in self.label_ratios):
            raise InputError(f"label_ratios must lie in (0, 1], got {self.label_ratios}")
        for name in ("methods", "confidences", "seeds", "label_ratios"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise InputError(f"{name}: a value is listed twice ({values})")
        self.runs()[0].validate()

    def variants(self) -> list[tuple[str, str]]:
        """``(method, confidence)`` of each variant, in table order."""
        out: list[tuple[str, str]] = []
        for method in ("image-only", "sequential", "contrastive", "mtl"):  # Table 5's order
            if method not in self.methods:
                continue
            if method == "mtl":
                out += [("mtl", c) for c in self.confidences]
            else:
                out.append((method, "uniform"))
        return out

    def runs(self) -> list[MultitaskConfig]:
        """The configuration of every run of the grid (seed, then ratio, then variant)."""
        root = Path(self.base.output)
        out = []
        for seed in self.seeds:
            shared = seed_dir(root, seed)
            for ratio in self.label_ratios:
                for method, confidence in self.variants():
                    cfg = replace(
                        self.base,
                        method=method,
                        confidence=confidence,
                        seed=seed,
                        label_ratio=float(ratio),
                        split=str(shared / "split.csv"),
                        cf_model=str(shared / "cf_model.npz"),
                    )
                    cfg.output = str(run_dir(root, seed, float(ratio), cfg.variant))
                    out.append(cfg)
        return out


def seed_dir(root: Path, seed: int) -> Path:
    return Path(root) / f"seed-{seed}"


def run_dir(root: Path, seed: int, ratio: float, variant: str) -> Path:
    return seed_dir(root, seed) / f"ratio-{ratio:g}" / variant


# ----------------------------------------------------------------------------- jobs
def load_job(
    path: str | os.PathLike[str], overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a TOML job file (module docstring), with
    ``overrides`` (e.g. command-line options) taking precedence.

    Raises
    ------
    InputError
        No such file, TOML syntax errors (with the line), unknown keys (named, with the
        known ones), missing ``images``/``labels``/``interactions``/``output``.
    """
    import tomllib

    settings: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"job file {path}: no such file")
        try:
            settings = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: not valid TOML ({exc})") from None
    return experiment_config({**settings, **(overrides or {})}, str(path or "the options"))


def experiment_config(settings: dict[str, Any], source: str = "the settings") -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a flat dict of grid keys and MultitaskConfig fields."""
    known = {f.name for f in fields(MultitaskConfig)}
    unknown = sorted(set(settings) - known - set(GRID_KEYS))
    if unknown:
        raise InputError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; known: "
            f"{', '.join(GRID_KEYS)} and {', '.join(sorted(known - {'method', 'confidence', 'seed', 'label_ratio'}))}"
        )
    per_run = {"method", "confidence", "seed", "label_ratio", "split", "cf_model", "resume"}
    fixed = sorted(per_run & set(settings))
    if fixed:
        raise InputError(
            f"{source}: {', '.join(fixed)} are set per run by the grid "
            "(use methods, confidences, seeds, label_ratios)"
        )
    missing = [k for k in ("images", "labels", "interactions", "output") if not settings.get(k)]
    if missing:
        raise InputError(f"{source}: missing {', '.join(missing)}")
    grid = {k: list(settings[k]) for k in GRID_KEYS if k in settings}
    base = MultitaskConfig(**{k: v for k, v in settings.items() if k in known})
    cfg = ExperimentConfig(base, **grid)
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------- running
def _same_settings(result: dict[str, Any], cfg: MultitaskConfig, path: Path) -> None:
    saved = result.get("config", {})
    now = asdict(cfg)
    differ = [k for k in now if k not in NOT_RESULT and saved.get(k) != now[k]]
    if differ:
        first = differ[0]
        raise InputError(
            f"{path} is a finished run with other settings ({', '.join(differ)}; e.g. "
            f"{first} = {saved.get(first)!r}, the job says {now[first]!r}): choose another "
            "output folder for the new settings, or delete that run"
        )


@dataclass
class ExperimentResult:
    rows: list[dict[str, Any]]
    table: str
    figure: Path
    ran: int
    skipped: int


def run_experiment(
    cfg: ExperimentConfig,
    log: Callable[[str], None] | None = print,
) -> ExperimentResult:
    """Run (or finish) every run of the grid, then write the table, figure and summary.

    Returns
    -------
    ExperimentResult
        The table's rows, its Markdown, the figure's path, and how many runs were trained
        now and how many were already finished.
    """
    from cfvision.protocol import prepare_protocol

    cfg.validate()
    say = log or (lambda _m: None)
    root = Path(cfg.base.output)
    root.mkdir(parents=True, exist_ok=True)
    runs = cfg.runs()
    ran = skipped = 0
    prepared: set[int] = set()
    for k, run in enumerate(runs, 1):
        out = Path(run.output)
        result = out / RESULT
        if result.is_file():
            _same_settings(json.loads(result.read_text()), run, result)
            skipped += 1
            continue
        if run.seed not in prepared:
            shared = replace(run, split=None, cf_model=None)
            prepare_protocol(shared, seed_dir(root, run.seed), say)
            prepared.add(run.seed)
        run.resume = (out / "checkpoint.pt").exists() or (out / "aux" / "checkpoint.pt").exists()
        say(
            f"[{k}/{len(runs)}] seed {run.seed}, label ratio {run.label_ratio:g}, "
            f"{run.variant}" + (" (resuming)" if run.resume else "")
        )
        train_multitask(run, log=say)
        ran += 1
    rows, table, figure = summarize(cfg)
    say(table)
    say(f"table -> {root / TABLE}; figure -> {figure}; ran {ran}, already finished {skipped}")
    return ExperimentResult(rows, table, figure, ran, skipped)


# ----------------------------------------------------------------------------- comparing
def _mean_map(seeds: np.ndarray, y: np.ndarray, s: np.ndarray) -> float:
    """Mean over seeds of each seed's mAP (the rows of a seed are its test items)."""
    from cfcore.metrics import mean_average_precision

    values = [mean_average_precision(y[seeds == k], s[seeds == k]) for k in np.unique(seeds)]
    return float(np.mean(values))


def _stack(cfg: ExperimentConfig, ratio: float, variant: str, reference: dict | None):
    """Seed column, targets and scores of one variant over the seeds (rows checked to be the
    reference's test items, in the same order)."""
    root = Path(cfg.base.output)
    seeds, ys, ss, ids = [], [], [], {}
    for seed in cfg.seeds:
        path = run_dir(root, seed, ratio, variant) / SCORES
        item_ids, scores, targets, _ = load_scores(path)
        if reference is not None and not np.array_equal(reference[seed], item_ids):
            raise InputError(f"{path}: its test items are not those of image-only for seed {seed}")
        ids[seed] = item_ids
        seeds.append(np.full(len(item_ids), seed))
        ys.append(targets)
        ss.append(scores)
    return np.concatenate(seeds), np.concatenate(ys), np.concatenate(ss), ids


def summarize(cfg: ExperimentConfig) -> tuple[list[dict[str, Any]], str, Path]:
    """The table rows, the Markdown table and the figure of a finished grid (module docstring)."""
    from cfcore.io import atomic_write_text
    from cfcore.metrics import bootstrap_ci, paired_bootstrap

    root = Path(cfg.base.output)
    n_boot = cfg.base.n_boot
    rows: list[dict[str, Any]] = []
    variants = [replace(cfg.base, method=m, confidence=c).variant for m, c in cfg.variants()]
    for ratio in cfg.label_ratios:
        ratio = float(ratio)
        ref = None
        if "image-only" in variants:
            ref = _stack(cfg, ratio, "image-only", None)
        for variant in variants:
            seeds, y, s, ids = _stack(cfg, ratio, variant, None if ref is None else ref[3])
            point, low, high = bootstrap_ci(
                _mean_map, seeds, y, s, n_boot=n_boot, seed=0, interval="normal"
            )
            per_seed = {}
            for seed in cfg.seeds:
                result = json.loads((run_dir(root, seed, ratio, variant) / RESULT).read_text())
                per_seed[str(seed)] = result["test_map"]
            row: dict[str, Any] = {
                "label_ratio": ratio,
                "variant": variant,
                "name": DISPLAY[variant],
                "map": point,
                "ci": [low, high],
                "per_seed": per_seed,
                "n_test": int(len(y)),
            }
            if ref is not None and variant != "image-only":
                base_point = _mean_map(ref[0], ref[1], ref[2])
                paired = paired_bootstrap(
                    _mean_map, s, ref[2], seeds, y, n_boot=n_boot, seed=0, interval="normal"
                )
                row.update(
                    reference_map=base_point,
                    relative=(point - base_point) / base_point if base_point > 0 else None,
                    difference=paired.difference,
                    difference_ci=[paired.low, paired.high],
                    p_value=paired.p_value,
                )
            rows.append(row)
    table = markdown_table(rows, cfg)
    atomic_write_text(root / TABLE, table + "\n")
    atomic_write_text(
        root / SUMMARY,
        json.dumps(
            {
                "rows": rows,
                "seeds": cfg.seeds,
                "label_ratios": cfg.label_ratios,
                "n_boot": n_boot,
                "settings": asdict(cfg.base),
            },
            indent=2,
        )
        + "\n",
    )
    figure = plot_label_ratios(rows, root / FIGURE)
    return rows, table, figure


def markdown_table(rows: list[dict[str, Any]], cfg: ExperimentConfig) -> str:
    """Table 5's layout: mAP, relative change vs image-only (``*``: p < 0.01), the CIs."""
    seeds, n_boot = len(cfg.seeds), cfg.base.n_boot
    head = [
        f"Test mAP over {rows[0]['n_test'] // max(seeds, 1)} test items × {seeds} seed(s) "
        f"(mean over seeds of each seed's mAP); 95% CIs = ± 1.96 bootstrap SD ({n_boot:,} "
        "resamples of the test items); Δ = difference to image-only on the same items, its p "
        "a paired z-test with the bootstrap SD; * p < 0.01.",
        "",
        "| label ratio | method | mAP | 95% CI | vs image-only | Δ mAP (95% CI) | p |",
        "| ---: | --- | ---: | --- | ---: | --- | ---: |",
    ]
    lines = []
    for r in rows:
        rel = dci = p = "—"
        if "relative" in r and r["relative"] is not None:
            star = "*" if r["p_value"] < 0.01 else ""
            rel = f"{100 * r['relative']:+.1f}%{star}"
            lo, hi = r["difference_ci"]
            dci = f"{r['difference']:+.4f} ({lo:+.4f} … {hi:+.4f})"
            p = f"{r['p_value']:.3f}"
        lines.append(
            f"| {r['label_ratio']:g} | {r['name']} | {r['map']:.4f} | "
            f"{r['ci'][0]:.4f} … {r['ci'][1]:.4f} | {rel} | {dci} | {p} |"
        )
    return "\n".join(head + lines)


def plot_label_ratios(rows: list[dict[str, Any]], path: Path) -> Path:
    """Fig. 3–4: mAP against label ratio (CI bands), relative change against image-only."""
    from cfcore.plots import new_figure, save_figure

    fig, (ax1, ax2) = new_figure(ncols=2, size=(11.0, 4.2))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    ratios = sorted({r["label_ratio"] for r in rows})
    for k, variant in enumerate(variants):
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["label_ratio"])
        x = [r["label_ratio"] for r in mine]
        y = [r["map"] for r in mine]
        ax1.plot(x, y, marker="o", color=f"C{k}", label=DISPLAY[variant])
        if variant in BANDS:
            lows, highs = [r["ci"][0] for r in mine], [r["ci"][1] for r in mine]
            ax1.fill_between(x, lows, highs, color=f"C{k}", alpha=0.15)
    ax1.set_xlabel("label ratio (fraction of training labels kept)")
    ax1.set_ylabel("test mAP")
    ax1.set_title("mAP vs label ratio (bands: 95% CI)")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize="small")
    others = [v for v in variants if v != "image-only"]
    width = 0.8 / max(len(others), 1)
    for k, variant in enumerate(others):
        mine = {r["label_ratio"]: r for r in rows if r["variant"] == variant}
        heights, errors = [], [[], []]
        for x in ratios:
            r = mine.get(x, {})
            heights.append(100 * (r.get("relative") or 0.0))
            # the paired CI of the difference, in % of image-only's mAP
            base, diff = r.get("reference_map") or 0.0, r.get("difference", 0.0)
            lo, hi = r.get("difference_ci", (diff, diff))
            errors[0].append(100 * (diff - lo) / base if base > 0 else 0.0)
            errors[1].append(100 * (hi - diff) / base if base > 0 else 0.0)
        pos = np.arange(len(ratios)) + (k - (len(others) - 1) / 2) * width
        ax2.bar(
            pos,
            heights,
            width,
            yerr=np.asarray(errors),
            capsize=2,
            color=f"C{variants.index(variant)}",
            label=DISPLAY[variant],
            error_kw={"linewidth": 0.8},
        )
    ax2.axhline(0, color="black", linewidth=0.8)
    ax2.set_xticks(np.arange(len(ratios)), [f"{x:g}" for x in ratios])
    ax2.set_xlabel("label ratio")
    ax2.set_ylabel("mAP change vs image-only (%)")
    ax2.set_title("relative to image-only (bars: paired 95% CI)")
    ax2.grid(True, axis="y", alpha=0.3)
    if others:
        ax2.legend(fontsize="small", loc="best")
    return save_figure(fig, path)
