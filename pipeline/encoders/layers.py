"""Which features an encoder stores: ``encode.layers`` and ``encode.pool`` (no torch).

- ``layers`` empty (the default): the pooled pre-logits feature, named ``pre_logits``, stored as
  the camera's own array, exactly as before layers existed.
- ``layers`` set: indices into timm's ``forward_intermediates`` (ResNets: 0 is the stem, 1-4 the
  stages ``layer1``-``layer4``; ViTs: the blocks; negative indices count from the end), and
  ``pre_logits`` for the head's feature. All come from one forward pass.
- Each intermediate layer is pooled: CNN feature maps by their spatial mean (``avg``); ViT tokens
  by the class token (``cls``), the mean of the patch tokens (``avg``) or both (two features).
  ``pool=auto`` is ``avg`` for CNNs and ``cls`` for ViTs that have a class token.

Feature names: ``layer<index>`` as written (``layer3``, ``layer-1``), with ``.cls``/``.avg`` for
token models (``layer-1.cls``), and ``pre_logits``. They name the stored arrays
(``<camera>@<feature>``; see pipeline/store/features.py) and what ``FEATURES=`` selects.
"""

from __future__ import annotations

from pipeline.config import POOLS
from pipeline.errors import ConfigError

PRE_LOGITS = "pre_logits"


def parse_layers(layers: tuple[str, ...]) -> list[int | str]:
    """``("2", "-1", "pre_logits")`` -> ``[2, -1, "pre_logits"]``; bad or repeated tokens fail."""
    out: list[int | str] = []
    for token in layers:
        token = token.strip()
        try:
            value: int | str = PRE_LOGITS if token == PRE_LOGITS else int(token)
        except ValueError:
            raise ConfigError(f"invalid encode.layers entry {token!r}: expected an integer index "
                              f"into timm's forward_intermediates (negative: from the end) or "
                              f"{PRE_LOGITS!r}. Fix: e.g. encode.layers=2,3,4 (ResNet stages) or "
                              "-4,-1 (ViT blocks)") from None
        if value in out:
            raise ConfigError(f"encode.layers names {token!r} twice. Fix: list each layer once")
        out.append(value)
    return out


def feature_names(layers: tuple[str, ...], pool: str, tokens: bool, class_token: bool
                  ) -> list[str]:
    """The stored features of ``layers`` for a model with (``tokens``) or without token output."""
    if not layers:
        return [PRE_LOGITS]
    if pool not in POOLS:
        raise ConfigError(f"invalid encode.pool={pool!r}: expected one of {', '.join(POOLS)}")
    if not tokens and pool in ("cls", "both"):
        raise ConfigError(f"encode.pool={pool} needs a model with tokens (a ViT); CNN feature "
                          "maps are pooled by their spatial mean. Fix: encode.pool=avg or auto")
    if tokens and pool in ("cls", "both") and not class_token:
        raise ConfigError(f"encode.pool={pool}: this ViT has no class token. Fix: "
                          "encode.pool=avg or auto")
    pools = {"auto": ["cls" if class_token else "avg"] if tokens else [""],
             "avg": ["avg"] if tokens else [""], "cls": ["cls"], "both": ["cls", "avg"]}[pool]
    names = []
    for layer in parse_layers(layers):
        if layer == PRE_LOGITS:
            names.append(PRE_LOGITS)
            continue
        names += [f"layer{layer}" + (f".{p}" if p else "") for p in pools]
    return names


def feature_choice(library: str, layers: tuple[str, ...], pool: str) -> dict[str, object]:
    """What ``encode.layers``/``pool`` add to the encode key: nothing when unset (old keys)."""
    if not layers:
        return {}
    parse_layers(layers)
    if library != "timm":
        raise ConfigError(f"encode.layers needs a timm model; this encoder ({library}) gives one "
                          "feature. Fix: leave encode.layers unset")
    return {"layers": list(layers), "pool": pool}


def select_features(stored: list[str], wanted: tuple[str, ...], where: str) -> list[str]:
    """``FEATURES=`` against a group's stored features: exact names, or a layer index (``3``,
    ``layer3``) standing for all of that layer's pooled features; empty: every stored one."""
    if not wanted:
        return list(stored)
    out: list[str] = []
    for token in wanted:
        token = token.strip()
        base = token if token.startswith("layer") or token == PRE_LOGITS else f"layer{token}"
        found = [s for s in stored if s == base or s.startswith(f"{base}.")]
        if not found:
            raise ConfigError(f"FEATURES: {token!r} is not stored in {where}, which holds "
                              f"{', '.join(stored)}. Fix: choose among those, or encode the layer "
                              "with encode.layers")
        out += [f for f in found if f not in out]
    return out
