"""Adroit tasks from gymnasium-robotics with RRL's cameras, offscreen rendering and state I/O."""

from __future__ import annotations

# Before anything that imports mujoco: this chooses the GL backend mujoco reads at import.
from pipeline.envs.offscreen import CameraRenderer, RendersCameras  # first: chooses the GL backend

# isort: split
import contextlib
import io
from typing import Any

import mujoco
import numpy as np

# gymnasium_robotics prints a notice about its v1 dense rewards on import; we restore the
# hand_dapg reward below, so the notice would only mislead.
with contextlib.redirect_stderr(io.StringIO()):
    from gymnasium_robotics.envs import adroit_hand

from pipeline.config import REWARDS
from pipeline.envs.distractors import DistractorSpec, add_distractor_geoms, perturb_model
from pipeline.envs.tasks import PEN_DROP_HEIGHT, CameraPose, TaskSpec, resolve_cameras, task_spec
from pipeline.errors import unknown_name

# gymnasium-robotics 1.4.2 ("v1") flipped the sign of the hand-to-object term of the dense reward
# for door, hammer and relocate (it warns about this itself). RRL trained on hand_dapg's reward,
# where that term is a penalty, so `reward="dense"` restores it: r_hand_dapg = r_v1 - 0.2*dist.
_APPROACH_TERM = {"door": ("site", "S_grasp", "site", "S_handle"),
                  "hammer": ("site", "S_grasp", "body", "Object"),
                  "relocate": ("site", "S_grasp", "body", "Object")}


def look_at_xyaxes(pose: CameraPose) -> list[float]:
    """MuJoCo camera frame (x right, y up, looking down -z) for a camera aimed at ``lookat``."""
    forward = np.subtract(pose.lookat, pose.pos, dtype=float)
    forward /= np.linalg.norm(forward)
    up_hint = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.99 else np.array([0.0, 1.0, 0.0])
    x = np.cross(forward, up_hint)
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return [*x.tolist(), *y.tolist()]


def _env_class(spec: TaskSpec, distractors: DistractorSpec | None = None) -> type:
    """The task's env class, loading its model through MjSpec to add the missing cameras and
    the distractors (extra geoms last, so that no existing id shifts)."""
    base = getattr(adroit_hand, spec.env_class)

    def _initialize_simulation(self: Any) -> tuple[mujoco.MjModel, mujoco.MjData]:
        mj_spec = mujoco.MjSpec.from_file(self.fullpath)
        for name, pose in spec.added_cameras.items():
            mj_spec.worldbody.add_camera(
                name=name, pos=list(pose.pos), xyaxes=look_at_xyaxes(pose), fovy=pose.fovy
            )
        if distractors is not None:
            add_distractor_geoms(mj_spec, spec.name, distractors)
        model = mj_spec.compile()
        if distractors is not None:
            perturb_model(model, spec.name, distractors)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    return type(f"{spec.env_class}RRL", (base,), {"_initialize_simulation": _initialize_simulation})


class AdroitEnv(RendersCameras):
    """One Adroit task: step, reset to a saved state, proprioception, render named cameras."""

    def __init__(
        self,
        task: str,
        reward: str = "dense",
        horizon: int = 200,
        cameras: tuple[str, ...] = (),
        width: int = 256,
        height: int = 256,
        shadows: bool = False,
        seed: int | None = None,
        distractors: DistractorSpec | None = None,
    ) -> None:
        if reward not in REWARDS:
            raise unknown_name("reward", reward, REWARDS)
        self.spec = task_spec(task)
        self.task, self.reward_type, self.horizon = task, reward, horizon
        self.cameras = resolve_cameras(task, cameras)
        self.width, self.height, self.shadows = width, height, shadows
        self.distractors = distractors
        self.env = _env_class(self.spec, distractors)(
            reward_type="sparse" if reward == "sparse" else "dense", width=width, height=height
        )
        self.model: mujoco.MjModel = self.env.model
        self.data: mujoco.MjData = self.env.data
        self._renderer = CameraRenderer(self.model, self.data, self.spec.cameras, task, width,
                                        height, shadows, kinematics=True)
        self._seed = seed
        self.t = 0

    # --- simulation -------------------------------------------------------------------------
    def reset(self, seed: int | None = None, state: dict[str, np.ndarray] | None = None) -> np.ndarray:
        seed = self._seed if seed is None else seed
        self._seed = None  # seed once; later resets continue the env's random stream
        obs, _ = self.env.reset(seed=seed)
        if state is not None:
            self.set_state(state)
            obs = self.observation()
        self.t = 0
        return np.asarray(obs)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        """Observation, reward, whether the episode is over, info (``terminated``: it ended before
        the horizon, as mj_envs' pen does when the pen falls)."""
        obs, reward, _, _, info = self.env.step(np.asarray(action, dtype=np.float64))
        if self.reward_type == "dense" and self.task in _APPROACH_TERM:
            reward -= 0.2 * self._approach_distance()
        self.t += 1
        ended = self.task == "pen" and float(self._position("body", "Object")[2]) < PEN_DROP_HEIGHT
        return np.asarray(obs), float(reward), ended or self.t >= self.horizon, \
            {**info, "terminated": ended}

    def _approach_distance(self) -> float:
        kind_a, name_a, kind_b, name_b = _APPROACH_TERM[self.task]
        return float(np.linalg.norm(self._position(kind_a, name_a) - self._position(kind_b, name_b)))

    def _position(self, kind: str, name: str) -> np.ndarray:
        if kind == "site":
            return np.asarray(self.data.site(name).xpos)
        return np.asarray(self.data.body(name).xpos)

    def observation(self) -> np.ndarray:
        return np.asarray(self.env._get_obs())

    def get_state(self) -> dict[str, np.ndarray]:
        state = {k: np.array(v) for k, v in self.env.get_env_state().items()}
        if self.task == "relocate":
            # Upstream returns the object's world position, but set_env_state writes it into the
            # body's rest position, adding the object's joint offset twice once it has moved.
            # Return the model values set_env_state expects, so that restore is exact.
            state["obj_pos"] = self.model.body_pos[self.env.obj_body_id].copy()
            state["target_pos"] = self.model.site_pos[self.env.target_obj_site_id].copy()
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        # get_env_state returns derived entries (hammer: target_pos) that set_env_state rejects.
        keys = self.env._state_space.spaces
        self.env.set_env_state({k: np.asarray(v, dtype=np.float64) for k, v in state.items() if k in keys})

    def proprio(self) -> np.ndarray:
        lo, hi = self.spec.proprio
        return np.array(self.data.qpos[lo:hi])
