"""What `rrl encoders` prints: the aliases, or timm's pretrained tags matching a search, each with
its input config and the width of every feature it can store (pre_logits and each layer index)."""

from __future__ import annotations

from typing import Any

from pipeline.encoders.registry import encoder_spec, list_encoders
from pipeline.encoders.timm_zoo import layer_widths
from pipeline.encoders.timm_zoo import search as timm_search


def describe(name: str) -> list[str]:
    """Two or three lines about one encoder: source, input, feature widths by layer."""
    spec = encoder_spec(name)
    tag = spec.pretrained_tag or "no pretrained weights (make vae, then WEIGHTS=<its key>)"
    head = f"{name:<28} {spec.library}: {tag}" if name != spec.pretrained_tag else \
        f"{name:<28} {spec.library}"
    lines = [head, f"    input    {spec.input.describe()}"]
    if spec.library != "timm":
        width = spec.feature_dim
        lines.append(f"    features pre_logits {width}" + ("" if width else " (from the file)"))
        return lines

    widths: dict[str, Any] = layer_widths(spec)
    if "error" in widths:
        lines.append(f"    features (widths not measurable here: {widths['error']})")
        return lines
    layers = widths.get("layers")
    text = f"    features pre_logits {widths['pre_logits']}"
    if layers:
        kind = "blocks (tokens: cls/avg pooled)" if widths.get("tokens") else "stages (avg pooled)"
        text += f"; layers 0-{len(layers) - 1} {kind}: " + " ".join(
            f"{i}:{w}" for i, w in enumerate(layers))
    lines.append(text)
    return lines


def listing(search: str | None = None, limit: int = 50) -> list[str]:
    """The aliases (no search), or up to ``limit`` of timm's pretrained tags matching ``search``."""
    if search is None:
        names = list_encoders()
        lines = ["registered names (any timm model name or pretrained tag works as ENCODER= "
                 "too; `rrl encoders --search WORD` lists timm's):"]
    else:
        found = timm_search(search)
        names = found[:limit]
        more = f", showing {limit} (--limit)" if len(found) > limit else ""
        lines = [f"timm pretrained tags matching {search!r}: {len(found)}{more}"]
    for name in names:
        lines += describe(name)
    return lines
