"""Encoder registry, weights loading and preprocessing (tiny random-weight models, CPU)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from pipeline.encoders import (
    FrozenEncoder,
    create_encoder,
    encoder_spec,
    list_encoders,
    weights,
    weights_identity,
)
from pipeline.errors import ConfigError, UnknownNameError, WeightsError

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
ALL = ["mobilenetv3_large_100", "resnet10t", "resnet18", "resnet34", "resnet50",
       "shufflenet_v2_x1_0"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRL_CACHE", str(tmp_path / "rrl-cache"))


@pytest.fixture(scope="module")
def tiny() -> FrozenEncoder:
    return small()


def small(
    name: str = "resnet10t", weights: str = "random", precision: str = "fp32"
) -> FrozenEncoder:
    # Bilinear, as RRL's transform (resnet10t's own data config is bicubic at 176 px).
    return create_encoder(name, weights, precision=precision, resize=64, crop=56,
                          interpolation="bilinear")


def frames(n: int = 6, h: int = 72, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(np.sum(a * b, 1) / norms)


def test_registry_names_and_unknown_name() -> None:
    assert set(ALL) <= set(list_encoders())
    assert encoder_spec("resnet34").pretrained_tag == "resnet34.tv_in1k"
    with pytest.raises(UnknownNameError) as err:
        encoder_spec("resnet35")
    assert "resnet35" in str(err.value)
    assert all(name in str(err.value) for name in ALL)
    assert "close timm names: " in str(err.value) and "resnet34" in str(err.value)
    with pytest.raises(UnknownNameError, match="rrl encoders --search"):
        create_encoder("no_such_backbone_9", "random")


def test_weights_identity_kinds_and_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights_identity("resnet34", "random") == {"kind": "random"}
    path = tmp_path / "w.pth"
    path.write_bytes(b"abc")
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    cache_file = tmp_path / "rrl-cache" / "weights_sha256.json"
    # Just written: hashed but not remembered (a same-size rewrite could keep its stat).
    assert weights_identity("resnet34", str(path)) == {"kind": "file", "sha256": abc}
    assert not cache_file.exists()
    monkeypatch.setattr(weights, "RACY_WINDOW_NS", 0)  # as if the file were old
    assert weights_identity("resnet34", str(path))["sha256"] == abc
    assert list(json.loads(cache_file.read_text()).values()) == [abc]
    # A same-size rewrite whose mtime is put back (cp -p, rsync -t) must still rehash.
    before = path.stat()
    path.write_bytes(b"abd")
    while path.stat().st_ctime_ns == before.st_ctime_ns:  # a coarse clock: write again
        path.write_bytes(b"abd")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    abd = weights_identity("resnet34", str(path))["sha256"]
    assert abd == hashlib.sha256(b"abd").hexdigest()
    assert list(json.loads(cache_file.read_text()).values()) == [abd]  # the stale entry replaced
    with pytest.raises(WeightsError, match=r"nope\.pth.*WEIGHTS="):
        weights_identity("resnet34", str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match="suffix"):
        (tmp_path / "w.npz").write_bytes(b"x")
        weights_identity("resnet34", str(tmp_path / "w.npz"))


def test_weights_identity_does_not_import_torch() -> None:
    encoder_spec("convnext_atto")  # a timm name looked up once: remembered in RRL_CACHE
    code = (
        "import sys, pipeline.encoders as e; e.weights_identity('resnet34', 'random'); "
        "e.list_encoders(); s = e.encoder_spec('convnext_atto'); "
        "assert s.input.interpolation == 'bicubic', s; "
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_frozen_module_and_metadata(tiny: FrozenEncoder) -> None:
    assert not tiny.module.training
    assert not any(p.requires_grad for p in tiny.module.parameters())
    assert tiny.weights["kind"] == "random" and len(tiny.weights["state_dict_sha256"]) == 64
    assert tiny.preprocessing["resize"] == 64 and tiny.preprocessing["crop"] == 56
    assert tiny.preprocessing["mean"] == MEAN and tiny.preprocessing["std"] == STD
    assert json.loads(json.dumps(tiny.preprocessing)) == tiny.preprocessing  # JSON as it is keyed
    with pytest.raises(ConfigError):
        tiny.encode(frames().astype(np.float32))
    with pytest.raises(ConfigError):
        create_encoder("resnet10t", "random", resize=64, crop=96)
    with pytest.raises(UnknownNameError):
        create_encoder("resnet10t", "random", precision="fp16")


def test_random_weights_are_reproducible_and_leave_rng_alone(tiny: FrozenEncoder) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = small()
    assert torch.equal(torch.rand(3), expected)
    assert again.weights == tiny.weights
    np.testing.assert_array_equal(again.encode(frames()), tiny.encode(frames()))


def test_encode_matches_manual_pipeline(tiny: FrozenEncoder) -> None:
    batch = frames(5, 72, 90)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)
    x = TF.resize(x, [64], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    assert tuple(x.shape[-2:]) == (64, 80)
    x = TF.center_crop(x, [56, 56])
    x = (x.float() / 255.0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1)
    with torch.no_grad():
        expected = tiny.module(x).numpy()
    out = tiny.encode(batch)
    assert out.dtype == np.float32 and out.shape == (5, 512)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tiny.encode(batch, batch_size=2), out, atol=1e-5, rtol=0)
    assert tiny.encode(batch[:0]).shape == (0, 512)


def test_preprocessing_is_within_one_level_of_pil(tiny: FrozenEncoder) -> None:
    from PIL import Image

    from pipeline.encoders.preprocess import preprocess

    batch = frames(3, 90, 70)
    ours = preprocess(torch.from_numpy(batch), 64, 56)
    pil = []
    for frame in batch:  # RRL's transform: PIL Resize(64), CenterCrop(56), ToTensor, Normalize
        img = Image.fromarray(frame).resize((64, 82), Image.Resampling.BILINEAR)
        arr = np.asarray(img)[13:69, 4:60].astype(np.float32) / 255.0
        pil.append((arr - np.array(MEAN, np.float32)) / np.array(STD, np.float32))
    levels = (ours.permute(0, 2, 3, 1).numpy() - np.stack(pil)) * np.array(STD) * 255.0
    assert np.abs(levels).max() <= 1.0 + 1e-3


def test_bf16_agrees_with_fp32(tiny: FrozenEncoder) -> None:
    bf16 = small(precision="bf16")
    assert bf16.weights == tiny.weights
    out = bf16.encode(frames())
    assert out.dtype == np.float32
    # Measured min 0.999994 here (random weights, random frames, 2-core CPU); 10x margin on 1-cos.
    assert cosine(out, tiny.encode(frames())).min() >= 0.9999


def test_weights_file_round_trip(tiny: FrozenEncoder, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in tiny.module.state_dict().items()}
    with_head = {**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save({"state_dict": with_head}, tmp_path / "tiny.pth")
    save_file(state, str(tmp_path / "tiny.safetensors"))
    expected = tiny.encode(frames())
    for name in ("tiny.pth", "tiny.safetensors"):
        path = tmp_path / name
        enc = small("resnet10t", str(path))
        assert enc.weights["kind"] == "file"
        assert enc.weights["sha256"] == weights_identity("resnet10t", str(path))["sha256"]
        assert enc.weights["state_dict_sha256"] == tiny.weights["state_dict_sha256"]
        np.testing.assert_array_equal(enc.encode(frames()), expected)


def test_bad_weights_files(tiny: FrozenEncoder, tmp_path: Path) -> None:
    state = dict(tiny.module.state_dict())
    renamed = {("stem.bogus" if k == "conv1.0.weight" else k): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(WeightsError, match=r"renamed\.pth.*conv1\.0\.weight.*stem\.bogus"):
        small("resnet10t", str(tmp_path / "renamed.pth"))
    torch.save(state, tmp_path / "tiny.pth")
    with pytest.raises(WeightsError, match=r"tiny\.pth.*resnet18.*missing keys"):
        small("resnet18", str(tmp_path / "tiny.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth.*cannot be read"):
        small("resnet10t", str(tmp_path / "junk.pth"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match=r"list\.pt.*state dict"):
        small("resnet10t", str(tmp_path / "list.pt"))
    with pytest.raises(WeightsError, match=r"missing\.safetensors"):
        small("resnet10t", str(tmp_path / "missing.safetensors"))


def test_torchvision_resnet34_file_loads_into_timm(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet34().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet34-test.pth")
    enc = small("resnet34", str(tmp_path / "resnet34-test.pth"))
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_preprocessed(x), reference(x))


def test_pretrained_offline_raises_weights_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hf

    # Offline and with empty caches, so the outcome does not depend on this machine's network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError, match=r"resnet10t\.c3_in1k.*HF_HUB_OFFLINE.*Fix:.*WEIGHTS="):
        small("resnet10t", "pretrained")
    # torchvision's file is read from torch.hub's checkpoint folder (TORCH_HOME), as torch does.
    with pytest.raises(WeightsError, match=r"shufflenetv2_x1-5666bf0f80\.pth.*Fix:.*torch\.hub's checkpoints folder"):
        small("shufflenet_v2_x1_0", "pretrained")


@pytest.mark.parametrize("name", ALL)
def test_feature_dim_is_the_real_output_width(name: str) -> None:
    enc = create_encoder(name, "random", resize=64, crop=64)
    assert enc.feature_dim == encoder_spec(name).feature_dim
    assert enc.encode(frames(2, 64, 64)).shape == (2, enc.feature_dim)


def test_weights_are_loaded_from_the_bytes_that_were_hashed(tmp_path: Path) -> None:
    import hashlib

    import torch
    from safetensors.torch import save_file

    from pipeline.encoders.loading import read_state_dict
    from pipeline.errors import WeightsError

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(4.0)}, str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(read_state_dict(path, "resnet18", sha)["a"], torch.arange(4.0))
    save_file({"a": torch.zeros(4)}, str(path))  # replaced after the key was made
    with pytest.raises(WeightsError, match=r"changed after its sha256 was taken.*Fix:"):
        read_state_dict(path, "resnet18", sha)
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": {"b": torch.ones(2)}}, pth)
    assert torch.equal(read_state_dict(pth, "resnet18")["b"], torch.ones(2))
