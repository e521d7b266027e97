"""Two teammates encode the same key into one shared bucket at once (issue 18, item 7): both runs
end, and the group they leave verifies, whichever finishes first. Real processes, a real S3 API
(moto_server), different thread counts so that their bytes may differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.store.features import is_complete, open_features
from pipeline.store.verify import verify_group
from tests.conftest import synthetic_door_demos, write_demo_pickle

pytestmark = pytest.mark.gl
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two real `rrl` processes rendering and encoding: ~20 s; the interleaving test below is fast
def test_two_data_folders_encoding_one_key_into_one_bucket(s3: dict[str, Any], tmp_path: Path) -> None:
    demos = tmp_path / "door-v0_demos.pickle"
    sha = write_demo_pickle(demos, synthetic_door_demos(n=3, steps=40))
    url = "s3://rrl-test/two-writers"
    env = {**os.environ, "AWS_ENDPOINT_URL": s3["endpoint_url"], "AWS_ACCESS_KEY_ID": s3["key"],
           "AWS_SECRET_ACCESS_KEY": s3["secret"]}
    common = ["--demos", str(demos), "--demos-sha256", sha, "--size", "48", "--encoder",
              "resnet10t", "--weights", "random", "--set", "encode.resize=48", "--set",
              "encode.crop=40", "--set", "render.workers=1", "--set", f"encode.store={url}",
              "--set", "encode.batch_size=8"]
    procs = [subprocess.Popen([sys.executable, "-m", "stages", "--data", str(tmp_path / name),
                               *common, "--set", f"encode.workers={workers}", "run", "encode"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for name, workers in (("alice", 1), ("bob", 2))]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    key = subprocess.run([sys.executable, "-m", "stages", "--data", str(tmp_path / "alice"),
                          *common, "key", "encode"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert all("encode: " in out and key[:12] in out for out, _ in outputs)
    assert is_complete(url, key, s3)
    report = verify_group(url, key, s3)
    assert report.ok, report.problems
    assert open_features(url, key, s3).read("top").shape[0] == 120


def test_a_shard_spoilt_by_another_writer_is_recomputed_before_done(
        tiny_door_demos: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving that spoils a group: writer A reads back its shard, writer B overwrites
    it and records its own checksum, then A's late record lands. Simulated here by writing a
    foreign record just before the first verification; the stage must recompute that shard."""
    import numpy as np
    import zarr

    from pipeline.runner import Runner
    from pipeline.store import writer
    from stages import STAGES
    from tests.helpers import TINY_VISION, tiny_config

    real_finalize = writer.finalize
    calls: list[int] = []

    def late_foreign_record(root_url: str, key: str, storage_options: Any = None) -> Any:
        calls.append(1)
        if len(calls) == 1:
            record = zarr.open_array(root_url, path=f"{key}/_shard_sha256/top", mode="r+")
            record[0] = np.full(32, 7, dtype=np.uint8)
        return real_finalize(root_url, key, storage_options)

    monkeypatch.setattr(writer, "finalize", late_foreign_record)
    logs: list[str] = []
    result = Runner(tiny_config(tiny_door_demos, **TINY_VISION), STAGES, tmp_path,
                    log=logs.append).run("encode")
    assert len(calls) == 2 and any("recomputing the shards that fail" in m for m in logs)
    assert result.summary["shards_written"] == 2  # shard 0 twice
    assert verify_group(str(tmp_path / "features.zarr"), result.key).ok
