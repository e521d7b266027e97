"""Vision rollout throughput against the limit set by the cost of rendering and encoding a frame.

    python bench/rollout.py --encoder resnet34 --precision bf16 --sizes 256,84 --envs 8 --steps 25

For each frame size, in one run and on one device:
- render: core-seconds per frame of the envs stepping and rendering alone (one process, no
  encoder; process CPU time, which counts the software rasteriser's threads too);
- encode: core-seconds per frame of the encoder alone at the sampler's batch size (one group's
  frames), one torch thread on the CPU (its most efficient use of a core) or the device's time;
- limit: what the machine could do if every core always had work: on the CPU
  ``cores / (render + encode)`` samples/s; with the encoder on CUDA ``min(cores / render,
  1 / encode)``;
- samplers: samples/s (env steps, one camera) and the ratio to the limit of the default layout
  (`vision_layout`: on the CPU one batch per step with a render worker per core; with CUDA two
  groups of envs stepped alternately, so encoding one group overlaps rendering the other), the
  other of those two layouts, and RRL-style one env with frame-at-a-time encoding. Each line shows where the main process's
  time went (encoding, waiting for the render workers, the rest: policy and loop) and the
  core-seconds the sampler used per sample, to set against render + encode: what is above it
  is overhead (spinning threads, pickling frames), and a ratio to the limit below
  (render + encode) / (cpu per sample) is cores left idle, or taken by other jobs.
Random weights: the speed of a network does not depend on its weight values. The load average
is printed before and after: other jobs on the machine take cores from every number here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from pipeline.encoders import FrozenEncoder, create_encoder
from pipeline.rl.env_backends import LocalEnvs, adroit_env, camera_view
from pipeline.rl.policy import GaussianMLPPolicy
from pipeline.rl.rollout_loop import split_slots
from pipeline.rl.vision import (
    ObsSpec,
    SamplerLayout,
    VisionSampler,
    torch_threads,
    vision_layout,
)

TASK, CAMERA = "door", "top"


def render_seconds(size: int, envs: int, steps: int) -> tuple[float, float]:
    """(core-seconds, wall seconds) per frame of `envs` envs stepping and rendering in one process."""
    backend = LocalEnvs(partial(adroit_env, TASK, cameras=(CAMERA,), width=size, height=size),
                        envs, camera_view)
    rng = np.random.default_rng(0)
    try:
        backend.reset(list(range(envs)), list(range(envs)))
        backend.step(list(range(envs)), rng.uniform(-1, 1, (envs, 28)))  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(steps):
            backend.step(list(range(envs)), rng.uniform(-1, 1, (envs, 28)))
        frames = envs * steps
        return (time.process_time() - cpu) / frames, (time.perf_counter() - wall) / frames
    finally:
        backend.close()


def encode_seconds(encoder: FrozenEncoder, size: int, batch: int, repeats: int) -> float:
    """Seconds per frame of the encoder alone on batches of `batch` frames: core-seconds on
    one torch thread on the CPU, wall seconds on CUDA."""
    frames = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    cuda = encoder.device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    with torch_threads(None if cuda else 1):
        encoder.encode(frames)  # warm-up: allocator, kernel selection
        _sync(encoder)
        start = clock()
        for _ in range(repeats):
            encoder.encode(frames)
        _sync(encoder)
    return (clock() - start) / (batch * repeats)


def _sync(encoder: FrozenEncoder) -> None:
    if encoder.device.type == "cuda":
        torch.cuda.synchronize(encoder.device)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of this process and of ``pids`` (all their threads), Linux."""
    total = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def sampler_rate(encoder: FrozenEncoder, size: int, envs: int, steps: int,
                 **layout: Any) -> tuple[float, dict[str, float]]:
    """Samples/s of a VisionSampler; seconds per phase in the main process and core-seconds
    used per sample by it and its render workers together ("cpu/sample")."""
    policy = GaussianMLPPolicy(encoder.feature_dim + 24, 28)
    with VisionSampler(TASK, encoder, ObsSpec("vision+proprio", (CAMERA,)), n_envs=envs,
                       width=size, height=size, **layout) as sampler:
        sampler.sample(policy, envs, 2, seed=0)  # warm-up: spawn workers, build envs, first kernels
        pids = [proc.pid for proc in sampler.backend.workers.procs]
        before, cpu = sampler.timings, cpu_seconds(pids)
        start = time.perf_counter()
        rollouts = sampler.sample(policy, envs, steps, seed=1)
        seconds = time.perf_counter() - start
        cpu = cpu_seconds(pids) - cpu
        spent = {k: v - before[k] for k, v in sampler.timings.items() if k != "frames"}
    spent["rest"] = max(seconds - spent["encode"] - spent["envs"], 0.0)
    samples = sum(len(r["rewards"]) for r in rollouts)
    spent["cpu/sample ms"] = 1e3 * cpu / samples
    return samples / seconds, {k: round(v, 2) for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25, help="steps per trajectory")
    parser.add_argument("--sizes", default="256,84", help="comma-separated frame sizes (pixels)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None, help="render workers (default: "
                        "the sampler's layout for this machine)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while encoding")
    parser.add_argument("--no-rrl", action="store_true", help="skip the slow RRL-style line")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    encoder = create_encoder(args.encoder, "random", args.precision, device=args.device)
    cuda = encoder.device.type == "cuda"
    layout = vision_layout(cores, cuda)
    layout = dataclasses.replace(layout, workers=args.workers or layout.workers,
                                 encode_threads=args.threads or layout.encode_threads)
    # The layout the default is measured against: the other way of sharing the machine.
    other = (SamplerLayout(cores, 1, False, None) if layout.pipelined
             else SamplerLayout(max(1, cores // 2), 2, True, cores))
    batch = len(split_slots(args.envs, 2)[0])
    print(f"{args.encoder} {args.precision} on {encoder.device}, {cores} cores, {TASK}, "
          f"{args.envs} envs x {args.steps} steps; load average {os.getloadavg()[0]:.2f}")
    for size in (int(s) for s in args.sizes.split(",")):
        render, render_wall = render_seconds(size, args.envs, max(4, args.steps // 3))
        encode = encode_seconds(encoder, size, batch, max(3, args.steps // 4))
        limit = min(cores / render, 1 / encode) if cuda else cores / (render + encode)
        print(f"\n{size} px: render {1e3 * render:.1f} ms/frame core time ({1e3 * render_wall:.1f} "
              f"wall), encode {1e3 * encode:.1f} ms/frame (batch {batch}); limit {limit:.1f} "
              "samples/s")
        runs: list[tuple[str, dict[str, Any]]] = [
            (f"default ({layout.describe()})", layout.kwargs()),
            (f"other ({other.describe()})", other.kwargs())]
        if not args.no_rrl:
            runs += [("parallel envs, frame-at-a-time encode",
                      {"groups": 1, "workers": 2, "encode_batch": 1, "encode_threads": None}),
                     ("RRL-style (one env, frame-at-a-time encode)",
                      {"groups": 1, "workers": 1, "encode_batch": 1, "encode_threads": None})]
        rates = {}
        for name, kwargs in runs:
            envs = 1 if name.startswith("RRL") else args.envs
            rates[name], spent = sampler_rate(encoder, size, envs, args.steps, **kwargs)
            print(f"  {name:<52} {rates[name]:6.1f} samples/s  {rates[name] / limit:5.2f} of "
                  f"limit  {spent}")
        if not args.no_rrl:
            print(f"  default / RRL-style: {rates[runs[0][0]] / rates[runs[-1][0]]:.1f}x")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
