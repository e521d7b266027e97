"""An S3 endpoint that dies in the middle of `rrl push` (issue 18, item 5): one line with the
fix, exit 2, no "Task exception was never retrieved" blocks from the aborted concurrent uploads,
and the local group is untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import s3fs

from pipeline.store import features as fs
from pipeline.store import writer
from pipeline.store.verify import verify_group
from tests.helpers import moto_server

pytest.importorskip("moto.server")
ROOT = Path(__file__).resolve().parents[2]
KEY = "7" * 64
ROWS, D = 8192, 8  # 512 shards of 16 rows: about a thousand objects, several seconds of uploads


def build_group(store: Path) -> None:
    spec = fs.FeatureStoreSpec(KEY, ("top",), D, ROWS, np.array([ROWS // 2, ROWS]),
                               {"encoder": "tiny"}, rows_per_chunk=16, chunks_per_shard=1)
    writer.prepare_group(str(store), spec)
    rows = np.cos(np.arange(ROWS * D, dtype=np.float32).reshape(ROWS, D) * 0.01)
    for s in range(spec.num_shards):
        start, stop = spec.shard_range(s)
        writer.write_shard(str(store), KEY, "top", s, rows[start:stop])
    writer.finalize(str(store), KEY)


def test_an_endpoint_that_dies_mid_push_is_one_line_with_a_fix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_group(data / "features.zarr")
    with moto_server("shared") as (server, options):
        if server is None:
            pytest.skip("moto_server could not start")
        env = {**os.environ, "AWS_ENDPOINT_URL": options["endpoint_url"],
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        push = subprocess.Popen([sys.executable, "-m", "stages", "--data", str(data), "push", KEY,
                                 "s3://shared/team"], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        bucket = s3fs.S3FileSystem(**options, skip_instance_cache=True)
        deadline = time.monotonic() + 120
        while not bucket.find("shared/team", refresh=True):  # the first objects have arrived
            assert push.poll() is None, push.communicate()
            assert time.monotonic() < deadline, "the push sent nothing"
            time.sleep(0.05)
        os.kill(server.pid, signal.SIGKILL)
        out, err = push.communicate(timeout=300)
    assert push.returncode == 2, (out, err[-3000:])
    assert "Traceback" not in err and "Task exception was never retrieved" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("copy ")]
    assert len(lines) == 1, err  # the progress bar's lines aside, one line: the error
    assert lines[0].startswith("error: the object store could not be reached") and \
        "Fix:" in lines[0] and "run the same command again to resume" in lines[0], err
    assert verify_group(str(data / "features.zarr"), KEY).ok  # nothing local was lost
