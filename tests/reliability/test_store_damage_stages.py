"""Through the stages (issue 18, item 1): a feature group that lost a shard file, or has a flipped
byte, is seen by `status`, refused by every stage that would read it (exit 2, the shard named, the
fix given, nothing trained), and the stated fix (FORCE=1) recovers. The same for changed group
attrs, which evaluate and rollouts read to rebuild the encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_RL, TINY_VISION

pytestmark = pytest.mark.gl
ROOT = Path(__file__).resolve().parents[2]


def rrl(data: Path, demos: tuple[Path, str], *args: str) -> subprocess.CompletedProcess[str]:
    path, sha = demos
    settings = [arg for k, v in {**TINY_RL, **TINY_VISION}.items() for arg in ("--set", f"{k}={v}")]
    return subprocess.run([sys.executable, "-m", "stages", "--data", str(data), "--demos",
                           str(path), "--demos-sha256", sha, *settings, *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ})


def shard_file(data: Path) -> Path:
    (group,) = [p for p in (data / "features.zarr").iterdir() if p.is_dir()]
    return group / "top" / "c" / "0" / "0"


def refused(proc: subprocess.CompletedProcess[str]) -> bool:
    return (proc.returncode == 2 and "Traceback" not in proc.stderr
            and "shard 0" in proc.stderr and "damaged" in proc.stderr
            and "Fix: re-encode it: run the encode stage with FORCE=1" in proc.stderr)


def manifests(data: Path, stage: str) -> list[Path]:
    return list(data.glob(f"{stage}/*/manifest.json"))


def test_a_lost_shard_file_is_seen_refused_and_repaired(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    assert rrl(data, tiny_door_demos, "run", "encode").returncode == 0
    shard_file(data).unlink()
    status = rrl(data, tiny_door_demos, "status")
    assert status.returncode == 0
    assert "encode" in status.stdout and "stale: the group" in status.stdout
    assert "camera 'top' shard 0: its file is missing" in status.stdout
    for stage in ("encode", "bc", "probe"):
        proc = rrl(data, tiny_door_demos, "run", stage)
        assert refused(proc), (stage, proc.returncode, proc.stderr[-2000:])
    assert manifests(data, "bc") == [] and manifests(data, "probe") == []
    assert rrl(data, tiny_door_demos, "run", "encode", "--force").returncode == 0
    assert rrl(data, tiny_door_demos, "run", "bc").returncode == 0
    assert len(manifests(data, "bc")) == 1


def test_a_flipped_byte_stops_dapg_after_bc_finished(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    assert rrl(data, tiny_door_demos, "run", "bc").returncode == 0
    path = shard_file(data)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x40
    path.write_bytes(bytes(raw))
    # bc is a cache hit, so dapg's own read of the demo features must catch it.
    proc = rrl(data, tiny_door_demos, "run", "dapg")
    assert refused(proc), proc.stderr[-2000:]
    assert manifests(data, "dapg") == [] and not list(data.glob("dapg/*/checkpoint.pt"))
    verify = rrl(data, tiny_door_demos, "verify")
    assert verify.returncode == 1 and "shard 0" in verify.stdout and "Fix:" in verify.stdout
    assert rrl(data, tiny_door_demos, "run", "encode", "--force").returncode == 0  # the fix given
    assert rrl(data, tiny_door_demos, "verify").returncode == 0



@pytest.mark.slow  # about 50 s; test_store_damage.py checks the same refusal at the store's level
def test_changed_attrs_stop_evaluate_and_rollouts_and_force_repairs_them(  # type: ignore[no-untyped-def]
        tiny_door_demos, tmp_path) -> None:
    # evaluate and rollouts read no rows of the group, only its attrs: how to rebuild the encoder
    # that made them. A changed crop there would score the policy on other features, silently.
    data = tmp_path / "data"
    assert rrl(data, tiny_door_demos, "run", "dapg").returncode == 0
    meta_file = shard_file(data).parents[3] / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["preprocessing"]["crop"] += 4
    meta_file.write_text(json.dumps(meta))
    for stage in ("evaluate", "rollouts"):
        proc = rrl(data, tiny_door_demos, "run", stage)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (stage, proc.stderr[-2000:])
        assert "no longer match the attrs_sha256" in proc.stderr and "FORCE=1" in proc.stderr
        assert manifests(data, stage) == []
    assert rrl(data, tiny_door_demos, "run", "encode", "--force").returncode == 0
    proc = rrl(data, tiny_door_demos, "run", "evaluate")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[dapg] cache hit" in proc.stdout + proc.stderr  # the same key: the policy still holds
    assert len(manifests(data, "evaluate")) == 1


@pytest.mark.slow  # about 30 s; test_episode_damage.py checks the reader itself
def test_a_flipped_byte_in_the_rendered_frames_stops_encode_and_force_repairs_it(  # type: ignore[no-untyped-def]
        tiny_door_demos, tmp_path) -> None:
    from tests.reliability.test_episode_damage import flip_chunk_byte

    data = tmp_path / "data"
    assert rrl(data, tiny_door_demos, "run", "render").returncode == 0
    (episodes,) = data.glob("render/*/episodes.hdf5")
    flip_chunk_byte(episodes, "data/demo_1/obs/top_image")
    proc = rrl(data, tiny_door_demos, "run", "encode")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "field '/data/demo_1/obs/top_image' cannot be read back" in proc.stderr
    assert "FORCE=1" in proc.stderr and manifests(data, "encode") == []
    assert rrl(data, tiny_door_demos, "run", "render", "--force").returncode == 0
    assert rrl(data, tiny_door_demos, "run", "encode").returncode == 0
