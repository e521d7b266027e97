"""Weights travel by content: a feature group made with a file's weights (the VAE trained here)
names that file by sha256, the store keeps a copy, and push/pull carry it. So vision DAPG goes on
in a moved data folder, and from a store pulled through S3 (a real moto_server) into a fresh data
folder with an empty cache; a pull that left the file out says which file is missing."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import WeightsError
from pipeline.rl.data import DataSource, make_sampler
from pipeline.runner import Runner, StageResult
from pipeline.store.copy import copy_group
from pipeline.store.weights_files import resolve_config_reference
from pipeline.vae.resolve import resolve_trained_weights
from stages import STAGES
from tests.helpers import TINY_RL

pytestmark = [pytest.mark.gl, pytest.mark.slow]  # VAE, encode, bc and three DAPG runs: ~2 min

TINY_VAE = {"env.width": "32", "env.height": "32", "env.cameras": "top",
            "render.workers": "1", "vae.input_size": "32", "vae.latent": "8",
            "vae.channels": "8,16", "vae.epochs": "2", "vae.batch_size": "4", "vae.threads": "1",
            "encode.workers": "1", "encode.batch_size": "8", "dapg.envs": "2"}
URL = "s3://rrl-test/teammates"


def run(cfg: PipelineConfig, data: Path, stage: str) -> StageResult:
    return Runner(cfg, STAGES, data, log=lambda m: None).run(stage)


def with_weights(cfg: PipelineConfig, weights: str, **dapg: int) -> PipelineConfig:
    return dataclasses.replace(cfg, encode=dataclasses.replace(cfg.encode, encoder="vae",
                                                               weights=weights),
                               dapg=dataclasses.replace(cfg.dapg, **dapg))


def test_vae_weights_follow_a_moved_folder_and_a_pulled_store(
        tiny_door_demos: tuple[Path, str], tmp_path: Path, s3: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, sha = tiny_door_demos
    base = PipelineConfig().with_overrides({"demos.path": str(path), "demos.sha256": sha,
                                            **TINY_RL, **TINY_VAE})
    a, moved = tmp_path / "A", tmp_path / "moved"
    vae_key = run(base, a, "vae").key
    cfg = resolve_trained_weights(with_weights(base, vae_key), a)
    first = run(cfg, a, "dapg")
    encode = Runner(cfg, STAGES, a).result("encode")
    assert encode is not None
    attrs = json.loads((a / "features.zarr" / encode.key / "zarr.json").read_text())["attributes"]
    weights = attrs["weights"]
    assert weights["file"] == "encoder.safetensors" and "path" not in weights
    assert str(a) not in json.dumps(attrs)

    # 1. The whole data folder moves: DAPG continues its finished 2-iteration run to 3, and the
    # sampler rebuilds the VAE from the store's copy (A is gone).
    shutil.move(a, moved)
    cfg_moved = resolve_trained_weights(with_weights(base, vae_key), moved)
    assert Runner(cfg_moved, STAGES, moved).key("encode") == encode.key
    longer = run(with_weights(base, cfg_moved.encode.weights, iterations=3), moved, "dapg")
    assert not longer.cache_hit and longer.summary["iterations"] == 3
    assert longer.summary["bc_start"] == first.summary["bc_start"]

    # 2. A teammate: the group is pushed to S3 and pulled into a fresh data folder with an
    # empty cache, where only its key and the weights' sha256 are known.
    copy_group(str(moved / "features.zarr"), URL, encode.key, dst_options=s3, progress=False)
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("RRL_CACHE", str(tmp_path / "fresh-cache"))
    copy_group(URL, str(fresh / "features.zarr"), encode.key, src_options=s3, progress=False)
    pulled = resolve_config_reference(with_weights(base, f"sha256:{weights['sha256']}"),
                                      str(fresh / "features.zarr"))
    assert Runner(pulled, STAGES, fresh).key("encode") == encode.key
    again = run(pulled, fresh, "dapg")  # bc from the pulled features, DAPG rebuilds the VAE
    assert again.summary["bc_start"] == first.summary["bc_start"]
    assert again.summary["final_return"] == first.summary["final_return"]
    assert not (fresh / "vae").exists()

    # 3. Pulled without its weights file (over the size limit): the features still serve, and
    # rebuilding the encoder names the file and its sha256.
    bare = tmp_path / "bare"
    monkeypatch.setenv("RRL_CACHE", str(tmp_path / "bare-cache"))
    report = copy_group(URL, str(bare / "features.zarr"), encode.key, src_options=s3,
                        progress=False, max_weights_bytes=0)
    assert any("encoder.safetensors" in note and weights["sha256"] in note
               for note in report.notes)
    with pytest.raises(WeightsError, match=rf"'encoder\.safetensors' \(sha256 {weights['sha256']}"):
        resolve_config_reference(with_weights(base, f"sha256:{weights['sha256']}"),
                                 str(bare / "features.zarr"))
    source = DataSource("door", "vision+proprio", store=str(bare / "features.zarr"),
                        feature_key=encode.key, cameras=("top",),
                        render={"width": 32, "height": 32, "shadows": False})
    with pytest.raises(WeightsError, match=rf"encoder\.safetensors.*{weights['sha256']}.*Fix:"):
        make_sampler(source, pulled.policy, pulled.env.reward, pulled.dapg.envs)
