"""A long-lived worker's encoder cache follows the weights file's content, not its path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.encoders import create_encoder, weights_identity
from pipeline.encoders.encode_job import EncoderParams, ShardEncoder, cached_encoder
from pipeline.errors import WeightsError

FRAMES = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)


def save_weights(path: Path, shift: float, mtime_ns: int) -> str:
    state = create_encoder("resnet10t", "random", resize=48, crop=40).module.state_dict()
    torch.save({k: v + shift if v.is_floating_point() else v for k, v in state.items()}, path)
    # A later write has a later mtime; set it so the coarse file clock cannot tie within a test.
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return weights_identity("resnet10t", str(path))["sha256"]


def params(path: Path, sha256: str | None) -> EncoderParams:
    return EncoderParams("resnet10t", str(path), "fp32", 48, 40, sha256)


def test_replaced_weights_file_at_the_same_path_gives_the_new_features(tmp_path: Path) -> None:
    path = tmp_path / "encoder.pth"
    old_sha = save_weights(path, 0.0, 10**18)
    old = cached_encoder(params(path, old_sha)).encode(FRAMES)
    new_sha = save_weights(path, 0.5, 2 * 10**18)  # same path, other weights
    assert new_sha != old_sha
    new = cached_encoder(params(path, new_sha)).encode(FRAMES)
    assert not np.allclose(old, new, atol=1e-3)
    direct = create_encoder("resnet10t", str(path), resize=48, crop=40).encode(FRAMES)
    np.testing.assert_array_equal(new, direct)
    assert cached_encoder(params(path, new_sha)).weights["sha256"] == new_sha


def test_a_worker_refuses_weights_other_than_the_key_was_made_for(tmp_path: Path) -> None:
    path = tmp_path / "encoder.pth"
    old_sha = save_weights(path, 0.0, 10**18)
    cached_encoder(params(path, old_sha))  # the worker has the old encoder cached
    save_weights(path, 0.25, 3 * 10**18)  # replaced while the stage runs
    with pytest.raises(WeightsError, match=f"computed for {old_sha}.*was replaced.*Fix:"):
        cached_encoder(params(path, old_sha))
    task = ShardEncoder(str(tmp_path / "episodes.hdf5"), "fixed", params(path, old_sha), 2, 1)
    with pytest.raises(WeightsError, match="was replaced"):  # what a dask task runs
        task(0, 4)
