"""The representation zoo: any timm model by name, timm's own preprocessing, layers from one
forward pass, weights through the hub cache (no network) and other projects' checkpoints."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.encoders import create_encoder, encoder_spec, list_encoders, weights_identity
from pipeline.encoders.input_config import InputConfig
from pipeline.encoders.layers import select_features
from pipeline.encoders.preprocess import apply_input
from pipeline.errors import ConfigError, WeightsError
from tests.helpers import hub_cache_entry

ALIASES = ["mobilenetv3_large_100", "resnet10t", "resnet18", "resnet34", "resnet50"]
TIMM = ["vit_tiny_patch16_224", "convnext_atto"]


def smooth_frame(size: int) -> np.ndarray:
    """A frame with gradients, edges and a block of colour, like a render."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([np.sin(6 * x + 3 * y), np.cos(20 * x * y), x * y], -1)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    img[size // 4: size // 2, size // 3: size // 2] = [200, 30, 60]
    return img.astype(np.uint8)


def timm_reference(tag: str) -> tuple[torch.nn.Module, dict]:  # type: ignore[type-arg]
    """timm's model (random init, seed 0 as the encoder's) and its resolve_model_data_config."""
    import timm
    from timm.data import resolve_model_data_config

    torch.manual_seed(0)
    model = timm.create_model(tag, pretrained=False, num_classes=0).eval()
    return model, resolve_model_data_config(model)


@pytest.mark.parametrize("name", ALIASES + TIMM)
def test_input_config_is_timms_and_the_tensor_matches_its_transform(name: str) -> None:
    from PIL import Image
    from timm.data import create_transform

    spec = encoder_spec(name)
    _, cfg = timm_reference(spec.pretrained_tag or name)
    assert spec.input == InputConfig.from_timm(cfg, name)
    transform = create_transform(**cfg)
    for size in (64, 256):  # SIZE=64 frames are upsampled, RRL's 256 ones cropped
        frame = smooth_frame(size)
        ours = apply_input(torch.from_numpy(frame[None].copy()), spec.input)[0].numpy()
        theirs = transform(Image.fromarray(frame)).numpy()
        assert ours.shape == theirs.shape
        levels = np.abs(ours - theirs) * np.array(cfg["std"])[:, None, None] * 255
        # Measured: 0 for the bilinear ResNets and convnext/mobilenet at 224; 2 grey levels at
        # most for bicubic resizes to 201 (resnet10t) and 248 (vit_tiny) px (PIL vs torch).
        assert levels.max() <= 2.0 + 1e-3, (name, size, levels.max())


def test_rrl_resnets_keep_rrls_input_and_keys() -> None:
    for name in ("resnet18", "resnet34", "resnet50"):
        assert encoder_spec(name).input.key() == {"resize": 256, "crop": 224,
                                                  "normalize": "imagenet"}
    assert encoder_spec("mobilenetv3_large_100").input.key()["interpolation"] == "bicubic"
    assert encoder_spec("resnet10t").input.key() == {
        "resize": 201, "crop": 176, "normalize": "imagenet", "interpolation": "bicubic"}
    vit = encoder_spec("vit_tiny_patch16_224").input.key()
    assert vit["normalize"] == "custom" and vit["mean"] == [0.5] * 3
    assert set(list_encoders()) >= set(ALIASES)


