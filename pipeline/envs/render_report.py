"""What the render stage reports: replay fidelity over all episodes, and a contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.envs.replay import JOINT_TOLERANCE, SITE_TOLERANCE
from pipeline.plots import contact_sheet
from pipeline.store.episodes import EpisodeReader


def summarize_fidelity(episodes: Path, mode: str) -> dict[str, Any]:
    with EpisodeReader(episodes) as reader:
        per = [reader.attrs(i)["fidelity"] for i in range(len(reader.names))]
    out: dict[str, Any] = {
        "episodes": len(per),
        "steps": int(sum(f["steps"] for f in per)),
        "max_abs_obs_diff": max(f["max_abs_obs_diff"] for f in per),
        "per_episode": per,
    }
    if mode == "states":
        out.update(
            max_joint_diff=max(f["max_joint_diff"] for f in per),
            max_site_diff_m=max(f["max_site_diff_m"] for f in per),
            median_site_diff_m=float(np.median([f["median_site_diff_m"] for f in per])),
            within_tolerance_episodes=sum(f["within_tolerance"] for f in per),
            joint_tolerance=JOINT_TOLERANCE,
            site_tolerance_m=SITE_TOLERANCE,
        )
    else:
        out.update(
            success_at_end=sum(f["success"] for f in per),
            ever_success=sum(f["ever_success"] for f in per),
            mean_abs_obs_drift=float(np.mean([f["mean_abs_obs_drift"] for f in per])),
        )
    return out


def write_contact_sheet(episodes: Path, png: Path, columns: int = 6) -> Path:
    """First episode, ``columns`` evenly spaced frames per camera."""
    with EpisodeReader(episodes) as reader:
        length = int(reader.lengths[0])
        picks = np.linspace(0, length - 1, min(columns, length)).astype(int)
        rows = {
            cam: [(f"demo 0, step {t}", reader.read_rows(cam, int(t), int(t) + 1)[0]) for t in picks]
            for cam in reader.cameras
        }
        title = f"{reader.env_args['env_name']} ({reader.env_args['env_kwargs']['replay']} replay)"
    return contact_sheet(rows, png, title)
