"""DeepMind Control envs: widths match the suite, seeding and state restore are exact, action
repeat sums the suite's rewards, every camera renders, and the module stays free of torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.envs.dmc_tasks import DMC_TASK_SPECS, dmc_task_spec, resolve_dmc_cameras, suite_task
from pipeline.errors import ConfigError, UnknownNameError

pytestmark = pytest.mark.gl


@pytest.fixture(scope="module", params=list(DMC_TASK_SPECS))
def env(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    from pipeline.envs.dmc import DMCEnv

    e = DMCEnv(request.param, width=64, height=64, seed=0)
    e.reset()
    yield e
    e.close()


def _actions(env, n: int, seed: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.random.default_rng(seed).uniform(-1, 1, (n, env.spec.act_dim))


def test_widths_match_the_suite(env) -> None:  # type: ignore[no-untyped-def]
    suite_obs = env.env.observation_spec()
    assert [(k, int(np.prod(v.shape))) for k, v in suite_obs.items()] == list(env.spec.obs_keys)
    assert env.env.action_spec().shape == (env.spec.act_dim,)
    assert tuple(env.model.camera(i).name for i in range(env.model.ncam)) == env.spec.cameras
    assert env.observation().shape == (env.spec.obs_dim,)
    assert env.proprio().shape == (env.spec.proprio_dim,)
    obs, reward, done, info = env.step(np.zeros(env.spec.act_dim))
    assert obs.shape == (env.spec.obs_dim,) and np.isfinite(reward)
    assert info == {"success": False} and not done


def test_proprio_is_the_actuated_joints(env) -> None:  # type: ignore[no-untyped-def]
    """Cartpole's proprio is the cart, not the pole; walker and cheetah: the leg joints."""
    env.step(_actions(env, 1)[0])
    names = [env.model.joint(i).name for i in range(env.model.njnt)]
    qpos_names = [names[int(np.flatnonzero(env.model.jnt_qposadr == a)[0])] for a in env._proprio_qpos]
    expected = {"cartpole-swingup": ["slider"], "finger-spin": ["proximal", "distal"]}
    assert qpos_names == expected.get(env.task, names[3:])
    n = env.spec.proprio_dim // 2
    np.testing.assert_array_equal(env.proprio()[n:], env.data.qvel[env._proprio_qvel])


def test_same_seed_same_start_and_trajectory(env) -> None:  # type: ignore[no-untyped-def]
    from pipeline.envs.dmc import DMCEnv

    def rollout(e: DMCEnv, first: np.ndarray) -> np.ndarray:
        return np.array([first] + [e.step(a)[0] for a in _actions(e, 4)])

    fresh = [DMCEnv(env.task, seed=7) for _ in range(2)]
    runs = [rollout(e, e.reset()) for e in fresh]
    reseeded = rollout(env, env.reset(seed=7))  # a used env, reseeded, starts the same
    other = fresh[0].reset(seed=8)
    for e in fresh:
        e.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], reseeded)
    assert not np.array_equal(runs[0][0], other), "the seed does not change the initial state"


def test_set_state_reproduces_the_next_steps_exactly(env) -> None:  # type: ignore[no-untyped-def]
    env.reset(seed=1)
    for a in _actions(env, 3, seed=1):
        env.step(a)
    state, obs_at_save = env.get_state(), env.observation()
    actions = _actions(env, 5, seed=2)

    def continue_from_here() -> tuple[np.ndarray, list[float], np.ndarray]:
        steps = [env.step(a) for a in actions]
        return np.array([s[0] for s in steps]), [s[1] for s in steps], env.proprio()

    original = continue_from_here()
    env.set_state(state)
    np.testing.assert_array_equal(env.observation(), obs_at_save)
    again = [continue_from_here()]
    np.testing.assert_array_equal(env.reset(state=state), obs_at_save)
    again.append(continue_from_here())
    for run in again:
        np.testing.assert_array_equal(run[0], original[0])
        assert run[1] == original[1]
        np.testing.assert_array_equal(run[2], original[2])
    # The random stream comes back too: the next reset starts where it would have.
    env.set_state(state)
    first = env.reset()
    env.set_state(state)
    np.testing.assert_array_equal(env.reset(), first)


def test_every_camera_gives_a_non_constant_frame(env) -> None:  # type: ignore[no-untyped-def]
    for camera in env.spec.cameras:
        frame = env.render(camera)
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        assert frame.std() > 5, f"{env.task}/{camera} rendered a flat image"
    assert list(env.render_all()) == [env.spec.default_camera]


