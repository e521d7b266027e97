"""Building an encoder's module with the requested weights (torch side of the weights logic)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


def build_module(spec: EncoderSpec, weights: str) -> tuple[nn.Module, dict[str, str]]:
    """The headless module with `weights` loaded, and its identity plus state_dict_sha256."""
    identity = weights_identity(spec.name, weights)
    # Seed every build, not only "random": then random init is identical in every encode worker
    # and process, and the caller's RNG stream is left untouched by fork_rng.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        if identity["kind"] == "pretrained":
            module = _build_pretrained(spec)
        else:
            module = spec.builder(False)
    if identity["kind"] == "file":
        path = check_weights_file(spec.name, weights)
        load_into(module, read_state_dict(path, spec.name), spec, path)
    module.eval()
    module.requires_grad_(False)
    return module, {**identity, "state_dict_sha256": state_dict_sha256(module)}


def _build_pretrained(spec: EncoderSpec) -> nn.Module:
    try:
        return spec.builder(True)
    except PipelineError:
        raise
    except Exception as err:  # download errors come as OSError, URLError, HF errors, ...
        reference = (
            f"; the standard file for these weights is named {spec.reference_file} and loads as is"
            if spec.reference_file
            else ""
        )
        raise WeightsError(
            f"downloading pretrained weights for encoder {spec.name!r} ({spec.source} "
            f"{spec.pretrained_tag!r}) failed and no cached copy was found "
            f"({type(err).__name__}: {err}). Fix: run once on a machine with internet access to "
            f"fill the {spec.source} cache, or supply a local file with "
            f"WEIGHTS=/path/to/file.pth or WEIGHTS=/path/to/file.safetensors holding a state "
            f"dict for the {spec.name} architecture{reference} (e.g. resnet34-b627a593.pth is "
            f"torchvision's resnet34). Set HF_HUB_OFFLINE=1 to fail fast without network. "
            f"Random weights are never used instead unless WEIGHTS=random is given."
        ) from err


def read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """A state dict from .pth/.pt (raw, or under "state_dict"/"model") or .safetensors."""
    try:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            # weights_only: a weights file must not be able to run code when unpickled.
            raw = torch.load(path, map_location="cpu", weights_only=True)
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
    module: nn.Module, state: dict[str, torch.Tensor], spec: EncoderSpec, path: Path
) -> None:
    """Load strictly, except for the classifier, which the encoder has removed."""
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
        raise WeightsError(
            f"weights file {str(path)!r} does not match the {spec.name} architecture: "
            f"{'; '.join(problems)}. {weights_fix(spec.name)}"
        )
    module.load_state_dict(state, strict=True)


def state_dict_sha256(module: nn.Module) -> str:
    """Deterministic hash of all parameters and buffers: names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
