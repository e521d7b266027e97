"""The vae stage and the `vae` encoder on tiny renders: training lowers the held-out loss, figures
are written, cache hits, resume after a kill (same weights as a run never stopped), encoding with
WEIGHTS=<vae key> like any encoder, and the encoder's input size coming from the encoder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, WeightsError
from pipeline.outputs import result_store
from pipeline.runner import Runner, StageResult
from pipeline.store.episodes import EpisodeReader
from pipeline.vae.resolve import resolve_trained_weights
from stages import STAGES
from tests.helpers import demo_config, stand_in_pretrained

TINY = {"env.width": "32", "env.height": "32", "env.cameras": "top",
        "render.workers": "1", "vae.input_size": "32", "vae.latent": "8", "vae.channels": "8,16",
        "vae.epochs": "4", "vae.batch_size": "2", "vae.lr": "0.01", "vae.threads": "1",
        "encode.workers": "1", "encode.batch_size": "8"}
PNG = b"\x89PNG\r\n\x1a\n"


def config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    return demo_config(demos, TINY, **extra)


def run(cfg: PipelineConfig, data: Path, stage: str, log: Any = None) -> StageResult:
    return Runner(cfg, STAGES, data, log=log or (lambda m: None)).run(stage)


def with_vae(cfg: PipelineConfig, weights: str) -> PipelineConfig:
    return dataclasses.replace(cfg, encode=dataclasses.replace(cfg.encode, encoder="vae",
                                                               weights=weights))


@pytest.fixture(scope="module")
def trained(tiny_door_demos, tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("data")
    return data, run(config(tiny_door_demos), data, "vae")


def test_encoder_input_size_comes_from_the_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_pretrained(tmp_path, monkeypatch, ("resnet34",))  # RRL's defaults, offline

    def pre(**fields: str) -> dict[str, Any]:
        return dict(Runner(PipelineConfig().with_overrides(fields), STAGES, "unused")
                    .inputs("encode")["preprocessing"])

    assert pre() == {"resize": 256, "crop": 224, "normalize": "imagenet"}  # RRL's, as before
    assert pre(**{"encode.crop": "200"}) == {"resize": 256, "crop": 200, "normalize": "imagenet"}
    assert pre(**{"encode.encoder": "vae", "encode.weights": "random"}) == {
        "resize": 64, "crop": 64, "normalize": "none"}
    assert pre(**{"encode.encoder": "vae", "encode.weights": "random", "encode.resize": "80",
                  "encode.crop": "72"}) == {"resize": 80, "crop": 72, "normalize": "none"}
    with pytest.raises(ConfigError, match=r"encode\.crop"):
        pre(**{"encode.resize": "100"})  # the encoder's crop 224 does not fit in 100


def test_vae_weights_pretrained_is_refused_and_random_is_flagged() -> None:
    with pytest.raises(WeightsError, match=r"no pretrained weights.*make vae.*WEIGHTS=<key>"):
        Runner(with_vae(PipelineConfig(), "pretrained"), STAGES, "unused").key("encode")
    random = Runner(with_vae(PipelineConfig(), "random"), STAGES, "unused")
    assert random.inputs("encode")["weights"] == {"kind": "random"}


@pytest.mark.gl
def test_training_lowers_the_heldout_loss_and_draws_figures(trained) -> None:  # type: ignore[no-untyped-def]
    _, result = trained
    s, out = result.summary, result.out_dir
    assert s["heldout_loss"] < 0.8 * s["initial_heldout_loss"]
    assert s["train_frames"] == 12 and s["heldout_frames"] == 12 and len(s["heldout_episodes"]) == 1
    losses = json.loads((out / s["losses"]).read_text())
    assert [h["epoch"] for h in losses] == [0, 1, 2, 3, 4]
    for name in (s["loss_curve"], s["reconstructions"]):
        assert (out / name).read_bytes()[:8] == PNG and (out / name).stat().st_size > 5000
    assert not (out / "checkpoint.pt").exists()  # only kept until the run finishes
    assert s["architecture"] == {"input_size": 32, "latent": 8, "channels": [8, 16]}


@pytest.mark.gl
def test_second_run_is_a_cache_hit(tiny_door_demos, trained) -> None:  # type: ignore[no-untyped-def]
    data, first = trained
    again = run(config(tiny_door_demos), data, "vae")
    assert again.cache_hit and again.key == first.key


@pytest.mark.gl
def test_killed_run_resumes_and_ends_with_the_same_weights(  # type: ignore[no-untyped-def]
        tiny_door_demos, trained, tmp_path, monkeypatch) -> None:
    import pipeline.vae.train as train

    data, uninterrupted = trained
    for stage in ("demos", "render"):  # reuse the renders; the VAE trains again from nothing
        shutil.copytree(data / stage, tmp_path / stage)
    save = train._save_checkpoint

    def save_then_die(path: Path, *args: Any) -> None:
        save(path, *args)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(train, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(config(tiny_door_demos), tmp_path, "vae")
    monkeypatch.setattr(train, "_save_checkpoint", save)
    logs: list[str] = []
    resumed = run(config(tiny_door_demos), tmp_path, "vae", log=logs.append)
    assert not resumed.cache_hit and resumed.summary["resumed_from_epoch"] == 1
    assert any("resuming from the checkpoint of epoch 1 of 4" in m for m in logs)
    assert resumed.summary["encoder_sha256"] == uninterrupted.summary["encoder_sha256"]


@pytest.mark.gl
def test_encode_with_the_vae_key_like_any_encoder(tiny_door_demos, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.encoders import create_encoder
    from pipeline.encoders.preprocess import normalize_pixels, resize_crop
    from pipeline.encoders.vae import load_vae
    from pipeline.rl.data import weights_argument
    from pipeline.rl.vision import check_encoder_matches_store

    data, vae = trained
    cfg = resolve_trained_weights(with_vae(config(tiny_door_demos), vae.key[:12]), data)
    assert cfg.encode.weights == str(vae.out_dir / "encoder.safetensors")
    result = run(cfg, data, "encode")
    group = zarr.open_group(result_store(result), path=result.key, mode="r")
    attrs = dict(group.attrs)
    assert attrs["encoder"] == "vae" and attrs["weights"]["sha256"] == vae.summary["encoder_sha256"]
    assert attrs["preprocessing"]["resize"] == 32 and attrs["preprocessing"]["crop"] == 32
    assert attrs["preprocessing"]["mean"] == [0.0] * 3 and attrs["preprocessing"]["std"] == [1.0] * 3
    assert run(cfg, data, "encode").cache_hit

    # The features are the posterior means of the whole VAE on the same frames.
    with EpisodeReader(data / "render" / result.manifest["upstream"]["render"][:12]
                       / "episodes.hdf5") as reader:
        frames = torch.from_numpy(reader.read_all("top"))
    with torch.inference_mode():
        mean, _ = load_vae(vae.out_dir / "vae.safetensors").posterior(
            normalize_pixels(resize_crop(frames, 32, 32), "none"))
    stored = group["top"][:].astype(np.float32)
    assert stored.shape == (24, 8)
    np.testing.assert_allclose(stored, mean.numpy(), rtol=2e-3, atol=2e-3)

    # Rollouts rebuild the same encoder from the store's attrs, as make_sampler does.
    pre = attrs["preprocessing"]
    encoder = create_encoder(attrs["encoder"], weights_argument(result_store(result),
                                                                attrs["weights"]),
                             attrs["precision"], pre["resize"], pre["crop"])
    check_encoder_matches_store(encoder, attrs, "store")
    assert encoder.preprocessing == pre and encoder.feature_dim == 8

    # Another VAE checkpoint (same shape, other values) is another encode key.
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other.safetensors"
    tensors = load_file(cfg.encode.weights)
    tensors["mean.bias"] = tensors["mean.bias"] + 1.0
    save_file(tensors, str(other), metadata=_metadata(Path(cfg.encode.weights)))
    keys = {Runner(with_vae(cfg, w), STAGES, data).key("encode") for w in (cfg.encode.weights, str(other))}
    assert len(keys) == 2 and result.key in keys


def _metadata(path: Path) -> dict[str, str]:
    from pipeline.encoders.vae_architecture import safetensors_metadata

    return safetensors_metadata(path)


@pytest.mark.gl
def test_weights_key_must_name_one_intact_vae_output(tiny_door_demos, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, vae = trained
    with pytest.raises(WeightsError, match=r"names 0 finished vae outputs.*make vae"):
        resolve_trained_weights(with_vae(config(tiny_door_demos), "0123456789ab"), data)
    shutil.copytree(data / "vae", tmp_path / "vae")
    weights = tmp_path / "vae" / vae.key[:12] / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # no longer the file the stage wrote
    with pytest.raises(WeightsError, match="not the file the vae stage wrote"):
        resolve_trained_weights(with_vae(config(tiny_door_demos), vae.key), tmp_path)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"\.safetensors file the vae stage writes"):
        Runner(with_vae(PipelineConfig(), str(bad)), STAGES, data).key("encode")


def _square_frames(corners: list[tuple[int, int]], side: int = 16) -> torch.Tensor:
    """(N, 3, side, side) frames in [0, 1]: a grey scene with a white 3x3 square at each corner."""
    x = torch.full((len(corners), 3, side, side), 0.5)
    for i, (r, c) in enumerate(corners):
        x[i, :, r:r + 3, c:c + 3] = 1.0
    return x


def test_motion_weights_mark_what_moved_since_the_previous_frame() -> None:
    from pipeline.encoders.vae import MOTION_GROW, motion_weights

    before, now = _square_frames([(2, 2)]), _square_frames([(2, 5)])
    w = motion_weights(now, before, strength=9.0)
    assert w.shape == (1, 1, 16, 16)
    moved = w[0, 0] > 1
    assert moved[2:5, 2:8].all()  # where the square left and where it went
    assert not moved[8 + MOTION_GROW:, :].any() and not moved[:, 8 + MOTION_GROW:].any()
    assert set(w.unique().tolist()) == {1.0, 10.0}
    assert (motion_weights(now, now, strength=9.0) == 1).all()  # nothing moved: plain loss


def test_motion_weighted_training_uses_each_frames_predecessor_and_keeps_the_old_key(
        tmp_path: Path) -> None:
    from pipeline.config import VAEConfig
    from pipeline.settings import key_dict
    from pipeline.vae.data import Frames
    from pipeline.vae.train import train_vae

    assert "motion_weight" not in key_dict(VAEConfig())  # existing VAE keys stay cache hits
    assert key_dict(VAEConfig(motion_weight=5.0))["motion_weight"] == 5.0
    steps = 6
    corners = [(2, 2 + t) for t in range(steps)] * 2  # two episodes of a square moving right
    pixels = (_square_frames(corners) * 255).to(torch.uint8)
    frames = Frames(pixels, np.repeat([0, 1], steps), np.tile(np.arange(steps), 2), ("top",), 2)
    assert frames.previous_rows().tolist() == [0, 0, 1, 2, 3, 4, 6, 6, 7, 8, 9, 10]
    train, held = frames.subset(np.arange(steps)), frames.subset(np.arange(steps, 2 * steps))
    with pytest.raises(ConfigError, match="step order"):
        frames.subset(np.array([1, 0, 2])).previous_rows()
    losses = {}
    for weight in (0.0, 20.0):
        cfg = VAEConfig(input_size=16, latent=4, channels=(4, 8), epochs=1, batch_size=3,
                        motion_weight=weight)
        out = train_vae(train, held, cfg, tmp_path / f"{weight}.pt", "t",
                        log=lambda m: None, progress=False)
        losses[weight] = out.history[-1]["train_loss"]
    # Same seed, same batches: weighting the moved pixels can only raise the training loss.
    assert losses[20.0] > losses[0.0] * 1.2
