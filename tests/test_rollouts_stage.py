"""The rollouts stage on a tiny state BC policy: episode file layout and attrs, identical physics at
every distractor level with different frames, cache hit, resume, and encoding the rollouts into
the feature store (source=rollouts)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.runner import Runner, StageResult
from pipeline.store.episodes import EpisodeReader
from stages import STAGES
from tests.helpers import demo_config

pytestmark = pytest.mark.gl

SEED = 2 * 10**7  # rollouts.seed's default
TINY = {"policy.obs_mode": "state", "rollouts.policy": "bc", "rollouts.episodes": "2",
        "rollouts.distractors": "0,3", "rollouts.envs": "2", "rollouts.workers": "1",
        "env.horizon": "20", "env.width": "32", "env.height": "32",
        "encode.encoder": "resnet10t", "encode.weights": "random", "encode.resize": "32",
        "encode.crop": "32", "encode.workers": "1", "encode.batch_size": "16"}


def config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    return demo_config(demos, TINY, **extra)


def run(cfg: PipelineConfig, data: Path, stage: str = "rollouts",
        log: Any = lambda m: None) -> StageResult:
    return Runner(cfg, STAGES, data, log=log).run(stage)


@pytest.fixture(scope="module")
def rolled(tiny_door_demos, tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("data")
    return data, run(config(tiny_door_demos), data)


def episodes_file(result: StageResult) -> Path:
    return Path(result.out_dir / result.summary["episodes_file"])


def test_rollouts_file_has_the_render_layout_and_says_what_made_it(rolled, tiny_door_demos) -> None:  # type: ignore[no-untyped-def]
    data, result = rolled
    bc = Runner(config(tiny_door_demos), STAGES, data).result("bc")
    assert bc is not None and result.manifest["upstream"] == {"bc": bc.key}
    with h5py.File(episodes_file(result), "r") as f:
        root = f["data"]
        assert sorted(root) == ["demo_0", "demo_1", "demo_2", "demo_3"]
        checkpoint = bc.out_dir / bc.summary["checkpoint"]
        assert root.attrs["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        demo = root["demo_3"]
        assert demo["actions"].shape == (20, 28) and demo["rewards"].shape == (20,)
        assert demo["dones"][-1] and not demo["dones"][0]
        assert demo["states"].shape == (20, 60) and demo["obs/state"].shape == (20, 39)
        assert demo["obs/proprio"].shape == (20, 24)
        frames = demo["obs/top_image"]
        assert frames.shape == (20, 32, 32, 3) and frames.dtype == np.uint8 and frames[5].std() > 5
    with EpisodeReader(episodes_file(result)) as reader:
        info = reader.info
        attrs = [reader.attrs(i) for i in range(4)]
    assert info["policy"] == {"stage": "bc", "key": bc.key} and info["obs_mode"] == "state"
    assert info["distractor_levels"] == [0, 3] and info["rollouts_key"] == result.key
    assert [a["seed"] for a in attrs] == [SEED, SEED + 1, SEED, SEED + 1]
    assert [a["distractor_level"] for a in attrs] == [0, 0, 3, 3]
    assert all(isinstance(a["success"], bool) and a["success_steps"] >= 0 for a in attrs)
    levels = result.summary["levels"]
    assert sorted(levels) == ["0", "3"] and levels["3"]["episodes"] == 2
    assert levels["0"]["per_episode_return"] == [a["return"] for a in attrs[:2]]
    assert "render frames/s" in STAGES["rollouts"].describe(result)


def test_a_state_policy_acts_the_same_at_every_level_while_frames_differ(rolled, tiny_door_demos) -> None:  # type: ignore[no-untyped-def]
    from pipeline.rl.checkpoints import load_policy
    from pipeline.rl.sampler import evaluate

    data, result = rolled
    levels = result.summary["levels"]
    assert levels["0"]["per_episode_return"] == levels["3"]["per_episode_return"]
    assert levels["0"]["per_episode_success"] == levels["3"]["per_episode_success"]
    with EpisodeReader(episodes_file(result)) as reader:
        for i in (0, 1):  # episode i of level 0 is file episode i, of level 3 file episode 2 + i
            for key in ("actions", "states", "obs/state"):
                np.testing.assert_array_equal(reader.groups[i][key][:], reader.groups[2 + i][key][:])
            clean, distracted = (reader.groups[k]["obs/top_image"][:] for k in (i, 2 + i))
            assert np.abs(clean.astype(int) - distracted.astype(int)).mean() > 2
    # Rendering changed nothing the policy reads: the plain (non-rendering) state sampler agrees.
    bc = Runner(config(tiny_door_demos), STAGES, data).result("bc")
    assert bc is not None
    plain = evaluate(load_policy(bc.out_dir / "policy.pt"), "door", 2, seed=SEED, horizon=20)
    assert plain["per_episode_return"] == levels["0"]["per_episode_return"]


def test_second_run_is_a_cache_hit(rolled, tiny_door_demos) -> None:  # type: ignore[no-untyped-def]
    data, result = rolled
    again = run(config(tiny_door_demos), data)
    assert again.cache_hit and again.key == result.key


def test_interrupted_rollouts_resume_without_redoing_finished_episodes(rolled, tiny_door_demos,  # type: ignore[no-untyped-def]
                                                                      tmp_path) -> None:
    _, straight = rolled
    cfg = config(tiny_door_demos)

    def interrupt_after_level_0(message: str) -> None:
        if message.startswith("[rollouts] level 0: episodes 0..1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path, log=interrupt_after_level_0)
    logs: list[str] = []
    resumed = run(cfg, tmp_path, log=logs.append)
    assert any("resuming: 2 of 4 episodes already written" in m for m in logs)
    assert not any(m.startswith("[rollouts] level 0:") for m in logs)
    assert resumed.key == straight.key and list(resumed.summary["render_cost"]) == ["3"]
    assert resumed.summary["levels"] == straight.summary["levels"]
    with EpisodeReader(episodes_file(straight)) as a, EpisodeReader(episodes_file(resumed)) as b:
        assert a.names == b.names
        for key in ("actions", "rewards", "states", "top"):
            np.testing.assert_array_equal(a.read_all(key), b.read_all(key))


def test_encode_source_rollouts_writes_a_verified_group_of_the_rollout_frames(rolled, tiny_door_demos) -> None:  # type: ignore[no-untyped-def]
    import zarr

    from pipeline.encoders import create_encoder
    from pipeline.outputs import result_store

    data, rollouts = rolled
    cfg = config(tiny_door_demos, **{"encode.source": "rollouts"})
    result = run(cfg, data, "encode")
    assert result.manifest["upstream"] == {"rollouts": rollouts.key}
    assert result.key != Runner(config(tiny_door_demos), STAGES, data).key("encode")
    assert result.summary["verified"]["ok"] and result.summary["rows"] == 4 * 20
    group = zarr.open_group(result_store(result), path=result.key, mode="r")
    assert dict(group.attrs)["episodes_key"] == rollouts.key
    np.testing.assert_array_equal(group["episode_ends"][:], [20, 40, 60, 80])
    with EpisodeReader(episodes_file(rollouts)) as reader:
        frames = reader.read_all("top")
    direct = create_encoder("resnet10t", "random", resize=32, crop=32).encode(frames)
    np.testing.assert_allclose(group["top"][:].astype(np.float32), direct, rtol=1e-2, atol=1e-3)
    assert run(cfg, data, "encode").cache_hit


def test_a_checkpoint_file_is_keyed_by_its_bytes_not_its_path(rolled, tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    data, by_stage = rolled
    bc = Runner(config(tiny_door_demos), STAGES, data).result("bc")
    assert bc is not None
    copies = [tmp_path / "a" / "policy.pt", tmp_path / "b.pt"]
    for copy in copies:
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(bc.out_dir / "policy.pt", copy)
    cfgs = [config(tiny_door_demos, **{"rollouts.policy": str(c), "rollouts.episodes": "1",
                                       "rollouts.distractors": "0"}) for c in copies]
    keys = [Runner(c, STAGES, data).key("rollouts") for c in cfgs]
    assert keys[0] == keys[1] != by_stage.key
    result = run(cfgs[1], data)
    assert result.summary["policy"]["file_sha256"] == hashlib.sha256(copies[1].read_bytes()).hexdigest()
    # The same policy on the same seed as the bc stage's episode 0 (alone in its wave here: the
    # policy's batch of one may round the last bits differently).
    np.testing.assert_allclose(result.summary["levels"]["0"]["per_episode_return"],
                               by_stage.summary["levels"]["0"]["per_episode_return"][:1], rtol=1e-9)
    copies[1].write_bytes(b"not the same policy")
    assert Runner(cfgs[1], STAGES, data).key("rollouts") != keys[1]


def test_encoding_rollouts_of_a_vision_policy_is_refused_up_front(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = PipelineConfig().with_overrides({"encode.source": "rollouts"})  # a vision policy
    with pytest.raises(ConfigError, match=r"encode\.source=rollouts.*Fix"):
        Runner(cfg, STAGES, tmp_path).key("encode")  # not a RecursionError