def test_several_layers_from_one_forward_match_timm() -> None:
    model, _ = timm_reference("resnet10t.c3_in1k")
    enc = create_encoder("resnet10t", "random", layers=("2", "-1", "pre_logits"))
    assert enc.features == {"layer2": 128, "layer-1": 512, "pre_logits": 512}
    frames = np.stack([smooth_frame(64), smooth_frame(64)[::-1].copy()])
    calls = []
    original = enc.module.model.forward_intermediates
    enc.module.model.forward_intermediates = lambda *a, **k: calls.append(1) or original(*a, **k)
    out = enc.encode(frames)
    assert len(calls) == 1  # one forward pass for all three features
    x = apply_input(torch.from_numpy(frames), enc.input)
    with torch.inference_mode():
        _, (two, four) = model.forward_intermediates(x, indices=[2, 4])
        expected = torch.cat([two.mean((2, 3)), four.mean((2, 3)), model(x)], 1).numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    plain = create_encoder("resnet10t", "random").encode(frames)
    np.testing.assert_array_equal(out[:, -512:], plain)  # pre_logits is the default feature
    np.testing.assert_array_equal(enc.select(["layer-1"]).encode(frames), out[:, 128:640])


def test_vit_tokens_pooled_by_class_token_and_mean() -> None:
    model, _ = timm_reference("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    enc = create_encoder("vit_tiny_patch16_224", "random", layers=("-4", "-1"), pool="both")
    assert list(enc.features) == ["layer-4.cls", "layer-4.avg", "layer-1.cls", "layer-1.avg"]
    frame = smooth_frame(64)[None]
    x = apply_input(torch.from_numpy(frame.copy()), enc.input)
    with torch.inference_mode():
        taken = model.forward_intermediates(x, indices=[8, 11], output_fmt="NLC",
                                            return_prefix_tokens=True, intermediates_only=True)
    expected = torch.cat([t for patches, prefix in taken
                          for t in (prefix[:, 0], patches.mean(1))], 1).numpy()
    np.testing.assert_allclose(enc.encode(frame), expected, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="needs a model with tokens"):
        create_encoder("resnet10t", "random", layers=("3",), pool="cls")
    with pytest.raises(ConfigError, match="outside the 12 layers"):
        create_encoder("vit_tiny_patch16_224", "random", layers=("12",))


def test_features_selection() -> None:
    stored = ["layer-4.cls", "layer-4.avg", "layer-1.cls", "pre_logits"]
    assert select_features(stored, (), "s") == stored
    assert select_features(stored, ("-4",), "s") == ["layer-4.cls", "layer-4.avg"]
    assert select_features(stored, ("pre_logits", "layer-1.cls"), "s") == ["pre_logits",
                                                                            "layer-1.cls"]
    with pytest.raises(ConfigError, match=r"'3' is not stored in s.*layer-4\.cls"):
        select_features(stored, ("3",), "s")


def test_a_prefixed_checkpoint_loads_into_the_timm_architecture(tmp_path: Path) -> None:
    reference = create_encoder("resnet10t", "random", resize=64, crop=56)
    state = reference.module.state_dict()
    torch.save(state, tmp_path / "plain.pth")
    # As R3M stores its ResNet: under module.convnet., beside other networks' weights.
    other = {"module.lang_enc.weight": torch.zeros(3, 3), "module.lang_rew.bias": torch.zeros(2)}
    torch.save({"r3m": None, "state_dict": {**{f"module.convnet.{k}": v for k, v in state.items()},
                                            **other}}, tmp_path / "r3m.pt")
    frames = np.stack([smooth_frame(64)])
    plain = create_encoder("resnet10t", str(tmp_path / "plain.pth"), resize=64, crop=56)
    prefixed = create_encoder("resnet10t", str(tmp_path / "r3m.pt"), resize=64, crop=56,
                              weights_prefix="module.convnet.")
    np.testing.assert_array_equal(prefixed.encode(frames), plain.encode(frames))
    assert prefixed.weights["state_dict_sha256"] == plain.weights["state_dict_sha256"]
    with pytest.raises(WeightsError) as err:  # the wrong prefix: one error, both lists
        create_encoder("resnet10t", str(tmp_path / "r3m.pt"), resize=64, crop=56,
                       weights_prefix="module.")
    text = str(err.value)
    assert re.search(r"missing keys \(\d+\): bn1\.bias", text), text
    assert re.search(r"unexpected keys \(\d+\): convnet\.bn1\.bias", text), text
    assert "set encode.weights_prefix=module.convnet." in text and "Fix:" in text
    with pytest.raises(WeightsError, match=r"encode\.weights_prefix"):  # no prefix: the hint
        create_encoder("resnet10t", str(tmp_path / "r3m.pt"), resize=64, crop=56)


def fill_hub_cache(cache: Path, tag: str, state: dict[str, torch.Tensor]) -> str:
    """The Hugging Face hub cache for repository timm/<tag> holding model.safetensors, written
    by hand (as a cache copied from an online machine would be); its sha256."""
    from safetensors.torch import save

    return hub_cache_entry(cache, f"timm/{tag}", "model.safetensors",
                           save({k: v.contiguous() for k, v in state.items()}))


def test_pretrained_from_a_filled_hub_cache_offline(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf

    saved = create_encoder("resnet10t", "random")  # stands for the real weights: saved here
    full = {**saved.module.state_dict(), "fc.weight": torch.zeros(1000, 512),
            "fc.bias": torch.zeros(1000)}  # a hub file has its classifier; timm drops it
    full = {k: v + 0.01 if v.is_floating_point() else v for k, v in full.items()}
    sha = fill_hub_cache(tmp_path / "hub", "resnet10t.c3_in1k", full)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "ENDPOINT", "http://127.0.0.1:9")  # any network use would fail
    identity = weights_identity("resnet10t", "pretrained")
    assert identity == {"kind": "pretrained", "tag": "resnet10t.c3_in1k", "sha256": sha}
    enc = create_encoder("resnet10t", "pretrained")
    assert enc.weights["sha256"] == sha
    loaded = enc.module.state_dict()
    assert all(torch.equal(loaded[k], full[k]) for k in loaded)  # the cached file, not random
    with pytest.raises(WeightsError, match="WEIGHTS_SHA256"):
        weights_identity("resnet10t", "pretrained", pin="0" * 64)


def test_no_network_and_no_cache_fails_within_seconds(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf

    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    silent = socket.socket()  # accepts connections (the kernel does), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    for name in ("HF_HUB_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    try:
        for port in (refused, silent.getsockname()[1]):
            monkeypatch.setattr(hf, "ENDPOINT", f"http://127.0.0.1:{port}")
            started = time.perf_counter()
            with pytest.raises(WeightsError, match=r"no network.*Fix:.*huggingface-cli download "
                                                   r"timm/resnet34\.tv_in1k.*WEIGHTS="):
                weights_identity("resnet34", "pretrained")
            assert time.perf_counter() - started < 5.0
    finally:
        silent.close()


def test_rrl_encoders_listing() -> None:
    from pipeline.encoders.catalog import listing

    text = "\n".join(listing())
    assert "resnet34" in text and "Resize(256) CenterCrop(224) bilinear, imagenet" in text
    assert "layers 0-4 stages (avg pooled): 0:64 1:64 2:128 3:256 4:512" in text
    found = "\n".join(listing("vit_tiny_patch16", limit=2))
    assert "timm pretrained tags matching 'vit_tiny_patch16'" in found
    assert "blocks (tokens: cls/avg pooled)" in found and "mean (0.5, 0.5, 0.5)" in found


def test_status_says_blocked_when_pretrained_weights_are_not_at_hand(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pretrained key holds the file's sha256: without the file (offline, empty cache) the
    stages that need it are 'blocked' with the reason, and the others still get their status."""
    import huggingface_hub.constants as hf

    from pipeline.config import PipelineConfig
    from pipeline.runner import Runner
    from stages import STAGES

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    states = {s.name: s for s in Runner(PipelineConfig(), STAGES, tmp_path).status()}
    assert states["render"].state == "missing"
    assert states["encode"].state == states["dapg"].state == "blocked"
    assert "resnet34.tv_in1k" in states["encode"].reason and "rrl run encode" in states["encode"].reason
