"""Distractors: level 0 is today's scene, higher levels change pixels but never physics or the task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.envs.distractors import DISTRACTORS_VERSION, LEVELS, DistractorSpec
from pipeline.envs.tasks import TASK_SPECS
from pipeline.errors import ConfigError, UnknownNameError

SIZE = 64
_frames: dict[tuple[str, int | None, int], np.ndarray] = {}


def frame(task: str, level: int | None, seed: int = 0) -> np.ndarray:
    """First-RRL-camera frame after reset(seed=0); level None builds the env without a spec."""
    key = (task, level, seed)
    if key not in _frames:
        from pipeline.envs.adroit import AdroitEnv

        spec = None if level is None else DistractorSpec(level, seed)
        env = AdroitEnv(task, width=SIZE, height=SIZE, distractors=spec)
        env.reset(seed=0)
        _frames[key] = env.render(env.spec.rrl_cameras[0])
        env.close()
    return _frames[key]


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- the spec ----------------------------------------------------------------------------------
@pytest.mark.parametrize("level", [-1, 4, 1.0, True, "2"])
def test_spec_rejects_bad_levels(level: object) -> None:
    with pytest.raises(ConfigError, match=r"distractors\.level.*Fix:"):
        DistractorSpec(level=level, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 0.5, None])
def test_spec_rejects_bad_seeds(seed: object) -> None:
    with pytest.raises(ConfigError, match=r"distractors\.seed.*Fix:"):
        DistractorSpec(level=1, seed=seed)  # type: ignore[arg-type]


def test_key_is_json_and_names_the_version() -> None:
    key = DistractorSpec(level=2, seed=5).key()
    assert json.loads(json.dumps(key)) == {"level": 2, "seed": 5, "version": DISTRACTORS_VERSION}
    assert DistractorSpec(2, 5).key() != DistractorSpec(2, 6).key() != DistractorSpec(3, 6).key()


# --- frames ------------------------------------------------------------------------------------
@pytest.mark.gl
@pytest.mark.parametrize("task", list(TASK_SPECS))
def test_level_0_gives_the_frames_of_an_env_without_distractors(task: str) -> None:
    assert np.array_equal(frame(task, 0), frame(task, None))


@pytest.mark.gl
@pytest.mark.parametrize("task", list(TASK_SPECS))
def test_pixels_change_more_with_each_level(task: str) -> None:
    base = frame(task, 0)
    diffs = [mean_abs_diff(frame(task, level), base) for level in (1, 2, 3)]
    assert all(d > 0 for d in diffs), diffs
    assert diffs[0] < diffs[1] < diffs[2], diffs
    assert frame(task, 3).std() > 5, "level 3 rendered a flat image"


@pytest.mark.gl
@pytest.mark.parametrize("task", list(TASK_SPECS))
def test_seeds_give_different_frames_at_every_level_above_0(task: str) -> None:
    for level in (1, 2, 3):
        assert not np.array_equal(frame(task, level, seed=0), frame(task, level, seed=1)), level


@pytest.mark.gl
def test_same_spec_gives_bit_identical_frames() -> None:
    first = frame("hammer", 3, seed=4)
    _frames.pop(("hammer", 3, 4))
    assert np.array_equal(first, frame("hammer", 3, seed=4))


# --- physics and model structure ---------------------------------------------------------------
def _trajectory(task: str, spec: DistractorSpec | None, steps: int = 25) -> np.ndarray:
    from pipeline.envs.adroit import AdroitEnv

    env = AdroitEnv(task, distractors=spec)
    env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, env.spec.act_dim))
    rows = []
    for a in actions:
        obs, reward, _, _ = env.step(a)
        rows.append(np.concatenate([env.data.qpos, env.data.qvel, obs, [reward]]))
    env.close()
    return np.array(rows)


@pytest.mark.gl
@pytest.mark.parametrize("task", ["door", "relocate"])
def test_physics_is_identical_at_every_level(task: str) -> None:
    plain = _trajectory(task, None)
    assert np.abs(plain[-1] - plain[0]).max() > 0.01, "the actions did not move anything"
    for level in LEVELS:
        assert np.array_equal(_trajectory(task, DistractorSpec(level, seed=level)), plain), level


@pytest.mark.gl
@pytest.mark.parametrize("task", list(TASK_SPECS))
def test_extra_geoms_are_static_massless_without_contacts_and_last(task: str) -> None:
    from pipeline.envs.adroit import AdroitEnv
    from pipeline.envs.distractors import BODY_NAME, GEOM_PREFIX

    plain_env, env = AdroitEnv(task), AdroitEnv(task, distractors=DistractorSpec(3, seed=2))
    plain, model = plain_env.model, env.model
    extra = [g for g in range(model.ngeom) if model.geom(g).name.startswith(GEOM_PREFIX)]
    assert len(extra) == 8
    body = model.body(BODY_NAME).id
    assert extra == list(range(plain.ngeom, model.ngeom)), "extra geoms shifted existing ids"
    assert body == plain.nbody and model.body_jntnum[body] == 0 and model.body_weldid[body] == 0
    assert model.body_mass[body] == 0 and np.all(model.geom_bodyid[extra] == body)
    assert np.all(model.geom_contype[extra] == 0) and np.all(model.geom_conaffinity[extra] == 0)
    for kind, count in (("geom", plain.ngeom), ("body", plain.nbody), ("joint", plain.njnt),
                        ("site", plain.nsite), ("light", plain.nlight)):
        names = [getattr(model, kind)(i).name for i in range(count)]
        assert names == [getattr(plain, kind)(i).name for i in range(count)], kind
    plain_env.close()
    env.close()


@pytest.mark.gl
@pytest.mark.parametrize("task", list(TASK_SPECS))
def test_extra_geoms_are_seen_by_every_rrl_camera_and_hide_no_task_pixel(task: str) -> None:
    """Segmentation: level 3 differs from level 2 (same seed) only by the extra geoms, which must
    show up in every RRL camera but never cover the hand or the task objects."""
    import mujoco

    from pipeline.envs.adroit import AdroitEnv
    from pipeline.envs.distractors import BODY_NAME

    segments = {}
    for level in (2, 3):
        env = AdroitEnv(task, distractors=DistractorSpec(level, seed=0))
        env.reset(seed=0)
        renderer = mujoco.Renderer(env.model, SIZE, SIZE)
        renderer.enable_segmentation_rendering()
        mujoco.mj_kinematics(env.model, env.data)
        for cam in env.spec.rrl_cameras:
            renderer.update_scene(env.data, camera=cam)
            segments[level, cam] = renderer.render()[..., 0].copy()  # geom id per pixel, -1 none
        renderer.close()
        model = env.model
        env.close()
    first_extra = model.body_geomadr[model.body(BODY_NAME).id]
    scenery = {0} | {g for g in range(first_extra) if model.geom_bodyid[g] == model.body("table").id}
    for cam in env.spec.rrl_cameras:
        before, after = segments[2, cam], segments[3, cam]
        task_pixels = (before >= 0) & ~np.isin(before, list(scenery))
        assert task_pixels.sum() > 20, cam
        assert np.array_equal(after[task_pixels], before[task_pixels]), f"{cam}: task hidden"
        assert (after >= first_extra).sum() > 20, f"{cam}: extra geoms out of view"


@pytest.mark.gl
def test_unknown_task_is_refused() -> None:
    from pipeline.envs.adroit import AdroitEnv
    from pipeline.envs.distractors import perturb_model

    env = AdroitEnv("door")
    with pytest.raises(UnknownNameError, match="relocate"):
        perturb_model(env.model, "cup", DistractorSpec(1, 0))
    env.close()


# --- contact sheet -----------------------------------------------------------------------------
@pytest.mark.gl
def test_contact_sheet_holds_the_frames_in_level_rows_and_seed_columns(tmp_path: Path) -> None:
    from PIL import Image

    from pipeline.envs.distractor_sheet import write_distractor_sheet

    levels, seeds = (0, 3), (0, 1)
    path = write_distractor_sheet("door", tmp_path / "sub" / "sheet.png", levels=levels,
                                  seeds=seeds, size=SIZE)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    label_width = sheet.shape[1] - len(seeds) * SIZE
    assert label_width > 0
    for row, level in enumerate(levels):
        for col, seed in enumerate(seeds):
            top, left = sheet.shape[0] - (len(levels) - row) * SIZE, label_width + col * SIZE
            cell = sheet[top:top + SIZE, left:left + SIZE]
            assert np.array_equal(cell, frame("door", level, seed)), (level, seed)
