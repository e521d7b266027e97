"""Several layers of a timm model from one forward pass (``encode.layers``; see ``layers``).

``LayerFeatures`` wraps the model: one call of timm's ``forward_intermediates`` gives the chosen
blocks' outputs (and, for ``pre_logits``, the final features, which ``forward_head`` turns into
the head's pooled feature exactly as the model's own forward does). Each output is pooled to one
vector per frame and the vectors are concatenated in ``names`` order; the store splits them back
into one array per feature.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

import torch
from torch import nn

from pipeline.encoders.layers import PRE_LOGITS, feature_names, parse_layers
from pipeline.errors import ConfigError


def is_token_model(model: nn.Module) -> bool:
    """Whether ``forward_intermediates`` gives tokens (ViT family) rather than feature maps."""
    method = getattr(model, "forward_intermediates", None)
    return method is not None and "return_prefix_tokens" in inspect.signature(method).parameters


def has_class_token(model: nn.Module) -> bool:
    return getattr(model, "cls_token", None) is not None


def count_layers(model: nn.Module, crop: int, name: str) -> int:
    """How many indices ``forward_intermediates`` has (one forward of a blank frame)."""
    if not hasattr(model, "forward_intermediates"):
        raise ConfigError(f"encoder {name!r} has no forward_intermediates (timm's per-layer "
                          "output), so encode.layers cannot choose its layers. Fix: leave "
                          "encode.layers unset (the pooled pre-logits feature)")
    kwargs = {"output_fmt": "NLC"} if is_token_model(model) else {}
    blank = torch.zeros(1, 3, crop, crop, device=next(model.parameters()).device)
    with torch.inference_mode():
        return len(cast(Any, model).forward_intermediates(blank, intermediates_only=True,
                                                          **kwargs))


class LayerFeatures(nn.Module):
    """The pooled features ``names`` of ``model``, concatenated: (N, 3, H, W) -> (N, sum D)."""

    def __init__(self, model: nn.Module, layers: tuple[str, ...], pool: str, num_layers: int,
                 name: str) -> None:
        super().__init__()
        self.model = model
        self.tokens, self.class_token = is_token_model(model), has_class_token(model)
        self.names = feature_names(layers, pool, self.tokens, self.class_token)
        parsed = parse_layers(layers)
        self.want_head = PRE_LOGITS in parsed
        absolute: dict[int, int] = {}
        for layer in parsed:
            if layer == PRE_LOGITS:
                continue
            index = int(layer) + num_layers if int(layer) < 0 else int(layer)
            if not 0 <= index < num_layers:
                raise ConfigError(f"encode.layers entry {layer} is outside the {num_layers} "
                                  f"layers of encoder {name!r} (0..{num_layers - 1}, or "
                                  f"-{num_layers}..-1). Fix: `rrl encoders --search {name}` "
                                  "lists them with their widths")
            absolute[int(layer)] = index
        # forward_intermediates returns the taken layers in forward order, whatever the order
        # they were asked in, so each name finds its output by position in the sorted indices.
        self.indices = sorted(set(absolute.values()))
        self.position = {token: self.indices.index(i) for token, i in absolute.items()}

    @property
    def timm(self) -> Any:
        """The model, typed loosely: timm's forward_intermediates, forward_head, ..."""
        return self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.parts(x), dim=1)

    def parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (N, D_i) tensor per name."""
        kwargs: dict[str, Any] = {"indices": self.indices}
        if self.tokens:
            kwargs.update(output_fmt="NLC", return_prefix_tokens=True)
        final = None
        if self.want_head:
            final, taken = self.timm.forward_intermediates(x, **kwargs) if self.indices else \
                (self.timm.forward_features(x), [])
        else:
            taken = self.timm.forward_intermediates(x, intermediates_only=True, stop_early=True,
                                                    **kwargs)
        parts = []
        for name in self.names:
            if name == PRE_LOGITS:
                parts.append(self.timm.forward_head(final, pre_logits=True))
                continue
            token, _, pool = name.removeprefix("layer").partition(".")
            parts.append(self._pool(taken[self.position[int(token)]], pool))
        return [p.flatten(1) for p in parts]

    def _pool(self, out: Any, pool: str) -> torch.Tensor:
        if not self.tokens:
            return out.mean(dim=(2, 3))  # (N, C, H, W) feature map: spatial mean
        patches, prefix = out if isinstance(out, tuple) else (out, None)
        if pool == "cls":
            assert prefix is not None
            return prefix[:, 0]  # the class token comes first among the prefix tokens
        return patches.mean(dim=1)  # (N, L, C) patch tokens, without the prefix tokens