def test_restored_state_renders_the_same_frame(env) -> None:  # type: ignore[no-untyped-def]
    state = env.get_state()
    before = env.render_all()
    for a in _actions(env, 3):
        env.step(a)
    env.set_state(state)
    for cam, frame in env.render_all().items():
        np.testing.assert_array_equal(frame, before[cam])


def test_action_repeat_sums_the_suite_rewards(env) -> None:  # type: ignore[no-untyped-def]
    """One env step equals `repeat` control steps of a raw suite env stepped by hand."""
    from pipeline.envs.dmc import suite

    spec = env.spec
    raw = suite.load(spec.domain, suite_task(env.task, "dense"), task_kwargs={"random": 5})
    raw.reset()
    env.reset(seed=5)
    for a in _actions(env, 4, seed=3):
        expected = sum(raw.step(a).reward for _ in range(spec.action_repeat))
        obs, reward, _, _ = env.step(a)
        assert reward == expected
        raw_obs = raw.task.get_observation(raw.physics)
        np.testing.assert_array_equal(obs, np.concatenate([np.ravel(raw_obs[k]) for k, _ in spec.obs_keys]))
    assert spec.default_horizon * spec.action_repeat == 1000


def test_random_policy_returns_are_finite_and_episodes_end_at_the_horizon() -> None:
    from pipeline.envs.dmc import DMCEnv

    for task in DMC_TASK_SPECS:
        e = DMCEnv(task, horizon=12, seed=0)
        e.reset()
        total, dones = 0.0, []
        for a in _actions(e, 12):
            _, reward, done, _ = e.step(a)
            total += reward
            dones.append(done)
        e.close()
        repeat = e.spec.action_repeat
        assert np.isfinite(total) and 0.0 <= total <= 12 * repeat, (task, total)
        assert dones == [False] * 11 + [True]


def test_cartpole_sparse_reward_is_the_suite_sparse_task() -> None:
    from pipeline.envs.dmc import DMCEnv

    e = DMCEnv("cartpole-swingup", reward="sparse", seed=0)
    e.reset()
    rewards = {e.step(a)[1] for a in _actions(e, 5)}
    e.close()
    assert rewards <= {float(k) for k in range(9)}  # 8 repeats of a 0/1 reward


def test_bad_names_and_misuse_say_what_is_valid() -> None:
    from pipeline.envs.dmc import DMCEnv

    with pytest.raises(UnknownNameError, match="cartpole-swingup"):
        dmc_task_spec("cartpole")
    with pytest.raises(UnknownNameError, match="lookatcart"):
        resolve_dmc_cameras("cartpole-swingup", ("top",))
    with pytest.raises(UnknownNameError, match="dense"):
        suite_task("walker-walk", "sparse")
    e = DMCEnv("cartpole-swingup", seed=0)
    with pytest.raises(ConfigError, match="reset"):
        e.step(np.zeros(1))
    e.reset()
    with pytest.raises(ConfigError, match=r"\(1,\)"):
        e.step(np.zeros(2))
    with pytest.raises(UnknownNameError, match="fixed"):
        e.render("side")
    e.close()


def test_importing_the_dmc_env_does_not_import_torch() -> None:
    code = "import sys, pipeline.envs.dmc; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_finger_touch_survives_a_restore_in_contact() -> None:
    """Touch is read before the last integration substep, so it cannot be recomputed from
    qpos/qvel: restore must bring back the reading the suite reported."""
    from pipeline.envs.dmc import DMCEnv

    e = DMCEnv("finger-spin", seed=0)
    e.reset()
    rng = np.random.default_rng(0)
    obs = e.observation()
    for _ in range(2000):
        obs = e.step(rng.uniform(-1, 1, 2))[0]
        if obs[-2:].any():
            break
    assert obs[-2:].any(), "the random policy never touched the spinner"
    e.set_state(e.get_state())
    np.testing.assert_array_equal(e.observation(), obs)
    e.close()


def test_dm_control_gets_no_gl_backend_and_ours_is_kept() -> None:
    """We render with mujoco.Renderer; dm_control's own EGL display would be terminated at exit
    under our contexts. Worker processes must inherit the backend we chose, not the override."""
    import os

    from dm_control import _render

    from pipeline.envs.dmc import DMCEnv
    from pipeline.envs.gl import KNOWN_BACKENDS

    assert os.environ["MUJOCO_GL"] in KNOWN_BACKENDS
    assert _render.BACKEND not in ("egl", "osmesa", "glfw")
    assert DMCEnv("cartpole-swingup", width=64, height=64).reset() is not None
