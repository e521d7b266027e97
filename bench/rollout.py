"""Vision rollout throughput: the batched sampler against RRL-style per-step, per-frame encoding.

    python bench/rollout.py --encoder resnet34 --envs 8 --steps 25

- batched: `envs` envs stepping and rendering in `workers` processes, the main process encoding
  all frames of a step as one batch (this project's VisionSampler);
- RRL-style: one env at a time, each frame encoded on its own (batch 1), as RRL's sampler did;
- in between: the same parallel envs but per-frame encoding, to separate the two effects.
Samples/s counts env steps (one frame per step with one camera). Random weights: the speed of a
network does not depend on its weight values. Runs on CUDA when present.
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.encoders import create_encoder
from pipeline.rl.policy import GaussianMLPPolicy
from pipeline.rl.vision import ObsSpec, VisionSampler


def samples_per_second(encoder, args: argparse.Namespace, envs: int, workers: int,  # type: ignore[no-untyped-def]
                       encode_batch: int | None) -> tuple[float, dict[str, float]]:
    spec = ObsSpec("vision+proprio", ("top",))
    policy = GaussianMLPPolicy(encoder.feature_dim + 24, 28)
    with VisionSampler("door", encoder, spec, n_envs=envs, workers=workers, width=args.size,
                       height=args.size, encode_batch=encode_batch) as sampler:
        sampler.sample(policy, envs, 2, seed=0)  # warm-up: spawn workers, build envs, first kernels
        before = sampler.timings
        start = time.perf_counter()
        rollouts = sampler.sample(policy, envs, args.steps, seed=1)
        seconds = time.perf_counter() - start
        spent = {k: v - before[k] for k, v in sampler.timings.items()}
    spent["policy+loop"] = max(seconds - spent["encode"] - spent["envs"], 0.0)
    steps = sum(len(r["rewards"]) for r in rollouts)
    return steps / seconds, {k: round(v, 1) for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25, help="steps per trajectory")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    encoder = create_encoder(args.encoder, "random", args.precision, device=args.device)
    print(f"{args.encoder} {args.precision} on {args.device}, {args.size}px frames, door, "
          f"{args.envs} envs x {args.steps} steps")
    batched, t1 = samples_per_second(encoder, args, args.envs, args.workers, None)
    print(f"batched ({args.envs} envs, {args.workers} render workers, one encode per step): "
          f"{batched:7.1f} samples/s  {t1}")
    between, t2 = samples_per_second(encoder, args, args.envs, args.workers, 1)
    print(f"parallel envs, per-frame encode:                     {between:7.1f} samples/s  {t2}")
    rrl, t3 = samples_per_second(encoder, args, 1, 1, 1)
    print(f"RRL-style (one env, per-frame encode):               {rrl:7.1f} samples/s  {t3}")
    print(f"ratio batched / RRL-style: {batched / rrl:.2f}x   (target >= 5x)")


if __name__ == "__main__":
    main()
