"""The report's figure: one panel per experiment and task, the task's metric against samples
(success for Adroit, return for DeepMind Control)."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.study.curves import SUCCESS, Band, Metric

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# RRL's logs span up to 12M samples; a run here, 0.4-1.2M. Drawn to the end of RRL's logs, our
# curves would be squeezed into the first tenth of the axis, so the axis stops at this many times
# our longest run; the report's table gives RRL's figures beyond it.
ZOOM_X_RATIO = 2.0


@dataclass(frozen=True)
class Panel:
    title: str
    curves: dict[str, Band]  # legend label -> mean and spread over seeds
    reference: Band | None  # RRL's logs, when they ran this setting
    metric: Metric = SUCCESS  # the y axis: the task's metric


def draw_panels(panels: list[Panel], png: Path, subtitle: str, warning: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, max(1, len(panels)))
    nrows = math.ceil(len(panels) / ncols) or 1
    width = max(8.0, 5.6 * ncols)  # room for the title's warning line
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 4.4 * nrows + 0.6), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        _draw(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    shown = sorted({p.metric.name for p in panels}, reverse=True) or [SUCCESS.name]
    title = f"{' and '.join(shown)} vs environment samples ({subtitle})"
    fig.suptitle(title + (f"\n{warning}" if warning else ""), fontsize=10,
                 color="firebrick" if warning else "black")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _draw(ax: Axes, panel: Panel) -> None:
    ours_max = 0.0
    for label, b in panel.curves.items():
        (line,) = ax.plot(b.samples, b.mean, marker="." if len(b.samples) < 30 else None,
                          label=label, ls="--" if "RANDOM" in label else "-")
        if b.seeds > 1:
            ax.fill_between(b.samples, b.low, b.high, color=line.get_color(), alpha=0.2)
        ours_max = max(ours_max, float(b.samples[-1]))
    ref = panel.reference
    xlabel = "environment samples"
    if ref is not None:
        ax.plot(ref.samples, ref.mean, color="grey", lw=1,
                label=f"RRL's logs (resnet34, ImageNet, {ref.seeds} seeds)")
        ax.fill_between(ref.samples, ref.low, ref.high, color="grey", alpha=0.15)
        ref_max = float(ref.samples[-1])
        if ours_max and ref_max > ZOOM_X_RATIO * ours_max:
            ax.set_xlim(0, ZOOM_X_RATIO * ours_max)
            xlabel += f" (RRL's logs go on to {ref_max / 1e6:.3g}M: see the table)"
    if not panel.curves:
        ax.text(0.5, 0.5, "no finished cells yet", ha="center", transform=ax.transAxes)
    ylim = panel.metric.ylim or _fitted_ylim(panel, ours_max)
    from matplotlib.ticker import EngFormatter

    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 500k, 1M: no "1e6" over the label
    ax.set(title=textwrap.fill(panel.title, 60), xlabel=xlabel,
           ylabel=panel.metric.axis, ylim=ylim)
    if panel.curves or ref is not None:  # an empty panel has nothing to label
        ax.legend(fontsize=7, loc="best")


def _fitted_ylim(panel: Panel, ours_max: float) -> tuple[float, float] | None:
    """A metric without a fixed range: fit our curves, and the reference only as far as they go
    (RRL's late returns would flatten a short run's curves into one line)."""
    values = [v for b in panel.curves.values() for v in (b.mean, b.low, b.high)]
    if panel.reference is not None and ours_max:
        values.append(panel.reference.mean[panel.reference.samples <= ZOOM_X_RATIO * ours_max])
    flat = np.concatenate([np.asarray(v, dtype=float) for v in values]) if values else np.array([])
    if not flat.size:
        return None
    low, high = float(flat.min()), float(flat.max())
    pad = max(0.05 * (high - low), 1.0)
    return low - pad, high + pad
