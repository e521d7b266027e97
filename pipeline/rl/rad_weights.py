"""The rad stage's outputs: the encoder weights file, its check, and the learning curve.

``encoder.safetensors`` holds ``RADEncoder``'s state dict (the convolutions the actor shares with
the critic, the actor's linear layer and LayerNorm) and, in its metadata, the architecture and
what it was trained on. Before the stage counts as done, the file is loaded the way the encode
stage loads it (``create_encoder("rad", path)``, frames as an episode file holds them) and must
give the actor's own features on frames of the last training episode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import bad_store
from pipeline.fileio import atomic_path
from pipeline.rl.checkpoints import load_checkpoint
from pipeline.rl.rad import RADAgent
from pipeline.rl.rad_replay import center_crop, stack_frames

# Same module, same layout, same batch: the features agree to float32 rounding of a different
# batch size at most.
FEATURE_TOLERANCE = 1e-5


def write_encoder(agent: RADAgent, path: Path, trained_on: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(agent.encoder_state(), str(tmp), metadata=agent.arch.metadata(
            {"trained_on": trained_on}))


def stacks_of_episode(frames: np.ndarray, k: int, count: int) -> np.ndarray:
    """``count`` stacks spread over an episode's frames (T + 1, 3, S, S) -> (n, 3k, S, S)."""
    rows = np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)
    return np.stack([stack_frames(frames, int(t), k) for t in rows])


def check_encoder_file(agent: RADAgent, path: Path, episode_file: Path, count: int) -> float:
    """Largest |difference| between the written encoder's features and the actor's on ``count``
    stacks of a stored episode; raises if above ``FEATURE_TOLERANCE``."""
    from pipeline.encoders import create_encoder

    frames = load_checkpoint(episode_file)["frames"].numpy()
    stacks = stacks_of_episode(frames, agent.arch.frame_stack, count)
    expected = agent.actor_features(center_crop(stacks, agent.arch.crop))
    # The encode stage's input: channel-last rows of k frames, oldest first.
    loaded = create_encoder("rad", str(path)).encode(np.ascontiguousarray(stacks.transpose(0, 2, 3, 1)))
    diff = float(np.abs(loaded - expected).max())
    if not diff <= FEATURE_TOLERANCE:
        raise bad_store(str(path), "the written encoder does not reproduce the actor's features "
                        f"(max |diff| {diff:.3g})", "run the rad stage again with FORCE=1")
    return diff


def learning_curve(rows: list[dict[str, float]], evals: list[dict[str, float]], png: Path,
                   title: str) -> Path:
    """Training-episode returns and evaluations against control steps (DMControl's axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["env_steps"] for r in rows], [r["stoc_pol_mean"] for r in rows], lw=0.8,
            alpha=0.7, label="training episodes (sampled actions)")
    if evals:
        x = np.array([r["env_steps"] for r in evals])
        y = np.array([r["eval_score"] for r in evals])
        sd = np.array([r["eval_std"] for r in evals])
        ax.plot(x, y, marker="o", label="evaluation (mean action), mean +- std")
        ax.fill_between(x, y - sd, y + sd, alpha=0.2)
    ax.set(xlabel="environment steps (suite control steps, action repeat included)",
           ylabel="episode return", title=title, ylim=(-20, 1020))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
