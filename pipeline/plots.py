"""Figures a person would rather look at than read: contact sheets, learning curves."""

from __future__ import annotations

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
