"""Figures a person would rather look at than read: contact sheets, learning curves."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def contact_sheet(rows: dict[str, list[tuple[str, np.ndarray]]], path: Path, title: str = "") -> Path:
    """One row of labelled frames per camera, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(frames) for frames in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.4 * len(rows)), squeeze=False)
    for r, (camera, frames) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(frames):
                label, frame = frames[c]
                ax.imshow(frame)
                ax.set_title(f"{camera}\n{label}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def read_csv_rows(path: Path) -> list[dict[str, float]]:
    with open(path) as fh:
        return [{k: float(v) if v not in ("", "nan") else float("nan") for k, v in row.items()}
                for row in csv.DictReader(fh)]


def learning_curve(log_csv: Path, eval_csv: Path | None, png: Path, title: str,
                   reference: dict[str, list[dict[str, float]]] | None = None,
                   bc_success: float | None = None) -> Path:
    """Success rate and return per iteration; RRL's own logs drawn beside ours when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv_rows(log_csv)
    its = [r["iteration"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(its, [r["success_rate"] for r in rows], label="ours: sampled trajectories")
    if eval_csv is not None and eval_csv.exists():
        ev = read_csv_rows(eval_csv)
        ax1.plot([r["iteration"] for r in ev], [r["eval_success_rate"] for r in ev],
                 label="ours: evaluation (mean action)")
    for name, ref in (reference or {}).items():
        ax1.plot([r["iteration"] for r in ref], [r["success_rate"] for r in ref], lw=0.8,
                 alpha=0.6, label=f"RRL log {name}")
    if bc_success is not None:
        ax1.axhline(bc_success, color="grey", ls=":", label="BC start (mean action)")
    ax1.set(xlabel="iteration", ylabel="success rate (%)", ylim=(-2, 102), title=title)
    ax1.legend(fontsize=7)
    ax2.plot(its, [r["stoc_pol_mean"] for r in rows], label="ours: sampled return")
    ax2.plot(its, [r["eval_score"] for r in rows], label="ours: eval_score")
    ax2.set(xlabel="iteration", ylabel="return", title="return")
    ax2.legend(fontsize=7)
    if reference and len(its) < 50:  # a short run: show RRL's first iterations, not all 300
        ax1.set_xlim(-1, max(its[-1] + 1, 20) if its else 20)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
