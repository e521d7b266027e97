"""Any timm model as an encoder: ``ENCODER=vit_small_patch14_dinov2.lvd142m`` (or without its tag).

``timm_spec`` turns a timm name into an ``EncoderSpec`` from timm's own pretrained config: the
data config (``resolve_data_config``, as ``resolve_model_data_config`` gives it for the created
model), the hub repository or URL of its weights, and its classifier's key names. Importing timm
takes seconds, and specs are read by every ``rrl status``, so a resolved spec is remembered in
``$RRL_CACHE/timm_specs.json`` under the installed timm version and the name.

An unknown name gets the usual error, with the close matches among timm's model names and
pretrained tags. ``search`` lists pretrained tags for ``rrl encoders --search``, and
``layer_widths`` measures each layer's width on the meta device (no memory, no weights).
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import json
import os
import tempfile
from functools import partial
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, cast

from pipeline.cache import cache_dir
from pipeline.encoders.input_config import InputConfig
from pipeline.encoders.registry import EncoderSpec, HubLocation, list_encoders
from pipeline.errors import UnknownNameError

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

_CACHE_NAME = "timm_specs.json"


def timm_kwargs(native_crop: int, fixed_size: bool, crop: int) -> dict[str, Any]:
    """create_model arguments for inputs of side ``crop``: a model with a fixed input size (a ViT's
    position embedding) is built for ``crop``, and timm resamples pretrained embeddings to it."""
    # num_classes=0 swaps the classifier for Identity, leaving the pooled pre-logits features;
    # timm skips the classifier weights when loading pretrained ones into such a model.
    return {"num_classes": 0, **({"img_size": crop} if fixed_size and crop != native_crop else {})}


def timm_model(tag: str, native_crop: int, fixed_size: bool, crop: int) -> nn.Module:
    """timm's model ``tag`` without its classifier, randomly initialised, for ``crop`` inputs."""
    import timm

    model: nn.Module = timm.create_model(tag, pretrained=False,
                                         **timm_kwargs(native_crop, fixed_size, crop))
    return model


def timm_pretrained_model(tag: str, native_crop: int, fixed_size: bool, crop: int,
                          path: Path) -> nn.Module:
    """The model with the pretrained weights in ``path``, loaded by timm's own mechanism (its
    checkpoint filter, classifier removal, strict load), as ``pretrained=True`` would."""
    import timm

    model: nn.Module = timm.create_model(tag, pretrained=True,
                                         pretrained_cfg_overlay={"file": str(path)},
                                         **timm_kwargs(native_crop, fixed_size, crop))
    return model


def timm_spec(name: str) -> EncoderSpec:
    """The spec of timm model ``name`` (``arch`` or ``arch.tag``); unknown names raise
    UnknownNameError listing the registered aliases and timm's closest names."""
    key = f"{version('timm')}|{name}"
    cache = cache_dir(_CACHE_NAME)
    record = _read(cache).get(key)
    if record is None:
        record = _resolve(name)
        _write(cache, {**_read(cache), key: record})
    return _spec(name, record)


def _spec(name: str, record: dict[str, Any]) -> EncoderSpec:
    data = InputConfig.from_timm(record["data_config"], name)
    args = (record["tag"], data.crop, bool(record.get("fixed_size")))
    classifier = record.get("classifier") or []
    return EncoderSpec(
        name=name, library="timm", pretrained_tag=record["tag"],
        builder=partial(timm_model, *args),
        load_pretrained=partial(timm_pretrained_model, *args),
        head_keys=tuple(f"{c}.{p}" for c in classifier for p in ("weight", "bias")),
        input=data, hub=HubLocation(**record["hub"]) if record.get("hub") else None,
        registered=False,
    )


def _resolve(name: str) -> dict[str, Any]:
    import timm
    from timm.data import resolve_data_config
    from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg

    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        raise unknown_encoder(name)
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # a real architecture with a tag it does not have
        raise unknown_encoder(name) from None
    if cfg is None:  # an architecture without pretrained configs: timm's defaults
        return {"tag": arch, "hub": None, "classifier": [],
                "data_config": _plain(resolve_data_config(pretrained_cfg={"architecture": arch}))}
    full = name if tag else next(
        (f"{arch}.{t}" for t, c in _tags(get_arch_pretrained_cfgs(arch)) if c == cfg), arch)
    classifier = cfg.classifier
    hub = {"hf_hub_id": cfg.hf_hub_id or None, "hf_hub_filename": cfg.hf_hub_filename or None,
           "url": cfg.url or None}
    return {"tag": full, "hub": hub if any(hub.values()) else None,
            "fixed_size": bool(cfg.fixed_input_size),
            "classifier": [classifier] if isinstance(classifier, str) else list(classifier or []),
            "data_config": _plain(resolve_data_config(pretrained_cfg=cfg.to_dict()))}


def _tags(cfgs: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(full.partition(".")[2], c) for full, c in cfgs.items()]


def _plain(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg, default=list))


def unknown_encoder(name: str) -> UnknownNameError:
    import timm

    names = timm.list_models() + timm.list_pretrained()
    close = difflib.get_close_matches(name, names, n=8, cutoff=0.6)
    return UnknownNameError(
        f"unknown encoder {name!r}: not a registered alias ({', '.join(list_encoders())}) nor a "
        f"timm model name" + (f"; close timm names: {', '.join(close)}" if close else "")
        + ". Fix: pick one of those, or search timm's pretrained tags with "
        "`rrl encoders --search WORD`")


def search(pattern: str) -> list[str]:
    """timm's pretrained tags matching ``pattern`` (a substring, or a glob with * and ?)."""
    import timm

    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [t for t in timm.list_pretrained() if fnmatch.fnmatch(t, glob)]


def layer_widths(spec: EncoderSpec, crop: int | None = None) -> dict[str, Any]:
    """Widths of the pre-logits feature and of each ``forward_intermediates`` index, measured
    on the meta device (shapes only). ``{"error": ...}`` where the model cannot say."""
    import torch

    from pipeline.encoders.features import is_token_model

    side = crop or spec.input.crop
    try:
        with torch.device("meta"):
            model = spec.builder(side)
            x = torch.empty(1, 3, side, side)
            out: dict[str, Any] = {"pre_logits": int(model(x).shape[-1])}
            if hasattr(model, "forward_intermediates"):
                kwargs = {"output_fmt": "NLC"} if is_token_model(model) else {}
                layers = cast(Any, model).forward_intermediates(x, intermediates_only=True,
                                                                **kwargs)
                out["layers"] = [int(t.shape[-1] if kwargs else t.shape[1]) for t in layers]
                out["tokens"] = bool(kwargs)
    except Exception as err:  # any model failing on meta tensors: listed, not fatal
        return {"error": f"{type(err).__name__}: {str(err)[:120]}"}
    return out


def _read(path: Any) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Any, data: dict[str, Any]) -> None:
    # The cache only saves an import of timm: a failed write is not an error.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".timm_specs.")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=0, sort_keys=True)
        os.replace(tmp, path)
