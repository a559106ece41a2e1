"""The report of a pipeline run: Markdown + PNGs, and one self-contained HTML page.

:func:`write_report` reads the records of a run directory (:mod:`cfcore.pipeline.rundir`) —
every stage's summary, parameters and timings — and writes ``report.md`` with its PNGs beside
it and ``report.html``, the same document with the images inlined (base64), which opens in
any browser without the other files. Both are built from one list of blocks, so they never
disagree. :func:`screenshot` renders the HTML page with headless Chromium (how the test checks
that it renders, and how ``examples/report-screenshot.png`` was made).

Sections: data, split and negatives; CF validation per epoch (RMSE, sampled PR, AUC,
NDCG@10); pseudo-class sizes; CNN training curves; retrieval curves (shared viewers, and
owner-viewed when owners are known) against random pairs and random-init features; the linear
probe; paired bootstraps of learned − random init; timings per stage.

This module never imports torch.
"""

from __future__ import annotations

import base64
import html
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfcore.io import atomic_path, atomic_write_text
from cfcore.pipeline.rundir import RunDir


@dataclass
class Block:
    """One piece of the document: a heading, a paragraph, a table or an image."""

    kind: str  # "h1", "h2", "p", "table", "img"
    text: str = ""
    header: Sequence[str] = ()
    rows: Sequence[Sequence[Any]] = ()
    file: str = ""


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:,.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(("# " if b.kind == "h1" else "## ") + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "table":
            out.append("| " + " | ".join(b.header) + " |")
            out.append("| " + " | ".join("---" for _ in b.header) + " |")
            out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in b.rows]
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.file})")
        out.append("")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .3rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 .2rem; }
