"""Policy checkpoints: atomic saves, and loads that refuse files whose numbers are not finite.

Imports torch but not MuJoCo, so evaluating or continuing from a checkpoint needs no simulator
until a sampler is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import NonFiniteError, bad_store
from pipeline.rl.policy import GaussianMLPPolicy


def non_finite_tensors(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [name for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all())]


def require_finite_policy(policy: GaussianMLPPolicy, where: str, fix: str) -> None:
    """Raise NonFiniteError naming the parameters of `policy` that are NaN or infinite."""
    bad = non_finite_tensors(policy.state_dict())
    if bad:
        raise NonFiniteError(f"{where}: policy parameters {', '.join(bad)} are NaN or infinite. "
                             f"Fix: {fix}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash leaves the previous checkpoint whole


def load_policy(path: str | Path) -> GaussianMLPPolicy:
    """The policy of a trainer checkpoint (or of a file saved the same way)."""
    if not Path(path).is_file():
        raise bad_store(str(path), "policy checkpoint does not exist",
                        "re-run the stage that writes it (FORCE=1)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    policy = GaussianMLPPolicy(**state["policy_config"], seed=None)
    policy.load_state_dict(state["policy"])
    require_finite_policy(policy, str(path), "re-run the stage that wrote it with FORCE=1; if it "
                          "diverged, lower its step (bc.lr, dapg.step_size, dapg.lam0)")
    return policy
