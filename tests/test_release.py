"""A released result re-evaluates with one command and no data folder (issue 21, item 3): the
released encoder renders-and-encodes the same episodes the evaluate stage scored, so the numbers
are equal; a damaged or swapped file is refused; the policy file loads without running code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import StoreError
from pipeline.study.release import evaluate_release, read_release
from tests.helpers import TINY_RL, TINY_VISION

pytestmark = pytest.mark.gl
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def released(tiny_door_demos: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny vision run on file weights (a resnet10t saved here), released under results/."""
    import torch
    from safetensors.torch import save_file

    from pipeline.encoders import create_encoder

    work = tmp_path_factory.mktemp("release")
    weights = work / "tiny.safetensors"
    model = create_encoder("resnet10t", "random").module
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    settings = {**TINY_RL, **TINY_VISION, "encode.weights": str(weights), "dapg.iterations": "1",
                "evaluate.episodes": "3", "evaluate.video_episodes": "0"}
    path, sha = tiny_door_demos
    args = [f"--set={k}={v}" for k, v in settings.items()]
    common = [sys.executable, "-m", "stages", "--data", str(work / "data"), "--demos", str(path),
              "--demos-sha256", sha, *args]
    for command in (["run", "evaluate"], ["release", "tiny"]):
        proc = subprocess.run([*common, *command], cwd=work, capture_output=True, text=True,
                              timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "policy" in proc.stdout and "sha256" in proc.stdout
    torch.set_num_threads(2)
    return work


def test_the_release_evaluates_to_the_evaluate_stages_numbers(released: Path, tiny_door_demos) -> None:  # type: ignore[no-untyped-def]
    folder = released / "results" / "tiny"
    release = read_release(folder)
    assert set(release["files"]) == {"encoder", "policy", "log", "eval"}
    lines: list[str] = []
    scored = evaluate_release(folder, episodes=3, levels=[0], log=lines.append)
    staged = release["evaluation"]["per_level"]["0"]
    assert scored["0"]["episodes"] == 3
    # The same seeded episodes; floats differ only where torch's thread count changes the order
    # of a sum (the stage and this process run the encoder on different threads).
    assert scored["0"]["mean_return"] == pytest.approx(staged["mean_return"], rel=1e-3)
    assert scored["0"]["success_rate"] == staged["success_rate"]
    # The printed line puts the release's own figure beside the new one.
    assert len(lines) == 1 and f"(released: {staged['success_rate']:.1f}% over 3" in lines[0], lines


def test_interim_evaluation_of_the_last_checkpoint_gives_the_evaluate_stages_numbers(
        released: Path, tiny_door_demos) -> None:  # type: ignore[no-untyped-def]
    """bench/interim_evaluate.py on a finished run: its checkpoint holds the final policy."""
    import json

    path, sha = tiny_door_demos
    settings = {**TINY_RL, **TINY_VISION, "encode.weights": str(released / "tiny.safetensors"),
                "dapg.iterations": "1", "evaluate.episodes": "3", "evaluate.video_episodes": "0",
                "demos.path": str(path), "demos.sha256": sha}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "interim_evaluate.py"), "--data",
                           str(released / "data"), "--envs", "2",
                           *[f"{k}={v}" for k, v in settings.items()]],
                          capture_output=True, text=True, timeout=600, cwd=released,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    staged = json.loads(next((released / "data" / "evaluate").glob("*/manifest.json")).read_text())
    s = staged["summary"]
    assert "after 1 iterations" in proc.stdout and "over 3 held-out episodes" in proc.stdout
    assert f"success {s['success_rate']:.1f}%" in proc.stdout, proc.stdout
    printed = float(proc.stdout.rsplit("mean return ", 1)[1])
    assert printed == pytest.approx(s["mean_return"], abs=0.051)  # printed to 0.1


def test_a_damaged_release_file_is_refused(released: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(released / "results" / "tiny", folder)
    policy = folder / "policy.pt"
    raw = bytearray(policy.read_bytes())
    raw[len(raw) // 2] ^= 1
    policy.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"policy\.pt: sha256 is .*the release says.*Fix: restore"):
        read_release(folder)
