"""Human-readable feature-store summaries (``rrl inspect`` and the encode stage's report)."""

from __future__ import annotations

from typing import Any

from pipeline.outputs import weights_label
from pipeline.store.features import DAMAGED_FIX, FeatureStore


def format_summary(s: dict[str, Any]) -> str:
    """Several lines: where the store is, what made it, its shapes and its size."""
    lines = [
        f"feature store: {s['location']}",
        f"  key        {s['key']}",
        f"  encoder    {s['encoder']} ({s.get('precision')}), {weights_label(s['weights'])}",
        f"  episodes   {s['episodes']} ({s['rows']} frames), from {s.get('episodes_stage') or 'render'} {str(s['episodes_key'])[:12]}",
    ]
    for cam, info in s["cameras"].items():
        lines.append(f"  {cam:<10} {info['dtype']} {tuple(info['shape'])}, chunks {tuple(info['chunks'])}, "
                     f"shards {tuple(info['shards'])}")
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
    if not r["ok"]:
        lines.append(f"Fix: {DAMAGED_FIX}")
    return "\n".join(lines)


def summary(store: FeatureStore) -> dict[str, Any]:
    """What `rrl inspect` prints about a feature group."""
    a = store.attrs
    weights = a.get("weights") or {}
    out: dict[str, Any] = {
        "key": store.key, "location": store.location, "encoder": a.get("encoder"),
        "weights": weights, "random_weights": weights.get("kind") == "random",
        "preprocessing": a.get("preprocessing"), "precision": a.get("precision"),
        "episodes_key": a.get("episodes_key"),
        "episodes_stage": a.get("episodes_stage", "render"), "created": a.get("created"),
        "cameras": {c: {"shape": list(store.array(c).shape), "chunks": list(store.array(c).chunks),
                        "shards": list(store.array(c).shards or ()),
                        "dtype": str(store.array(c).dtype)} for c in store.cameras},
        "episodes": len(store.episode_ends), "rows": store.num_rows,
        "feature_dim": store.feature_dim, "bytes": store.nbytes_stored(),
        "bytes_per_frame": round(store.bytes_per_frame(), 1), "versions": a.get("versions"),
    }
    if out["random_weights"]:
        out["warning"] = "RANDOM WEIGHTS: these features come from an untrained encoder"
    return out
