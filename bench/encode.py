"""Encode-stage throughput against raw model forward, several layers against one, cache-hit time
and bytes per frame, for a CNN and a ViT.

    python bench/encode.py --encoders resnet34,vit_tiny_patch16_224 --frames 1024 --batch 32

Same frames, batch size and precision for both numbers:
- raw forward: the model alone on already-preprocessed tensors, one process, all cores;
- encode stage: read frames from the episode file, preprocess, forward, write the Zarr store,
  on a dask LocalCluster (workers warmed: models built), timed until the store is finalised.
- 3 layers / 1 layer: the encode stage's time with three stored features (``--layers``; by
  default two intermediate layers and pre_logits, from one forward pass: ResNet stages 2,3, ViT
  blocks -4,-1) over its time with the default one (target <= 1.2).
Frames come from the newest rendered episode file under data/render/, else ``--episodes``.
Each encoder's own input (timm's data config) unless ``--resize/--crop`` are given.
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
from pipeline.encoders import encoder_spec
from pipeline.encoders.encode_job import (
    EncoderParams,
    Placement,
    ShardEncoder,
    cached_encoder,
    encoder_devices,
    placement,
    threads_per_worker,
)
from pipeline.encoders.preprocess import apply_input
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


def params_for(args: argparse.Namespace, encoder: str, layers: tuple[str, ...] = (),
               device: str = "cpu") -> EncoderParams:
    spec = encoder_spec(encoder)
    size = spec.input.override(args.resize, args.crop)
    return EncoderParams(encoder, "random", args.precision, size.resize, size.crop, device=device,
                         layers=layers)


def raw_forward(args: argparse.Namespace, encoder_name: str, frames: np.ndarray,
                place: Placement) -> float:
    encoder = cached_encoder(params_for(args, encoder_name, device=place.device))
    x = apply_input(torch.from_numpy(frames[: args.batch].copy()), encoder.input, encoder.device)
    iters = max(2, len(frames) // args.batch)
    return forward_throughput(encoder, x.shape[0], iters) if x.shape[0] == args.batch else 0.0


def stage_throughput(args: argparse.Namespace, encoder_name: str, episodes: Path, rows: int,
                     place: Placement, layers: tuple[str, ...] = ()
                     ) -> tuple[float, float, list[str]]:
    with EpisodeReader(episodes) as reader:
        camera, ends = reader.cameras[0], reader.episode_ends
    params = params_for(args, encoder_name, layers, place.worker_device)
    built = cached_encoder(replace(params, device=place.device))
    threads = threads_per_worker(place.workers)
    with tempfile.TemporaryDirectory() as tmp, \
            get_client(workers=place.workers, gpus=place.gpus) as client:
        client.run(cached_encoder, params, threads)  # warm: each worker builds its model once
        ends = np.append(ends[ends < rows], rows)  # the first `rows` frames, as episodes
        spec = FeatureStoreSpec("b" * 64, (camera,), built.feature_dim, rows, ends, {},
                                features=built.features if layers else None)
        job = ShardEncoder(str(episodes), camera, params, args.batch, threads)
        start = time.perf_counter()
        write_shards_distributed(client, tmp, spec, camera, job, progress=False, rows_per_task=256,
                                 resources=place.resources)
        finalize(tmp, spec.key)
        seconds = time.perf_counter() - start
        bytes_per_frame = open_features(tmp, spec.key).bytes_per_frame()
        ran = sorted({d for found in client.run(encoder_devices).values() for d in found})
    return rows / seconds, bytes_per_frame, ran


def default_layers(encoder: str) -> tuple[str, ...]:
    """Two intermediate layers and the head's feature: ResNet/ConvNeXt stages, ViT blocks."""
    from pipeline.encoders.features import is_token_model

    module = cached_encoder(EncoderParams(encoder, "random", "fp32", *encoder_spec(encoder)
                                          .input_size)).module
    return ("-4", "-1", "pre_logits") if is_token_model(module) else ("2", "3", "pre_logits")


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
    parser.add_argument("--encoders", default="resnet34,vit_tiny_patch16_224",
                        help="comma-separated encoder names (any timm model)")
    parser.add_argument("--encoder", default="resnet34", help="for the cache-hit run")
    parser.add_argument("--layers", default=None,
                        help="the multi-layer encode's layers (default: see default_layers; "
                             "'none' skips the multi-layer run)")
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--resize", type=int, default=None)
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--episodes", type=Path, default=None)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-cache-hit", action="store_true", help="skip the cache-hit run")
    args = parser.parse_args()
    place = placement(args.device, args.workers, remote=False)
    episodes = args.episodes or newest_episodes()
    with EpisodeReader(episodes) as reader:
        rows = min(args.frames, reader.num_rows)
        frames = reader.read_rows(reader.cameras[0], 0, rows)
    for name in args.encoders.split(","):
        encoder = cached_encoder(params_for(args, name))
        print(f"{name} {args.precision} batch {args.batch}, {rows} frames of {frames.shape[1:]} "
              f"from {episodes}, input {encoder.input.describe()}, {os.cpu_count()} cores, "
              f"device {place.device}")
        raw = raw_forward(args, name, frames, place)
        print(f"  raw forward:        {raw:8.1f} frames/s (one process on {place.device}, "
              f"{torch.get_num_threads()} threads)")
        stage, bpf, ran = stage_throughput(args, name, episodes, rows, place)
        print(f"  encode stage:       {stage:8.1f} frames/s ({place.workers} dask workers on "
              f"{', '.join(ran)}, read+preprocess+forward+write)")
        print(f"  ratio stage/raw:    {stage / raw:8.2f}   (target >= 0.8)")
        print(f"  bytes per frame:    {bpf:8.0f}   (raw fp16 would be {2 * encoder.feature_dim})")
        if args.layers == "none":
            continue
        layers = tuple(args.layers.split(",")) if args.layers else default_layers(name)
        multi, _, _ = stage_throughput(args, name, episodes, rows, place, layers)
        print(f"  3 layers / 1 layer: {stage / multi:8.2f}   (time with layers {','.join(layers)} "
              f"over the default pre_logits alone; target <= 1.2)")
    if args.no_cache_hit:
        return
    hit = cache_hit_seconds(args)
    print(f"cache-hit re-run:   {hit:8.2f} s (`rrl run encode`, whole process)" if hit is not None
          else "cache-hit re-run:   skipped (no ../shared door demos)")


if __name__ == "__main__":
    main()
