"""A policy file from someone else never runs code when loaded (issue 18, item 2).

The payload is a real pickle whose ``__reduce__`` would write a file: if any loader unpickled it
with ``weights_only=False``, the file would appear. Each path that reads a checkpoint (the
library's loaders, the trainer's resume, `rrl run rollouts` with POLICY=) must refuse it first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.errors import StoreError
from pipeline.rl.checkpoints import load_checkpoint, load_policy, numpy_rng_state, save_checkpoint
from pipeline.rl.policy import GaussianMLPPolicy


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    policy = GaussianMLPPolicy(4, 2, hidden=(8,), seed=0)
    torch.save({"policy": policy.state_dict(), "policy_config": policy.config(),
                "note": _Payload(marker)}, path)
    return path


def test_a_checkpoint_whose_pickle_calls_os_system_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    for load in (load_checkpoint, load_policy):
        with pytest.raises(StoreError, match=r"evil\.pt: refused to load this checkpoint.*Fix: "):
            load(path)
    assert not marker.exists()


def test_the_trainer_refuses_to_resume_from_a_malicious_checkpoint(tmp_path: Path) -> None:
    from pipeline.config import DAPGConfig
    from pipeline.rl.policy import MLPBaseline
    from pipeline.rl.trainer import train_dapg

    marker = tmp_path / "payload-ran"
    evil_checkpoint(tmp_path / "checkpoint.pt", marker)
    policy = GaussianMLPPolicy(4, 2, hidden=(8,), seed=0)
    with pytest.raises(StoreError, match="refused to load"):
        train_dapg(policy, MLPBaseline(4), sampler=None, cfg=DAPGConfig(iterations=1),  # type: ignore[arg-type]
                   out_dir=tmp_path, task="door", log=None)
    assert not marker.exists()


def test_rollouts_with_a_malicious_policy_file_exits_2_with_a_fix_and_runs_nothing(
        tiny_door_demos: tuple[Path, str], tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    demos, sha = tiny_door_demos
    proc = subprocess.run(
        [sys.executable, "-m", "stages", "--data", str(tmp_path / "data"), "--demos", str(demos),
         "--demos-sha256", sha, "--obs-mode", "state", "--set", f"rollouts.policy={path}",
         "run", "rollouts"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "refused to load this checkpoint" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not list((tmp_path / "data").glob("rollouts/*/manifest.json"))


def test_a_trainer_checkpoint_round_trips_through_the_safe_loader(tmp_path: Path) -> None:
    import numpy as np

    np.random.seed(7)
    state = {"numpy_rng": numpy_rng_state(), "rows": [{"iteration": 0, "x": 1.5}],
             "config": {"horizon": 200, "hidden": (8, 8), "reward": None}}
    expected = np.random.rand(3)
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    from pipeline.rl.checkpoints import set_numpy_rng_state

    set_numpy_rng_state(loaded["numpy_rng"])
    assert np.array_equal(np.random.rand(3), expected)
    assert loaded["config"] == state["config"] and loaded["rows"] == state["rows"]


def test_a_changed_byte_in_a_checkpoint_is_refused_not_loaded_as_other_weights(
        tmp_path: Path) -> None:
    # torch's zip format checks nothing: without content_sha256 each of these loads silently.
    policy = GaussianMLPPolicy(39, 28, hidden=(64, 64), seed=0)
    path = tmp_path / "policy.pt"
    save_checkpoint(path, {"policy": policy.state_dict(), "policy_config": policy.config()})
    assert "content_sha256" not in load_checkpoint(path)  # checked, then left out
    clean = path.read_bytes()
    for where in (0.3, 0.5, 0.7, 0.9):  # inside the tensors' bytes, the bulk of the file
        data = bytearray(clean)
        data[int(len(data) * where)] ^= 0x10
        path.write_bytes(bytes(data))
        with pytest.raises(StoreError, match=r"policy\.pt: (its contents no longer match the "
                                             r"content_sha256|the checkpoint cannot be read).*Fix:"):
            load_policy(path)


def test_a_checkpoint_saved_before_the_checksum_still_loads(tmp_path: Path) -> None:
    policy = GaussianMLPPolicy(4, 2, hidden=(8,), seed=0)
    torch.save({"policy": policy.state_dict(), "policy_config": policy.config()},
               tmp_path / "old.pt")
    loaded = load_policy(tmp_path / "old.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                  policy.state_dict().values(), strict=True))
