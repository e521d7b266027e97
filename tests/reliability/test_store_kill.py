"""Kill -9 during encode: a dask worker of an external cluster, or the encode process itself.

Either the run still completes correctly, or a re-run resumes; both end in a verified group that
is byte-identical to one encoded without interruption. Real processes, real SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import PipelineConfig
from pipeline.store import features as fs
from pipeline.store.verify import verify_group
from stages import STAGES
from tests.helpers import kill_group

pytestmark = [pytest.mark.slow, pytest.mark.gl]

VENV_BIN = Path(sys.executable).parent
CAMERAS = ("top", "fixed")
# 300 frames per camera: two row tasks each, one shard each (the stage's shards hold 8192 rows).
OVERRIDES = {"env.width": "64", "env.height": "64", "env.cameras": ",".join(CAMERAS),
             "render.workers": "1", "encode.encoder": "resnet10t", "encode.weights": "random",
             "encode.resize": "64", "encode.crop": "56", "encode.workers": "2",
             "encode.batch_size": "4"}
_ENCODE = """
import json, sys
from pipeline.config import PipelineConfig
from pipeline.runner import Runner
from stages import STAGES

if __name__ == "__main__":
    overrides, data = json.loads(sys.argv[1]), sys.argv[2]
    result = Runner(PipelineConfig().with_overrides(overrides), STAGES, data).run("encode")
    print("ENCODED", json.dumps(result.summary.get("shards_written")))
"""


def encode_process(data: Path, overrides: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Its own session, so killing the group takes its LocalCluster's workers too.
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-c", _ENCODE, json.dumps(overrides), str(data)],
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def encode(data: Path, overrides: dict[str, str], log: Path) -> int:
    proc = encode_process(data, overrides, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    return int(json.loads(log.read_text().rsplit("ENCODED ", 1)[1].splitlines()[0]) or 0)


def group_files(data: Path, key: str) -> dict[str, bytes]:
    base = data / "features.zarr" / key
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.relative_to(base).parts[0] in (*CAMERAS, "_shard_sha256")}


def encode_key(overrides: dict[str, str], data: Path) -> str:
    from pipeline.runner import Runner

    return Runner(PipelineConfig().with_overrides(overrides), STAGES, data).key("encode")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path, Path]:
    """(overrides, a workspace with the render done, the same after an uninterrupted encode)."""
    from pipeline.runner import Runner
    from tests.conftest import synthetic_door_demos, write_demo_pickle

    base = tmp_path_factory.mktemp("kill")
    demos = base / "door-v0_demos.pickle"
    sha = write_demo_pickle(demos, synthetic_door_demos(n=2, steps=150))
    overrides = {**OVERRIDES, "demos.path": str(demos), "demos.sha256": sha}
    rendered = base / "rendered"
    Runner(PipelineConfig().with_overrides(overrides), STAGES, rendered,
           log=lambda m: None).run("render")
    reference = base / "reference"
    shutil.copytree(rendered, reference)
    assert encode(reference, overrides, base / "reference.log") == 2
    return overrides, rendered, reference


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    """An external scheduler and two worker processes (no nanny: a killed worker stays dead)."""
    info = tmp_path / "scheduler.json"
    log = (tmp_path / "cluster.log").open("ab")
    procs = [subprocess.Popen([str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                              stdout=log, stderr=subprocess.STDOUT)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, "no scheduler"
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        workers = {}
        for name in ("w0", "w1"):
            workers[name] = subprocess.Popen(
                [str(VENV_BIN / "dask"), "worker", address, "--name", name, "--nthreads", "1",
                 "--no-nanny", "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT)
            procs.append(workers[name])
        yield address, workers
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait()
        log.close()


def test_a_worker_killed_mid_encode_still_ends_in_an_identical_verified_group(
        setup: tuple[dict[str, str], Path, Path], cluster: tuple[str, dict[str, Any]],
        tmp_path: Path) -> None:
    from distributed import Client

    overrides, rendered, reference = setup
    address, workers = cluster
    data = tmp_path / "data"
    shutil.copytree(rendered, data)
    key = encode_key(overrides, data)
    external = {**overrides, "encode.scheduler": address}
    log = tmp_path / "encode.log"
    with Client(address, timeout=60) as watcher:
        watcher.wait_for_workers(2, timeout=120)
        names = {addr: w["name"] for addr, w in watcher.scheduler_info()["workers"].items()}
        proc = encode_process(data, external, log)
        killed = None
        deadline = time.monotonic() + 300
        while killed is None:  # kill the first worker seen computing rows, mid-task
            assert proc.poll() is None, "encode ended before any row task ran:\n" + log.read_text()
            assert time.monotonic() < deadline, "no row task ever ran"
            for addr, keys in watcher.processing().items():
                if any(str(k).startswith("rows-") for k in keys):
                    killed = names[addr]
                    os.kill(workers[killed].pid, signal.SIGKILL)
                    break
            time.sleep(0.01)
        code = proc.wait(timeout=600)
    assert workers[killed].wait(timeout=10) == -signal.SIGKILL
    print(f"worker {killed} killed mid-task; the encode "
          f"{'completed on the other worker' if code == 0 else 'failed and is re-run'}")
    if code != 0:  # the run may fail; then a re-run on the surviving worker resumes
        assert not fs.is_complete(str(data / "features.zarr"), key)
        encode(data, external, log)
    report = verify_group(str(data / "features.zarr"), key)
    assert report.ok and report.shards_verified == 2 and report.zero_rows == {}
    assert group_files(data, key) == group_files(reference, key)


def test_the_encode_process_killed_mid_run_resumes_to_an_identical_verified_group(
        setup: tuple[dict[str, str], Path, Path], tmp_path: Path) -> None:
    overrides, rendered, reference = setup
    data = tmp_path / "data"
    shutil.copytree(rendered, data)
    key = encode_key(overrides, data)
    root = data / "features.zarr"
    first_record = root / key / "_shard_sha256" / CAMERAS[0] / "c" / "0" / "0"
    log = tmp_path / "encode.log"
    proc = encode_process(data, overrides, log)
    try:
        deadline = time.monotonic() + 300
        while not first_record.exists():  # the first camera is done, the second is not
            assert proc.poll() is None, "encode ended before it was killed:\n" + log.read_text()
            assert time.monotonic() < deadline, "encode never finished a shard"
            time.sleep(0.01)
    finally:
        kill_group(proc, "encode")  # no orphaned worker may keep writing while we resume
    assert not fs.is_complete(str(root), key)
    assert not (data / "encode" / key[:12] / "manifest.json").exists()
    assert encode(data, overrides, log) == 1  # only the second camera's shard
    report = verify_group(str(root), key)
    assert report.ok and report.shards_verified == 2 and report.zero_rows == {}
    assert group_files(data, key) == group_files(reference, key)
