"""The encode stage with chosen layers, end to end on tiny door renders: one array per camera and
layer, values equal to an independent timm forward with timm's own transform (a ConvNeXt and a
ViT), a cache hit the second time, FEATURES= for the learning stages, and the zoo probe over every stored layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from pipeline.config import PipelineConfig
from pipeline.outputs import result_store
from pipeline.rl.data import DataSource, demo_arrays
from pipeline.runner import Runner, StageResult
from pipeline.store.episodes import EpisodeReader
from pipeline.study.spec import load_experiment
from pipeline.study.zoo_probe import probe_experiment, probe_table
from stages import STAGES
from tests.conftest import synthetic_door_demos, write_demo_pickle

pytestmark = pytest.mark.gl

TINY = {"env.width": "48", "env.height": "48", "env.cameras": "top",
        "render.workers": "1", "encode.workers": "1", "encode.batch_size": "8",
        "encode.encoder": "convnext_atto", "encode.weights": "random",
        "encode.layers": "1,2,pre_logits"}


@pytest.fixture(scope="module")
def four_demos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("demos4") / "door-v0_demos.pickle"
    return path, write_demo_pickle(path, synthetic_door_demos(n=4, steps=8))


def independent_timm(result: StageResult, data: Path, name: str) -> tuple[Any, torch.Tensor]:
    """timm's model ``name`` (the stage's seed) and timm's own create_transform of each PIL frame
    the encode ``result`` read: the reference its stored features must equal."""
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    episodes = result.manifest["upstream"]["render"][:12]
    with EpisodeReader(data / "render" / episodes / "episodes.hdf5") as reader:
        frames = reader.read_all("top")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    transform = create_transform(**resolve_model_data_config(model))
    return model, torch.stack([transform(Image.fromarray(f)) for f in frames])


def test_layers_are_stored_from_one_pass_and_match_timm(four_demos: tuple[Path, str],
                                                        tmp_path: Path) -> None:
    path, sha = four_demos
    cfg = PipelineConfig().with_overrides({"demos.path": str(path), "demos.sha256": sha, **TINY})
    result = Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("encode")
    assert result.summary["features"] == {"layer1": 80, "layer2": 160, "pre_logits": 320}
    group = zarr.open_group(result_store(result), path=result.key, mode="r")
    assert {"top", "top@layer1", "top@layer2"} <= set(group.array_keys())
    assert group.attrs["preprocessing"]["interpolation"] == "bicubic"  # timm's, not RRL's

    model, x = independent_timm(result, tmp_path, "convnext_atto")
    with torch.inference_mode():
        final, (one, two) = model.forward_intermediates(x, indices=[1, 2])
        expected = {"top@layer1": one.mean((2, 3)), "top@layer2": two.mean((2, 3)),
                    "top": model.forward_head(final, pre_logits=True)}
    for name, ref in expected.items():
        stored = group[name][:].astype(np.float32)
        # float16 storage (relative 2^-11) on the same input tensor (0 grey levels apart here)
        np.testing.assert_allclose(stored, ref.numpy(), rtol=2e-3, atol=2e-3 * float(ref.abs().max()))
    assert Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("encode").cache_hit

    def policy_input(mode: str, *features: str) -> np.ndarray:
        source = DataSource("door", mode, store=result_store(result), feature_key=result.key,
                            cameras=("top",), features=features)
        return demo_arrays(source, cfg.policy)[0]

    assert policy_input("vision").shape[1] == 80 + 160 + 320  # FEATURES unset: all of them
    chosen = policy_input("vision", "1")  # FEATURES=1: layer1 only
    np.testing.assert_array_equal(chosen, group["top@layer1"][:].astype(np.float32))
    with_proprio = policy_input("vision+proprio", "layer2", "pre_logits")
    np.testing.assert_array_equal(with_proprio[:, :480], np.concatenate(
        [group["top@layer2"][:], group["top"][:]], axis=1).astype(np.float32))

    # The zoo probe: one row per stored feature, ranked, random weights flagged.
    toml = tmp_path / "tiny_zoo.toml"
    toml.write_text('title = "tiny zoo"\n[[cells]]\nname = "convnext_atto"\n'
                    '[budgets.smoke]\n"probe.folds" = 2\n')
    rows = probe_experiment(load_experiment(toml), "smoke", cfg, STAGES, tmp_path,
                            log=lambda m: None)
    assert sorted(r.feature for r in rows) == ["layer1", "layer2", "pre_logits"]
    assert [r.mean_r2 for r in rows] == sorted((r.mean_r2 for r in rows), reverse=True)
    table = probe_table(rows, "tiny", "rrl experiment probe tiny_zoo")
    assert table.count("**RANDOM**") == 3 and "| 1 | convnext_atto |" in table


def test_a_vit_stored_by_the_stage_matches_an_independent_timm_forward(
        four_demos: tuple[Path, str], tmp_path: Path) -> None:
    # The second model of its 'what it must show': a ViT through the stage's fast uint8
    # resize (at most 2 grey levels from timm's PIL transform on the same frame, test_zoo.py).
    path, sha = four_demos
    cfg = PipelineConfig().with_overrides({
        "demos.path": str(path), "demos.sha256": sha, **TINY,
        "encode.encoder": "vit_tiny_patch16_224", "encode.layers": "-1,pre_logits",
        "encode.pool": "cls"})
    result = Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("encode")
    group = zarr.open_group(result_store(result), path=result.key, mode="r")
    model, x = independent_timm(result, tmp_path, "vit_tiny_patch16_224")
    with torch.inference_mode():
        final, ((_, prefix),) = model.forward_intermediates(x, indices=[-1], output_fmt="NLC",
                                                            return_prefix_tokens=True)
        expected = {"top": model.forward_head(final, pre_logits=True),
                    "top@layer-1.cls": prefix[:, 0]}
    assert set(group.array_keys()) == {"episode_ends", *expected}
    for name, ref in expected.items():
        # measured: 4.8e-4 of the largest value, for both (float16 storage, and the input's at
        # most 2 grey levels from timm's PIL resize carried through 12 blocks)
        np.testing.assert_allclose(group[name][:].astype(np.float32), ref.numpy(), rtol=0,
                                   atol=5e-3 * float(ref.abs().max()))
    assert Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("encode").cache_hit
