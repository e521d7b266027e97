"""Stored features against an independent timm forward with timm's own transform.

    python bench/zoo_check.py --data data --key <encode key> --frames 64

For a group encoded with random weights (timm's init, seed 0, as the encoder builds it): timm's
model, ``timm.data.create_transform(**resolve_model_data_config(model))`` applied to each frame
as a PIL image, the model's pooled pre-logits feature (and each stored layer, pooled as the store
says). Prints, per stored feature, the largest absolute difference, the largest difference
relative to the feature's largest magnitude, and the smallest cosine over the sampled frames.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    from pipeline.encoders import encoder_spec
    from pipeline.encoders.features import LayerFeatures, count_layers
    from pipeline.store.episodes import EpisodeReader
    from pipeline.store.features import array_name, open_features

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--key", required=True, help="the encode key (rrl key encode)")
    parser.add_argument("--frames", type=int, default=64)
    args = parser.parse_args()
    store = open_features(str(args.data / "features.zarr"), args.key)
    attrs = store.attrs
    if attrs["weights"]["kind"] != "random":
        raise SystemExit("this check rebuilds timm's random init; the group has other weights")
    manifest = json.loads((args.data / "encode" / args.key[:12] / "manifest.json").read_text())
    stage = attrs.get("episodes_stage", "render")
    upstream = manifest["upstream"][stage]
    episodes = args.data / stage / upstream[:12] / "episodes.hdf5"
    camera = store.cameras[0]
    with EpisodeReader(episodes) as reader:
        rows = np.linspace(0, reader.num_rows - 1, min(args.frames, reader.num_rows)).astype(int)
        frames = np.stack([reader.read_rows(camera, int(r), int(r) + 1)[0] for r in rows])
    torch.manual_seed(0)
    tag = encoder_spec(attrs["encoder"]).pretrained_tag
    model = timm.create_model(tag, pretrained=False, num_classes=0).eval()
    cfg = resolve_model_data_config(model)
    transform = create_transform(**cfg)
    x = torch.stack([transform(Image.fromarray(f)) for f in frames])
    layers = tuple(attrs.get("layers", ()))
    head = LayerFeatures(model, layers, attrs.get("pool", "auto"),
                         count_layers(model, x.shape[-1], tag), tag) if layers else None
    with torch.inference_mode():
        parts = head.parts(x) if head is not None else [model(x)]
    names = head.names if head is not None else ["pre_logits"]
    print(f"{attrs['encoder']} ({tag}), {len(rows)} frames of {camera}, timm transform {cfg}")
    for name, ref in zip(names, parts, strict=True):
        stored = np.asarray(store.group[array_name(camera, name)][rows.tolist()], np.float32)
        ref_np = ref.numpy()
        diff = np.abs(stored - ref_np)
        cos = (stored * ref_np).sum(1) / (np.linalg.norm(stored, axis=1)
                                          * np.linalg.norm(ref_np, axis=1) + 1e-12)
        print(f"  {name:<14} width {ref_np.shape[1]:>4}: max |diff| {diff.max():.2e}, "
              f"relative to max |feature| {diff.max() / np.abs(ref_np).max():.2e}, "
              f"min cosine {cos.min():.6f}")


if __name__ == "__main__":
    main()
