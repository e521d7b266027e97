"""Replay demonstrations in the simulator and render every step.

Two modes (DESIGN.md section 7):
- ``states``: put the simulator in the state each recorded observation describes, then render.
  Frames show exactly the recorded trajectory; fidelity is the largest difference between the
  observation recomputed from the set state and the recorded one.
- ``open_loop``: RRL's method: restore ``init_state_dict`` and replay the recorded actions.
  Fidelity is whether the task succeeds at the end and how far the states drift from the record.

Frame ``t`` shows the state of observation ``t``, the one action ``t`` was chosen in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import EnvConfig, RenderConfig
from pipeline.envs.demos import Demo
from pipeline.envs.distractors import DistractorSpec
from pipeline.envs.gl import render_pool, select_gl_backend
from pipeline.errors import ConfigError
from pipeline.procs import exit_with_parent

if TYPE_CHECKING:
    from pipeline.store.episodes import Episode

STATES_MODE_TASKS = ("door",)
# Door observation layout: 29 joint angles (arm, hand, latch, hinge), 9 site coordinates (palm,
# handle, palm - handle), the door-open flag. Joints are set exactly; site positions in the
# recorded demos differ from the ones recomputed here by up to about 8 mm (median 0.5 mm), more
# where the hand moves fast: they were computed by an older model and MuJoCo at another point of
# the step. So joints and sites are checked against separate tolerances.
DOOR_JOINT_DIMS = slice(0, 29)
DOOR_SITE_DIMS = slice(29, 38)
JOINT_TOLERANCE = 1e-9  # radians
SITE_TOLERANCE = 0.01  # metres


@dataclass
class ReplayedEpisode:
    index: int
    frames: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8
    actions: np.ndarray
    rewards: np.ndarray
    observations: np.ndarray  # recomputed in the simulator
    states: np.ndarray  # (T, nq + nv)
    proprio: np.ndarray  # (T, 24)
    fidelity: dict[str, Any] = field(default_factory=dict)
    model_state: dict[str, np.ndarray] = field(default_factory=dict)  # body poses set per episode

    def to_episode(self) -> Episode:
        """As the episode file stores it: fidelity and model state become episode attributes."""
        from pipeline.store.episodes import Episode  # h5py stays out of the render workers

        model_state = {k: np.asarray(v).tolist() for k, v in self.model_state.items()}
        return Episode(frames=self.frames, actions=self.actions, rewards=self.rewards,
                       states=self.states, proprio=self.proprio, observations=self.observations,
                       attrs={"model_state": model_state, "fidelity": self.fidelity})


def check_mode_supported(task: str, mode: str) -> None:
    if mode == "states" and task not in STATES_MODE_TASKS:
        raise ConfigError(
            f"render.replay='states' needs a mapping from {task}'s observation to its simulator "
            f"state, which is implemented for {', '.join(STATES_MODE_TASKS)} only. "
            "Fix: use REPLAY=open_loop (--set render.replay=open_loop) for this task"
        )


def set_door_state_from_obs(env: Any, obs: np.ndarray, door_body_pos: np.ndarray) -> None:
    """Set the door model's qpos so that its observation equals ``obs``.

    qpos[1:28] are observed directly, latch and hinge too; qpos[0] (the arm's forward slide) is
    not, so it is solved from the observed palm position: the slide moves the palm along the
    joint axis, linearly.
    """
    import mujoco

    model, data = env.model, env.data
    env.env.model.body_pos[env.env.door_body_id] = door_body_pos
    qpos = np.zeros(model.nq)
    qpos[1:28] = obs[0:27]
    qpos[29], qpos[28] = obs[27], obs[28]  # latch, hinge
    data.qpos[:] = qpos
    data.qvel[:] = 0.0
    mujoco.mj_forward(model, data)
    palm_at_zero = data.site("S_grasp").xpos.copy()
    axis = data.xaxis[0].copy()  # world axis of joint 0 (ARTz slide)
    data.qpos[0] = float(np.dot(obs[29:32] - palm_at_zero, axis) / np.dot(axis, axis))
    mujoco.mj_forward(model, data)


def replay_demo(env: Any, demo: Demo, index: int, mode: str, max_steps: int | None) -> ReplayedEpisode:
    steps = min(len(demo), max_steps or len(demo))
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in env.cameras}
    observations, states, proprio, rewards = [], [], [], []
    success = ever_success = False
    if mode == "open_loop":
        env.reset(state=demo.init_state)
    for t in range(steps):
        if mode == "states":
            set_door_state_from_obs(env, demo.observations[t], demo.init_state["door_body_pos"])
        observations.append(env.observation())
        states.append(np.concatenate([env.data.qpos, env.data.qvel]))
        proprio.append(env.proprio())
        for cam, frame in env.render_all().items():
            frames[cam].append(frame)
        if mode == "open_loop":
            _, reward, _, info = env.step(demo.actions[t])
            rewards.append(reward)
            success = bool(info["success"])
            ever_success = ever_success or success
    obs = np.asarray(observations)
    diff = np.abs(obs - demo.observations[:steps])
    fidelity: dict[str, Any] = {"steps": steps, "max_abs_obs_diff": float(diff.max())}
    if mode == "states":
        fidelity.update(states_fidelity(diff))
        state_arr = np.asarray(states)
        # Observations carry no velocities: estimate qvel by finite differences of qpos.
        nq, dt = env.model.nq, env.model.opt.timestep * env.env.frame_skip
        qpos = state_arr[:, :nq]
        qvel = np.gradient(qpos, dt, axis=0) if steps > 1 else np.zeros_like(qpos)
        state_arr[:, nq:] = qvel
        states = list(state_arr)
        rewards = list(demo.rewards[:steps])
    else:
        fidelity["success"] = success  # at the last step
        fidelity["ever_success"] = ever_success
        fidelity["mean_abs_obs_drift"] = float(diff.mean())
    return ReplayedEpisode(
        index=index,
        frames={cam: np.stack(f) for cam, f in frames.items()},
        actions=demo.actions[:steps].astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        observations=obs.astype(np.float32),
        states=np.asarray(states),
        proprio=np.asarray(proprio, dtype=np.float32),
        fidelity=fidelity,
        model_state={k: np.asarray(v) for k, v in demo.init_state.items() if k not in ("qpos", "qvel")},
    )


def states_fidelity(diff: np.ndarray) -> dict[str, Any]:
    """Per-group largest differences and whether each is within its tolerance."""
    joints = float(diff[:, DOOR_JOINT_DIMS].max())
    sites = diff[:, DOOR_SITE_DIMS].max(axis=1)
    return {
        "max_joint_diff": joints,
        "max_site_diff_m": float(sites.max()),
        "median_site_diff_m": float(np.median(sites)),
        "flag_mismatches": int((diff[:, 38] > 0).sum()),
        "within_tolerance": bool(joints <= JOINT_TOLERANCE and sites.max() <= SITE_TOLERANCE
                                 and not (diff[:, 38] > 0).any()),
    }


# --- parallel rendering: one env + renderer per worker process ------------------------------
_WORKER: dict[str, Any] = {}


def demo_distractors(env: EnvConfig, index: int) -> DistractorSpec | None:
    """The scene demo `index` is rendered in: ``DistractorSpec(level, seed + index)``, so each
    demo is its own seeded scene; the level is ``distractor_level``, or with a mix
    ``distractor_levels[index % n]``; None at level 0 (the model untouched)."""
    levels = env.distractor_levels
    level = levels[index % len(levels)] if levels else env.distractor_level
    if level == 0:
        return None
    return DistractorSpec(level, env.distractor_seed + index)


def _make_env(env: EnvConfig, distractors: DistractorSpec | None) -> Any:
    from pipeline.envs.adroit import AdroitEnv

    return AdroitEnv(env.task, cameras=env.cameras, width=env.width, height=env.height,
                     shadows=env.shadows, distractors=distractors)


def _init_worker(env: EnvConfig, render: RenderConfig) -> None:
    _WORKER.update(env_cfg=env, render=render, distractors=None, env=_make_env(env, None))


def _init_pool_worker(parent_pid: int, env: EnvConfig, render: RenderConfig) -> None:
    exit_with_parent(parent_pid)  # a killed render must not leave its workers rendering
    _init_worker(env, render)


def _replay_in_worker(job: tuple[int, Demo]) -> ReplayedEpisode:
    index, demo = job
    env_cfg: EnvConfig = _WORKER["env_cfg"]
    render: RenderConfig = _WORKER["render"]
    scene = demo_distractors(env_cfg, index)
    if scene != _WORKER["distractors"]:  # the scene is compiled into the model: a new env
        _WORKER["env"].close()
        _WORKER.update(distractors=scene, env=_make_env(env_cfg, scene))
    return replay_demo(_WORKER["env"], demo, index, render.replay, render.max_steps)


def replay_parallel(env: EnvConfig, render: RenderConfig,
                    jobs: list[tuple[int, Demo]]) -> Iterator[ReplayedEpisode]:
    """Replay ``jobs`` in ``render.workers`` processes, yielding episodes in job order.

    ``env`` says what the frames look like (its cameras resolved), ``render`` how demos replay.
    """
    check_mode_supported(env.task, render.replay)
    # Here, not in the workers: a pool respawns a worker whose initialiser fails, forever.
    select_gl_backend()
    if render.workers == 1 or len(jobs) <= 1:
        _init_worker(env, render)
        for job in jobs:
            yield _replay_in_worker(job)
        return
    with render_pool(min(render.workers, len(jobs)), _init_pool_worker,
                     (os.getpid(), env, render)) as pool:
        yield from pool.imap(_replay_in_worker, jobs)
