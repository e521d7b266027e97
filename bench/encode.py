"""Encode-stage throughput against raw model forward, cache-hit time and bytes per frame.

    python bench/encode.py --encoder resnet34 --frames 1024 --batch 32 --precision fp32

Same frames, batch size and precision for both numbers:
- raw forward: the model alone on already-preprocessed tensors, one process, all cores;
- encode stage: read frames from the episode file, preprocess, forward, write the Zarr store,
  on a dask LocalCluster (workers warmed: models built), timed until the store is finalised.
Frames come from the newest rendered episode file under data/render/, else ``--episodes``.
Both numbers are on one device (``--device``, default auto: CUDA when present): the stage then
runs one dask worker per GPU, as the encode stage does, and prints where its workers encoded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from forward import forward_throughput  # type: ignore[import-not-found]

from pipeline.distributed import get_client
from pipeline.encode_job import (
    EncoderParams,
    Placement,
    ShardEncoder,
    cached_encoder,
    encoder_devices,
    placement,
    threads_per_worker,
)
from pipeline.encoders import create_encoder
from pipeline.encoders.preprocess import preprocess
from pipeline.store.episodes import EpisodeReader
from pipeline.store.features import FeatureStoreSpec, open_features
from pipeline.store.shards import write_shards_distributed
from pipeline.store.writer import finalize

ROOT = Path(__file__).resolve().parents[1]
SHARED_DEMOS = ROOT.parent / "shared/data/adroit-demos/door-v0_demos.pickle"


def newest_episodes() -> Path:
    found = sorted((ROOT / "data/render").glob("*/episodes.hdf5"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit("no rendered episodes: run `make render` first or pass --episodes")
    return found[-1]


def raw_forward(args: argparse.Namespace, frames: np.ndarray, place: Placement) -> float:
    encoder = create_encoder(args.encoder, "random", args.precision, args.resize, args.crop,
                             place.device)
    x = preprocess(torch.from_numpy(frames[: args.batch].copy()), args.resize, args.crop, encoder.device)
    iters = max(2, len(frames) // args.batch)
    return forward_throughput(encoder, x.shape[0], iters) if x.shape[0] == args.batch else 0.0


def stage_throughput(args: argparse.Namespace, episodes: Path, rows: int,
                     place: Placement) -> tuple[float, float, list[str]]:
    with EpisodeReader(episodes) as reader:
        camera, ends = reader.cameras[0], reader.episode_ends
    params = EncoderParams(args.encoder, "random", args.precision, args.resize, args.crop,
                           device=place.worker_device)
    dim = cached_encoder(replace(params, device=place.device)).feature_dim
    threads = threads_per_worker(place.workers)
    with tempfile.TemporaryDirectory() as tmp, \
            get_client(workers=place.workers, gpus=place.gpus) as client:
        client.run(cached_encoder, params, threads)  # warm: each worker builds its model once
        ends = np.append(ends[ends < rows], rows)  # the first `rows` frames, as episodes
        spec = FeatureStoreSpec("b" * 64, (camera,), dim, rows, ends, {})
        job = ShardEncoder(str(episodes), camera, params, args.batch, threads)
        start = time.perf_counter()
        write_shards_distributed(client, tmp, spec, camera, job, progress=False, rows_per_task=256,
                                 resources=place.resources)
        finalize(tmp, spec.key)
        seconds = time.perf_counter() - start
        bytes_per_frame = open_features(tmp, spec.key).bytes_per_frame()
        ran = sorted({d for found in client.run(encoder_devices).values() for d in found})
    return rows / seconds, bytes_per_frame, ran


def cache_hit_seconds(args: argparse.Namespace) -> float | None:
    """Wall time of a second `rrl run encode` on a tiny pipeline (one short demo)."""
    if not SHARED_DEMOS.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "stages", "--data", tmp, "--demos", str(SHARED_DEMOS),
               "--max-demos", "1", "--size", "64", "--encoder", args.encoder, "--weights", "random",
               "--set", "render.max_steps=40", "--set", "encode.resize=64", "--set", "encode.crop=56",
               "run", "encode"]
        subprocess.run(cmd, check=True, capture_output=True)
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        assert "cache hit" in out.stdout, out.stdout
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--episodes", type=Path, default=None)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-cache-hit", action="store_true",
                        help="skip the cache-hit re-run (two tiny `rrl run encode` processes)")
    args = parser.parse_args()
    place = placement(args.device, args.workers, remote=False)
    episodes = args.episodes or newest_episodes()
    with EpisodeReader(episodes) as reader:
        rows = min(args.frames, reader.num_rows)
        frames = reader.read_rows(reader.cameras[0], 0, rows)
    print(f"{args.encoder} {args.precision} batch {args.batch}, {rows} frames of {frames.shape[1:]} "
          f"from {episodes}, {os.cpu_count()} cores, device {place.device}")
    raw = raw_forward(args, frames, place)
    print(f"raw forward:        {raw:8.1f} frames/s (one process on {place.device}, "
          f"{torch.get_num_threads()} threads)")
    stage, bpf, ran = stage_throughput(args, episodes, rows, place)
    print(f"encode stage:       {stage:8.1f} frames/s ({place.workers} dask workers encoding on "
          f"{', '.join(ran)}, read+preprocess+forward+write)")
    print(f"ratio stage/raw:    {stage / raw:8.2f}   (target >= 0.8)")
    print(f"bytes per frame:    {bpf:8.0f}   (target <= 1100 for 512-d; raw fp16 would be "
          f"{2 * cached_encoder(EncoderParams(args.encoder, 'random', args.precision, args.resize, args.crop)).feature_dim})")
    if args.no_cache_hit:
        return
    hit = cache_hit_seconds(args)
    print(f"cache-hit re-run:   {hit:8.2f} s (`rrl run encode`, whole process)" if hit is not None
          else "cache-hit re-run:   skipped (no ../shared door demos)")


if __name__ == "__main__":
    main()
