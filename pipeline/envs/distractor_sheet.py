"""Contact sheets of the distractor levels: rows are levels, columns are seeds, one block per task.

Every cell is one frame after the same seeded reset, so the cells of a block differ only by
their distractors. Renders in this process: do not import torch before calling these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.envs.distractors import DistractorSpec
from pipeline.envs.tasks import task_spec
from pipeline.errors import invalid_value

_LABEL_WIDTH = 64
_HEADER_HEIGHT = 20
_TITLE_HEIGHT = 22
_GAP = 12
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)


def render_distractor_grid(
    task: str,
    levels: Sequence[int] = (0, 1, 2, 3),
    seeds: Sequence[int] = (0, 1, 2),
    size: int = 128,
    camera: str | None = None,
    reset_seed: int = 0,
) -> list[list[np.ndarray]]:
    """Frames [level][seed] of ``task`` from ``camera`` (default: its first RRL camera)."""
    from pipeline.envs.adroit import AdroitEnv  # imports mujoco: only when rendering

    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise invalid_value("size", size, "an integer of at least 16 pixels. Fix: pass e.g. 128")
    camera = camera or task_spec(task).rrl_cameras[0]
    grid = []
    for level in levels:
        row = []
        for seed in seeds:
            env = AdroitEnv(task, width=size, height=size,
                            distractors=DistractorSpec(level=level, seed=seed))
            try:
                env.reset(seed=reset_seed)
                row.append(env.render(camera))
            finally:
                env.close()
        grid.append(row)
    return grid


def _block(task: str, camera: str, levels: Sequence[int], seeds: Sequence[int],
           grid: list[list[np.ndarray]], size: int) -> Image.Image:
    font = ImageFont.load_default(size=14)
    width = _LABEL_WIDTH + size * len(seeds)
    height = _TITLE_HEIGHT + _HEADER_HEIGHT + size * len(levels)
    block = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(block)
    draw.text((4, 3), f"{task} ({camera} camera)", fill=_INK, font=font)
    top = _TITLE_HEIGHT + _HEADER_HEIGHT
    for j, seed in enumerate(seeds):
        draw.text((_LABEL_WIDTH + j * size + 4, _TITLE_HEIGHT + 2), f"seed {seed}", fill=_INK, font=font)
    for i, level in enumerate(levels):
        draw.text((4, top + i * size + size // 2 - 8), f"level {level}", fill=_INK, font=font)
        for j in range(len(seeds)):
            block.paste(Image.fromarray(grid[i][j]), (_LABEL_WIDTH + j * size, top + i * size))
    return block


def distractor_sheet(
    tasks: Sequence[str],
    levels: Sequence[int] = (0, 1, 2, 3),
    seeds: Sequence[int] = (0, 1, 2),
    size: int = 128,
    camera: str | None = None,
    blocks_per_row: int = 2,
) -> Image.Image:
    """One labelled block per task (rows levels, columns seeds), ``blocks_per_row`` side by side."""
    if isinstance(blocks_per_row, bool) or not isinstance(blocks_per_row, int) or blocks_per_row < 1:
        raise invalid_value("blocks_per_row", blocks_per_row, "an integer >= 1. Fix: pass e.g. 2")
    blocks = []
    for task in tasks:
        cam = camera or task_spec(task).rrl_cameras[0]
        grid = render_distractor_grid(task, levels, seeds, size, cam)
        blocks.append(_block(task, cam, levels, seeds, grid, size))
    cols = min(blocks_per_row, len(blocks))
    rows = -(-len(blocks) // cols)
    bw, bh = blocks[0].size
    sheet = Image.new("RGB", (cols * bw + (cols - 1) * _GAP, rows * bh + (rows - 1) * _GAP), _BACKGROUND)
    for k, block in enumerate(blocks):
        sheet.paste(block, ((k % cols) * (bw + _GAP), (k // cols) * (bh + _GAP)))
    return sheet


def write_distractor_sheet(
    task: str | Sequence[str],
    path: str | Path,
    levels: Sequence[int] = (0, 1, 2, 3),
    seeds: Sequence[int] = (0, 1, 2),
    size: int = 128,
    camera: str | None = None,
) -> Path:
    """Write the contact sheet of one task (or several, one block each, two per row) as a PNG."""
    tasks = [task] if isinstance(task, str) else list(task)
    if not tasks:
        raise invalid_value("task", task, "at least one task name. Fix: pass e.g. 'door'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    distractor_sheet(tasks, levels, seeds, size, camera).save(path)
    return path
