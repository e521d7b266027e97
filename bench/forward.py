"""Raw model forward throughput (images/s) on preprocessed random 224x224 input.

    python bench/forward.py --encoder resnet34 --batch 8 --precision bf16 --iters 10

Weights default to random: throughput does not depend on their values, and this works offline.
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.encoders import FrozenEncoder, create_encoder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_throughput(encoder: FrozenEncoder, batch: int, iters: int) -> float:
    """Images per second of `encoder.forward_preprocessed` at `batch`, after one warm-up call."""
    x = torch.randn(batch, 3, encoder.crop, encoder.crop, device=encoder.device)
    encoder.forward_preprocessed(x)  # warm-up: allocator, oneDNN/cuDNN kernel selection
    _sync(encoder.device)
    start = time.perf_counter()
    for _ in range(iters):
        encoder.forward_preprocessed(x)
    _sync(encoder.device)
    return batch * iters / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet34", help="any encoder name (rrl encoders)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--iters", type=int, default=10)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--weights", default="random", help="random, pretrained or a file")
    parser.add_argument("--crop", type=int, default=224)
    args = parser.parse_args(argv)
    encoder = create_encoder(
        args.encoder, args.weights, precision=args.precision, resize=args.crop, crop=args.crop,
        device=args.device,
    )
    rate = forward_throughput(encoder, args.batch, args.iters)
    print(
        f"{args.encoder} {args.precision} batch={args.batch} device={encoder.device} "
        f"threads={torch.get_num_threads()}: {rate:.1f} images/s"
    )


if __name__ == "__main__":
    main()
