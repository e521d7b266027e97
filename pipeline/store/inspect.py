"""Human-readable feature-store summaries (``rrl inspect`` and the encode stage's report)."""

from __future__ import annotations

from typing import Any


def _weights_text(weights: dict[str, Any]) -> str:
    kind = weights.get("kind", "?")
    if kind == "random":
        return "RANDOM (untrained encoder: features carry no ImageNet knowledge)"
    if kind == "file":
        return f"file sha256 {str(weights.get('sha256', ''))[:16]}"
    return f"pretrained {weights.get('tag', '')}"


def format_summary(s: dict[str, Any]) -> str:
    """Several lines: where the store is, what made it, its shapes and its size."""
    lines = [
        f"feature store: {s['location']}",
        f"  key        {s['key']}",
        f"  encoder    {s['encoder']} ({s.get('precision')}), weights {_weights_text(s['weights'])}",
        f"  episodes   {s['episodes']} ({s['rows']} frames), from {s.get('episodes_stage') or 'render'} {str(s['episodes_key'])[:12]}",
    ]
    for cam, info in s["cameras"].items():
        lines.append(f"  {cam:<10} {info['dtype']} {tuple(info['shape'])}, chunks {tuple(info['chunks'])}, "
                     f"shards {tuple(info['shards'])}")
    features = s.get("features") or {}
    if len(features) > 1 or any(name != "pre_logits" for name in features):
        lines.append("  features   " + ", ".join(f"{n} ({w})" for n, w in features.items())
                     + " per camera (FEATURES= chooses)")
    lines.append(f"  size       {s['bytes'] / 1e6:.2f} MB on disk, {s['bytes_per_frame']:.0f} bytes per frame")
    if s.get("warning"):
        lines.append(f"  WARNING    {s['warning']}")
    return "\n".join(lines)


def format_verify_report(r: dict[str, Any]) -> str:
    """What `rrl verify KEY` prints: the verdict, then each problem and any all-zero rows."""
    verdict = "OK" if r["ok"] else "FAILED"
    lines = [f"verify {r['location']}: {verdict}, {r['shards_verified']} of "
             f"{r['shards_total']} shards match their checksums ({r['seconds']:.2f} s)"]
    lines += [f"  problem    {p}" for p in r["problems"]]
    for cam, count in r["zero_rows"].items():
        episodes = r["zero_row_episodes"].get(cam, [])
        lines.append(f"  zero rows  {cam}: {count} all-zero feature rows, episodes "
                     f"{episodes[:10]}{' ...' if len(episodes) > 10 else ''}")
    return "\n".join(lines)
