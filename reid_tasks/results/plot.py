"""Trend chart of one series (matplotlib, Agg canvas, no pyplot global state; imported lazily)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ResultsError
from ..utils import atomic_path
from .views import Series


def plot_series(series: Series, out_path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write a PNG: the points (good runs filled, other runs as crosses), the baseline and the band of
    values that would not raise an alert, change points and accepted baseline restarts (vertical lines).
    Returns the path written."""
    if not series.points:
        raise ResultsError(f"no points to plot for {series.series_key} {series.metric}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = [p.started_at for p in series.points]
    ys = [p.value for p in series.points]
    ax.plot(xs, ys, color="#4c72b0", linewidth=1, alpha=0.6, zorder=2)
    good = [(p.started_at, p.value) for p in series.points if p.good]
    bad = [(p.started_at, p.value) for p in series.points if not p.good]
    if good:
        ax.scatter(*zip(*good, strict=True), s=18, color="#4c72b0", label="good run", zorder=3)
    if bad:
        ax.scatter(*zip(*bad, strict=True), s=36, marker="x", color="#c44e52", label="regressed / failed", zorder=4)
    if series.baseline is not None:
        ax.axhline(series.baseline, color="#55a868", linestyle="--", linewidth=1.2, label=f"baseline ({series.method})")
    lo, hi = series.band
    if lo is not None or hi is not None:
        y0, y1 = ax.get_ylim()
        lo_v = lo if lo is not None else min(y0, series.baseline or y0)
        hi_v = hi if hi is not None else max(y1, series.baseline or y1)
        ax.axhspan(lo_v, hi_v, color="#55a868", alpha=0.12, label="no-alert band", zorder=1)
    if series.threshold is not None:
        ax.axhline(series.threshold, color="#c44e52", linestyle=":", linewidth=1, label="alert threshold")
    for i, c in enumerate(series.change_points):
        if c.started_at is not None:
            label = "change point" if i == 0 else None
            ax.axvline(c.started_at, color="#c44e52", linestyle="--", linewidth=1, label=label, zorder=1)
    for i, b in enumerate(series.baselines):
        label = "baseline restarted (accepted)" if i == 0 else None
        ax.axvline(b.started_at, color="#55a868", linewidth=1.6, label=label, zorder=1)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    better = "higher is better" if series.higher_is_better else "lower is better"
    ax.set_ylabel(f"{series.metric} ({series.unit}, {better})")
    ax.set_title(title or f"{series.series_key}: {series.metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out = Path(out_path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
