"""What checking shards on read costs: a verified read over a raw zarr read of the same rows.

Every read of a feature group hashes the shards it touches (pipeline/store/features.py); this
prints the time of a verified ``FeatureStore.read`` over a raw ``zarr`` read, for a synthetic
100k-row store of 512-d features and for any finished group given by path and key:

    python bench/verify_read.py                                   # synthetic 100k x 512
    python bench/verify_read.py --store data/features.zarr --key <key>   # e.g. the door store
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from pipeline.store import writer
from pipeline.store.features import FeatureStoreSpec, open_features


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def synthetic_store(root: Path, rows: int, dim: int) -> str:
    key = "b" * 64
    spec = FeatureStoreSpec(key, ("top",), dim, rows, np.array([rows]), {"encoder": "bench"})
    writer.prepare_group(str(root), spec)
    rng = np.random.default_rng(0)
    for i in range(spec.num_shards):
        start, stop = spec.shard_range(i)
        writer.write_shard(str(root), key, "top", i,
                           rng.standard_normal((stop - start, dim)).astype(np.float16))
    writer.finalize(str(root), key)
    return key


def compare(root: str, key: str, repeats: int) -> None:
    group = open_features(root, key)
    for camera in group.cameras:
        raw = zarr.open_array(root, path=f"{key}/{camera}", mode="r")
        t_raw = best_of(lambda: np.asarray(raw[:]), repeats)  # noqa: B023
        # A fresh store each time: one instance checks each shard once, later reads are free.
        t_checked = best_of(lambda: open_features(root, key).read(camera), repeats)  # noqa: B023
        mb = raw.nbytes / 1e6
        print(f"{key[:12]} {camera:<8} {raw.shape[0]:>7} x {raw.shape[1]:<4} {mb:7.1f} MB  "
              f"raw read {t_raw * 1e3:7.1f} ms ({mb / t_raw:6.0f} MB/s)  verified "
              f"{t_checked * 1e3:7.1f} ms  ratio {t_checked / t_raw:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", help="a feature store root (default: a synthetic one)")
    ap.add_argument("--key", help="the group's full key (with --store)")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.store:
        compare(args.store, args.key, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        key = synthetic_store(Path(tmp), args.rows, args.dim)
        compare(tmp, key, args.repeats)


if __name__ == "__main__":
    main()
