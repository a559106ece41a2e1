"""Small matplotlib helpers: headless (Agg), one figure per call, PNG written atomically.

No pyplot state is touched: figures are built from :class:`matplotlib.figure.Figure` with an
Agg canvas, so these helpers work in threads, in tests and on machines without a display,
and never change the caller's backend.

>>> from cfcore.plots import line_plot
>>> line_plot("curves.png", {"ours": ([1, 2, 3], [0.3, 0.2, 0.1])}, xlabel="rank")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cfcore.io import atomic_path

Series = tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]


def new_figure(
    ncols: int = 1, nrows: int = 1, size: tuple[float, float] | None = None
) -> tuple[Any, Any]:
    """A fresh Agg-backed ``Figure`` and its axes (an array when more than one panel)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = size or (5.0 * ncols, 4.0 * nrows)
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically (readers never see a partial image)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def draw_lines(
    ax: Any,
    series: Mapping[str, Series],
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    hlines: Mapping[str, float] | None = None,
    baselines: Mapping[str, Series] | None = None,
    logy: bool = False,
) -> None:
    """Draw named ``(x, y)`` series on ``ax``.

    ``hlines`` (constant levels) and ``baselines`` (series) are drawn as dashed black
    reference lines, like the random baseline of Fang et al. Fig. 5.
    """
    for name, (x, y) in series.items():
        ax.plot(np.asarray(x), np.asarray(y), label=name, linewidth=1.6)
    for name, (x, y) in (baselines or {}).items():
        ax.plot(
            np.asarray(x), np.asarray(y), label=name, color="black", linestyle="--", linewidth=1.2
        )
    for name, level in (hlines or {}).items():
        ax.axhline(float(level), color="black", linestyle="--", linewidth=1.2, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series or hlines or baselines:
        ax.legend(fontsize="small")


def line_plot(
    path: str | os.PathLike[str],
    series: Mapping[str, Series],
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    hlines: Mapping[str, float] | None = None,
    logy: bool = False,
) -> Path:
    """One panel of named line series, saved as a PNG."""
    fig, ax = new_figure()
    draw_lines(ax, series, xlabel=xlabel, ylabel=ylabel, title=title, hlines=hlines, logy=logy)
    return save_figure(fig, path)


def bar_plot(
    path: str | os.PathLike[str],
    values: Mapping[str, float],
    *,
    ylabel: str = "",
    title: str = "",
) -> Path:
    """One panel of named bars, saved as a PNG."""
    fig, ax = new_figure()
    draw_bars(ax, values, ylabel=ylabel, title=title)
    return save_figure(fig, path)


def draw_bars(ax: Any, values: Mapping[str, float], *, ylabel: str = "", title: str = "") -> None:
    """Named bars on ``ax``, each labelled with its value."""
    names = list(values)
    heights = [float(values[n]) for n in names]
    bars = ax.bar(range(len(names)), heights, color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.bar_label(bars, fmt="%.3g", fontsize="small")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