"""


def to_html(blocks: Sequence[Block], folder: Path, title: str) -> str:
    """One self-contained page: the images of ``folder`` inlined as base64 data URIs."""
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            text = html.escape(b.text)
            parts = text.split("`")  # `code` spans
            text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
            body.append(f"<p>{text}</p>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                for row in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "img":
            data = base64.b64encode((folder / b.file).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(b.text)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(b.text)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# ----------------------------------------------------------------------------- sections
def _result(run: RunDir, stage: str) -> dict[str, Any]:
    record = run.record(stage)
    return dict(record.get("result") or {}) if record else {}


def _data_section(run: RunDir) -> list[Block]:
    data, split = _result(run, "data"), _result(run, "split")
    neg = _result(run, "negatives")
    blocks = [Block("h2", "Data")]
    stats = data.get("stats", {})
    rows = []
    for label, st in (("as read", data.get("read")), ("used", stats)):
        if st:
            rows.append(
                [
                    label,
                    st["users"],
                    st["items"],
                    st["interactions"],
                    st["density"],
                    st["views_per_user"]["median"],
                    st["views_per_item"]["median"],
                ]
            )
    blocks.append(Block("p", f"Source: `{data.get('source', '?')}`."))
    header = ["", "users", "items", "interactions", "density", "median/user", "median/item"]
    blocks.append(Block("table", header=header, rows=rows))
    if "world" in data:
        w = data["world"]
        rows = [[k.replace("_", " "), v] for k, v in w.items() if isinstance(v, (int, float))]
        blocks.append(Block("table", header=["simulated world", ""], rows=rows))
    if split:
        blocks.append(
            Block(
                "p",
                f"Split (Fang §4.1): {split['test_items']:,} items held out with all their views "
                f"as queries, {split['train_items']:,} train items; the factorization fits "
                f"{split['fit_interactions']:,} interactions and validates on "
                f"{split['validation_interactions']:,}.",
            )
        )
    if neg:
        blocks.append(
            Block(
                "p",
                f"Negatives (Fang Alg. 1): {neg['negatives']:,} drawn ({neg['neg_ratio']:g} per "
                f"positive ∝ {neg['neg_weighting']}); {neg['users_short']:,} users had too few "
                "candidates.",
            )
        )
    return blocks


def _cf_section(run: RunDir, folder: Path) -> list[Block]:
    from cfcore.plots import draw_lines, new_figure, save_figure

    history = _result(run, "factorize").get("history", [])
    blocks = [Block("h2", "Collaborative filtering: validation per epoch")]
    measures = [m for m in ("rmse", "sampled_pr", "auc", "ndcg@10") if history and m in history[0]]
    if not measures:
        blocks.append(Block("p", "No validation slice (`[split] validation = 0`)."))
        return blocks
    fig, axes = new_figure(len(measures), 1, (3.6 * len(measures), 3.2))
    epochs = [h["epoch"] for h in history]
    for ax, m in zip(axes if len(measures) > 1 else [axes], measures, strict=True):
        draw_lines(ax, {m: (epochs, [h[m] for h in history])}, xlabel="epoch", title=m)
    save_figure(fig, folder / "cf_validation.png")
    blocks.append(Block("img", "CF validation measures per epoch", file="cf_validation.png"))
    header = ["epoch", "loss", *measures]
    rows = [[h["epoch"], h.get("loss"), *(h[m] for m in measures)] for h in history]
    if len(rows) > 12:
        rows = rows[:3] + rows[-6:]
    blocks.append(Block("table", header=header, rows=rows))
    blocks.append(
        Block(
            "p",
            "rmse and sampled_pr are Fang et al.'s validation (held-out positives against "
            "sampled negatives); auc ranks every unobserved item.",
        )
    )
    return blocks


def _cluster_section(run: RunDir, folder: Path) -> list[Block]:
    from cfcore.plots import new_figure, save_figure

    res = _result(run, "cluster")
    blocks = [Block("h2", "Pseudo-classes")]
    if not res:
        return blocks
    sizes = sorted(res["sizes"], reverse=True)
    fig, ax = new_figure(1, 1, (5.0, 2.4))
    ax.bar(range(1, len(sizes) + 1), sizes, color="C0")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("pseudo-class (by size)")
    ax.set_ylabel("items")
    ax.grid(True, axis="y", alpha=0.3)
    save_figure(fig, folder / "cluster_sizes.png")
    imb = res["imbalance"]
    text = (
        f"K = {res['k']} spherical k-means clusters of {res['items']:,} train items' factors "
        f"(Fang eq. 4): largest {imb['largest']}, smallest {imb['smallest']}, "
        f"empty {imb['empty']}, Gini {imb['gini']:.3f}."
    )
    if "nmi_planted_classes" in res:
        text += f" NMI with the planted classes: {res['nmi_planted_classes']:.3f}."
    blocks += [Block("p", text), Block("img", "cluster sizes", file="cluster_sizes.png")]
    return blocks


def _cnn_section(run: RunDir, folder: Path) -> list[Block]:
    res = _result(run, "train")
    blocks = [Block("h2", "CNN training")]
    if not res:
        return blocks
    history = res["history"]
    last = history[-1]
    acc = last.get("val_acc")
    blocks.append(
        Block(
            "p",
            f"{res['arch']} at {res['image_size']} px, K = {res['classes']} pseudo-classes, "
            f"{res['train_items']:,} train / {res['val_items']:,} validation images, "
            f"{len(history)} epochs"
            + (
                f"; final validation top-1 {acc:.3f} (chance {1 / res['classes']:.3f})"
                if acc
                else ""
            )
            + ".",
        )
    )
    curves = run.stage("train") / "curves.png"
    if curves.exists():
        shutil.copyfile(curves, folder / "cnn_training.png")
        blocks.append(Block("img", "CNN loss and accuracy per epoch", file="cnn_training.png"))
    keys = [k for k in ("train_loss", "val_loss", "train_acc", "val_acc") if k in last]
    blocks.append(
        Block(
            "table",
            header=["epoch", *keys, "images/s"],
            rows=[[h["epoch"], *(h.get(k) for k in keys), h.get("images_per_s")] for h in history],
        )
    )
    return blocks


def _evaluation_section(run: RunDir, folder: Path) -> list[Block]:
    res = _result(run, "evaluate")
    blocks = [Block("h2", "Retrieval and linear probe (Fang §4.3–4.4)")]
    if not res:
        return blocks
    blocks.append(
        Block(
            "p",
            f"{res['queries']:,} held-out items query the other {res['items'] - res['queries']:,} "
            "items by cosine similarity of their image features; shared viewers = Jaccard of "
            "the viewer sets, averaged over ranks 1…R; random pairs draw R train items.",
        )
    )
    curves = run.stage("evaluate") / "retrieval.png"
    if curves.exists():
        shutil.copyfile(curves, folder / "retrieval.png")
        blocks.append(Block("img", "retrieval curves against random pairs", file="retrieval.png"))
    rows = []
    for name, entry in res["results"].items():
        s = entry["summary"]
        r = s["R"]
        probe = entry.get("probe", {})
        rows.append(
            [
                name,
                s["shared_viewers_mean"],
                s["shared_viewers_random_mean"],
                s.get("shared_viewers_lift"),
                s.get(f"owner_viewed@{r}"),
                s.get(f"owner_viewed_random@{r}"),
                f"{probe['metric']} {probe['score']:.4f}" if probe else None,
                res.get("nmi", {}).get(name),
            ]
        )
    header = ["features", "shared viewers", "random pairs", "lift", "owner viewed",
              "random", "linear probe", "k-means NMI"]  # fmt: skip
    keep = [c for c in range(len(header)) if any(row[c] is not None for row in rows)]
    blocks.append(
        Block(
            "table",
            header=[header[c] for c in keep],
            rows=[[row[c] for c in keep] for row in rows],
        )
    )
    paired = res.get("paired", {})
    if paired:
        prow = []
        for name, measures in paired.items():
            for measure, e in measures.items():
                ci = f"{e['low']:+.4g} … {e['high']:+.4g}"
                p = f"< {1 / res.get('bootstrap', 1000):.2g}" if e["p"] == 0 else e["p"]
                prow.append([f"{name} − random init", measure, e["diff"], ci, p, e["n"]])
        blocks.append(
            Block(
                "p",
                "Paired bootstrap over the same queries (probe: the same test items); an "
                "interval that excludes 0 is a difference beyond sampling noise.",
            )
        )
        blocks.append(
            Block("table", header=["", "measure", "difference", "95% CI", "p", "n"], rows=prow)
        )
    return blocks


def _multitask_section(run: RunDir, folder: Path) -> list[Block]:
    res = _result(run, "multitask").get("methods")
    if not res:
        return []
    rows = [
        [
            variant,
            r["test_map"],
            f"{r['test_map_ci'][0]:.4f} … {r['test_map_ci'][1]:.4f}",
            r["val_map"],
            r["n_train_images"],
            r["n_test"],
        ]
        for variant, r in res.items()
    ]
    return [
        Block("h2", "Multitask: labelling new images (Bibas et al. 2022)"),
        Block(
            "p",
            "A CNN labels held-out images (no user has seen them) from the image alone; mtl "
            "also reconstructs each training item's CF vector. Test mAP over the labels, "
            "95% bootstrap interval over the test items; every method on one split and one "
            "CF model.",
        ),
        Block(
            "table",
            header=["method", "test mAP", "95% CI", "validation mAP", "train images", "test"],
            rows=rows,
        ),
    ]


def _tags_section(run: RunDir, folder: Path) -> list[Block]:
    res = _result(run, "tags")
    if not res.get("sets"):
        return []
    rows = [
        [
            s["features"],
            s["distribution"],
            m["model"],
            m["P@1"],
            m["R@10"],
            m["A@10"],
            m["examples"],
            m["epochs"],
            m["fit_seconds"],
        ]
        for s in res["sets"]
        for m in s["models"]
    ]
    first = res["sets"][0]
    return [
        Block("h2", "Tags: user-conditional tag prediction (Denton et al. 2015)"),
        Block(
            "p",
            f"Each model ranks the tags of held-out (user, item) examples from the item's CNN "
            f"features and, but for frequency and bilinear, the user ({res['users']}); "
            f"`{res['tags_file']}`, {res['read']['applications']} applications of "
            f"{res['read']['tags']} tags, split by {res['split']}: {first['train_examples']} "
            f"train and {first['test_examples']} test examples. P@1: the top tag is one of "
            "the example's; R@10: the share of its tags in the top 10; A@10: at least one "
            "of them there.",
        ),
        Block(
            "table",
            header=[
                "features",
                "tags",
                "model",
                "P@1",
                "R@10",
                "A@10",
                "test examples",
                "epochs",
                "fit s",
            ],
            rows=rows,
        ),
    ]


def _timings_section(run: RunDir, folder: Path) -> list[Block]:
    from cfcore.plots import bar_plot

    manifest = run.manifest() or {}
    order = manifest.get("stages_in_order") or []
    rows, times = [], {}
    for name in order:
        record = run.record(name)
        if record is None:
            continue
        times[name] = float(record["seconds"])
        rows.append([name, record["runner"], record["seconds"], record["started"]])
    blocks = [Block("h2", "Timings")]
    if times:
        bar_plot(folder / "timings.png", times, ylabel="seconds", title="wall time per stage")
        blocks.append(Block("table", header=["stage", "process", "seconds", "started"], rows=rows))
        blocks.append(Block("img", "wall time per stage", file="timings.png"))
        blocks.append(
            Block(
                "p",
                "Each stage's wall time in its own process (start-up included), from the run "
                "that produced its outputs; the report itself is not listed.",
            )
        )
    return blocks


def report_blocks(run: RunDir, folder: Path, title: str | None = None) -> list[Block]:
    """The document of the run in ``run``; its PNGs are written into ``folder``."""
    manifest = run.manifest() or {}
    versions = manifest.get("versions", {})
    title = title or f"collabfeat pipeline: {Path(manifest.get('job', 'job')).name}"
    intro = (
        f"Job `{manifest.get('job', '?')}`, run directory `{run.root}`, "
        f"updated {manifest.get('updated', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + "."
    )
    blocks = [Block("h1", title), Block("p", intro), *_data_section(run)]
    for make in (
        _cf_section,
        _cluster_section,
        _cnn_section,
        _evaluation_section,
        _multitask_section,
        _tags_section,
        _timings_section,
    ):
        blocks += make(run, folder)
    return blocks


def write_report(run: RunDir, folder: Path, title: str | None = None) -> dict[str, Path]:
    """Write ``report.md`` (+ PNGs) and the self-contained ``report.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = report_blocks(run, folder, title)
    title = blocks[0].text
    atomic_write_text(folder / "report.md", to_markdown(blocks))
    atomic_write_text(folder / "report.html", to_html(blocks, folder, title))
    return {"markdown": folder / "report.md", "html": folder / "report.html"}


# ----------------------------------------------------------------------------- rendering
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """A headless-capable Chromium on the PATH (``$CHROMIUM`` first), or None."""
    candidates = [os.environ.get("CHROMIUM", "")] + list(CHROMIUM_NAMES)
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    return None


def screenshot(
    page: str | os.PathLike[str],
    png: str | os.PathLike[str],
    width: int = 1200,
    height: int = 2400,
    chromium: str | None = None,
    timeout: float = 120.0,
) -> Path:
    """Render ``page`` (an HTML file) with headless Chromium and save a PNG of it.

    Raises
    ------
    FileNotFoundError
        No Chromium (install Debian's ``chromium``, or set ``$CHROMIUM``).
    RuntimeError
        Chromium failed or wrote no image.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on the PATH (apt-get install chromium, or $CHROMIUM)")
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory() as scratch:
        shot = Path(scratch) / "page.png"  # chromium wants a .png name
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={Path(scratch) / 'profile'}",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            page.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not shot.exists() or shot.stat().st_size == 0:
            raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-500:]}")
        with atomic_path(png) as tmp:
            shutil.copyfile(shot, tmp)
    return Path(png)
