"""Building an encoder's module with the requested weights (torch side of the weights logic)."""

from __future__ import annotations

import hashlib
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.encoders.hub import pretrained_file
from pipeline.encoders.registry import EncoderSpec
from pipeline.encoders.weights import (
    SAFETENSORS_SUFFIXES,
    check_weights_file,
    weights_fix,
    weights_identity,
)
from pipeline.errors import PipelineError, WeightsError

RANDOM_SEED = 0
_SHOWN_KEYS = 5


def build_module(spec: EncoderSpec, weights: str, crop: int, prefix: str | None = None
                 ) -> tuple[nn.Module, dict[str, str]]:
    """The headless module for inputs of side ``crop`` with ``weights`` loaded, and its
    identity plus state_dict_sha256. ``prefix``: load only a file's keys under it, stripped."""
    identity = weights_identity(spec.name, weights)
    # Seed every build, not only "random": then random init is identical in every encode worker
    # and process, and the caller's RNG stream is left untouched by fork_rng.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        if identity["kind"] == "pretrained" and spec.load_pretrained is not None:
            module = _load_pretrained(spec, crop)
        else:
            module = spec.builder(crop)
    if identity["kind"] == "file":
        path = check_weights_file(spec.name, weights)
        load_into(module, read_state_dict(path, spec.name, identity.get("sha256")), spec, path,
                  prefix)
    elif identity["kind"] == "pretrained" and spec.load_pretrained is None:
        path = pretrained_file(spec)  # a torchvision file: a plain state dict
        load_into(module, read_state_dict(path, spec.name, identity.get("sha256")), spec, path)
    module.eval()
    module.requires_grad_(False)
    return module, {**identity, "state_dict_sha256": state_dict_sha256(module)}


def _load_pretrained(spec: EncoderSpec, crop: int) -> nn.Module:
    assert spec.load_pretrained is not None
    path = pretrained_file(spec)  # found in the cache: weights_identity has just resolved it
    try:
        return spec.load_pretrained(crop, path)
    except PipelineError:
        raise
    except Exception as err:  # a file timm cannot load into this architecture
        raise WeightsError(
            f"the pretrained weights file {str(path)!r} of {spec.pretrained_tag} does not load "
            f"into the {spec.name} architecture ({type(err).__name__}: {str(err)[:400]}). Fix: "
            f"delete that file from the cache so it is downloaded again, or "
            f"{weights_fix(spec.name).removeprefix('Fix: ')}") from err


def read_state_dict(path: Path, name: str, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from .pth/.pt (raw, or under "state_dict"/"model") or .safetensors.

    ``sha256``: what the file hashed to when the key was made. The bytes are read once and
    loaded from memory, so what is loaded is what was hashed, even if the file is replaced
    meanwhile (another worker's copy, a re-trained VAE written over it).
    """
    data = path.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if sha256 is not None and found != sha256:
        raise WeightsError(f"weights file {str(path)!r} changed after its sha256 was taken "
                           f"({sha256[:12]} then, {found[:12]} now): its features would go under "
                           "the other file's key. Fix: run again once nothing writes that file")
    try:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load as load_safetensors

            raw: Any = load_safetensors(data)
        else:
            # weights_only: a weights file must not be able to run code when unpickled.
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"weights file {str(path)!r} cannot be read ({type(err).__name__}: {err}). "
            f"{weights_fix(name)}"
        ) from err
    if isinstance(raw, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(raw.get(wrapper), Mapping):
                raw = raw[wrapper]
                break
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()
    ):
        raise WeightsError(
            f"weights file {str(path)!r} does not hold a state dict (a mapping of names to "
            f"tensors, possibly under 'state_dict' or 'model'). {weights_fix(name)}"
        )
    return dict(raw)


def load_into(
    module: nn.Module, state: dict[str, torch.Tensor], spec: EncoderSpec, path: Path,
    prefix: str | None = None,
) -> None:
    """Load strictly, except for the classifier, which the encoder has removed.

    ``prefix`` (another project's checkpoint: R3M's ``module.convnet.``): only the keys under it
    count, with it stripped; the rest of that checkpoint (other networks) is ignored. Then the
    model family's own checkpoint filter runs where timm has one (a ViT's resamples its position
    embedding, converts other ViT formats).
    """
    ignored = 0
    if prefix:
        kept = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        ignored = len(state) - len(kept)
        state = kept
    state = _timm_filter(module, state)
    state = {k: v for k, v in state.items() if k not in spec.head_keys}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:_SHOWN_KEYS])}{', ...' if len(keys) > _SHOWN_KEYS else ''}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes, file vs model", wrong_shape),
        )
        if keys
    ]
    if problems:
        under = (f" (keys under the prefix {prefix!r}, stripped; {ignored} keys outside it "
                 f"ignored)" if prefix else "")
        guess = _shared_prefix(unexpected, set(expected))
        hint = (f"; the unexpected keys are the model's under {guess!r}: set "
                f"encode.weights_prefix={(prefix or '') + guess}" if guess else
                "" if prefix else "; a checkpoint of another project whose keys all share a "
                "prefix (R3M: module.convnet.) loads with encode.weights_prefix=<that prefix>")
        raise WeightsError(
            f"weights file {str(path)!r} does not match the {spec.name} architecture{under}: "
            f"{'; '.join(problems)}{hint}. {weights_fix(spec.name)}"
        )
    module.load_state_dict(state, strict=True)


def _shared_prefix(unexpected: list[str], expected: set[str]) -> str:
    """The dotted prefix that, stripped from unexpected keys, leaves most of the model's own."""
    candidates = {k[: i + 1] for k in unexpected for i, c in enumerate(k) if c == "."}
    best, hits = "", 0
    for prefix in candidates:
        found = sum(k.startswith(prefix) and k.removeprefix(prefix) in expected for k in unexpected)
        if found > hits:
            best, hits = prefix, found
    return best if hits >= max(1, len(expected) // 2) else ""


def _timm_filter(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's checkpoint filter of the model's family, if it has one (as timm's loader runs)."""
    family = sys.modules.get(type(module).__module__)
    filter_fn = getattr(family, "checkpoint_filter_fn", None)
    if filter_fn is None or not type(module).__module__.startswith("timm."):
        return state
    try:
        filtered = filter_fn(dict(state), module)
    except Exception:  # a filter written for one foreign format: the state dict as it is
        return state
    return dict(filtered) if isinstance(filtered, Mapping) else state


def state_dict_sha256(module: nn.Module) -> str:
    """Deterministic hash of all parameters and buffers: names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
