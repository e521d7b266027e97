"""A weights file is checked by content before it is loaded: a torchvision-style name carries a
hash prefix (torch.hub's convention) that its bytes must have, and ``WEIGHTS_SHA256=`` pins the
one file that may be used."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.encoders import create_encoder, weights_identity
from pipeline.errors import WeightsError

ROOT = Path(__file__).resolve().parents[2]


def torchvision_style_file(folder: Path) -> Path:
    """A resnet10t state dict saved under ``resnet10t-<first 8 hex of its sha256>.pth``."""
    state = create_encoder("resnet10t", "random", resize=48, crop=40).module.state_dict()
    draft = folder / "draft.pth"
    torch.save(state, draft)
    sha = hashlib.sha256(draft.read_bytes()).hexdigest()
    path = folder / f"resnet10t-{sha[:8]}.pth"
    draft.rename(path)
    return path


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the tensor data: torch.load reads it without complaint
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_hash_named_file_is_refused(tmp_path: Path) -> None:
    path = torchvision_style_file(tmp_path)
    good = create_encoder("resnet10t", str(path), resize=48, crop=40)
    assert good.weights["kind"] == "file"
    flip_one_byte(path)
    # The damaged file still unpickles: only its content says it is not the named file.
    torch.load(path, weights_only=True)
    with pytest.raises(WeightsError, match=r"resnet10t-[0-9a-f]{8}\.pth.*hash to.*damaged.*Fix:"):
        weights_identity("resnet10t", str(path))
    with pytest.raises(WeightsError, match="damaged"):
        create_encoder("resnet10t", str(path), resize=48, crop=40)


def test_names_without_a_hash_prefix_are_not_checked(tmp_path: Path) -> None:
    path = torchvision_style_file(tmp_path)
    for name in ("ckpt-2.pth", "encoder.pth", "run-1.pt"):
        other = tmp_path / name
        other.write_bytes(path.read_bytes())
        assert weights_identity("resnet10t", str(other))["kind"] == "file"


def test_weights_sha256_pin_refuses_any_other_file(tmp_path: Path) -> None:
    path = torchvision_style_file(tmp_path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights_identity("resnet10t", str(path), pin=sha)["sha256"] == sha
    plain = tmp_path / "plain.pth"
    plain.write_bytes(path.read_bytes())
    flip_one_byte(plain)  # no hash in its name: only the pin can tell
    with pytest.raises(WeightsError, match=rf"plain\.pth.*WEIGHTS_SHA256={sha}.*Fix:"):
        weights_identity("resnet10t", str(plain), pin=sha)
    with pytest.raises(WeightsError, match=r"WEIGHTS=random.*WEIGHTS_SHA256"):
        weights_identity("resnet10t", "random", pin=sha)


def test_weights_sha256_reaches_the_encode_key_check_from_make_and_cli(tmp_path: Path) -> None:
    path = torchvision_style_file(tmp_path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RRL_CACHE": str(tmp_path / "cache")}

    def key(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stages", "--data", str(tmp_path),
                               "--encoder", "resnet10t", "--weights", str(path), *args,
                               "key", "encode"], capture_output=True, text=True, timeout=120,
                              cwd=ROOT, env={**env, **extra})

    ok = key("--weights-sha256", sha)
    assert ok.returncode == 0, ok.stderr
    refused = key(RRL_WEIGHTS_SHA256="0" * 64, RRL_MAKE_VARS="WEIGHTS_SHA256")  # as make sets it
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"has sha256 {sha}" in refused.stderr and "WEIGHTS_SHA256=" + "0" * 64 in refused.stderr
