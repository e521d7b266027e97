"""DeepMind Control suite tasks behind the same interface as AdroitEnv (pipeline/envs/adroit.py).

One env step applies the action for ``spec.action_repeat`` suite control steps and returns the sum
of their rewards (repeats in dmc_tasks.py). The horizon counts env steps, so the suite's 1000
control steps are ``1000 // action_repeat`` env steps. DeepMind Control defines no success, and
the pixel-RL papers report episode return, so ``info["success"]`` is always False.
"""

from __future__ import annotations

# Before anything that imports mujoco: this chooses the GL backend mujoco reads at import.
from pipeline.envs.offscreen import CameraRenderer, RendersCameras  # first: chooses the GL backend

# isort: split
import logging
import os
from typing import Any

import mujoco  # reads MUJOCO_GL now, before _import_suite overrides it
import numpy as np


def _import_suite() -> Any:
    """dm_control.suite, without dm_control's own GL context and fitted to the installed mujoco."""
    # dm_control opens an EGL display of its own at import and terminates it at exit, under the
    # contexts mujoco.Renderer made on the same display. We render through mujoco only, so
    # dm_control gets no GL backend; mujoco has already read MUJOCO_GL, and children inherit the
    # restored value.
    chosen = os.environ.get("MUJOCO_GL")
    os.environ["MUJOCO_GL"] = "disable"
    try:
        from dm_control import suite
        from dm_control.mujoco.wrapper.mjbindings import sizes
    finally:
        if chosen is None:
            os.environ.pop("MUJOCO_GL", None)
        else:
            os.environ["MUJOCO_GL"] = chosen
    # dm_control 1.0.50's generated field table names flex fields that mujoco 4.0 removed
    # (flex_vertedge, flexvert_J, ...); building a Physics looks every one up and fails. No suite
    # model has flexes, so dropping the absent names loses nothing.
    for struct_name, struct in (("mjmodel", mujoco.MjModel), ("mjdata", mujoco.MjData)):
        table = sizes.array_sizes[struct_name]
        for field in [f for f in table if not hasattr(struct, f)]:
            del table[field]
    return suite


class _DropDeprecatedTotalMass(logging.Filter):
    """The suite's walker model uses `settotalmass`, which mujoco 4.0 warns about at every load;
    the warning is upstream's and the model compiles to the same masses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "settotalmass" not in record.getMessage()


suite = _import_suite()
logging.getLogger("absl").addFilter(_DropDeprecatedTotalMass())

from pipeline.envs.dmc_tasks import dmc_task_spec, resolve_dmc_cameras, suite_task  # noqa: E402
from pipeline.errors import invalid_value  # noqa: E402

# Random-state entries of get_state(): numpy's MT19937 RandomState, which the suite tasks draw
# initial states from (and would draw any noise from).
_RANDOM_KEYS = ("random_key", "random_pos", "random_has_gauss", "random_gauss")


class DMCEnv(RendersCameras):
    """One DeepMind Control task: step with action repeat, save/restore state, render cameras."""

    def __init__(
        self,
        task: str,
        reward: str = "dense",
        horizon: int | None = None,
        cameras: tuple[str, ...] = (),
        width: int = 256,
        height: int = 256,
        shadows: bool = False,
        seed: int | None = None,
    ) -> None:
        self.spec = dmc_task_spec(task)
        self.task, self.reward_type = task, reward
        self.horizon = self.spec.default_horizon if horizon is None else horizon
        if self.horizon < 1:
            raise invalid_value("horizon", horizon, "a positive number of env steps")
        self.cameras = resolve_dmc_cameras(task, cameras)
        self.width, self.height, self.shadows = width, height, shadows
        # Our horizon ends episodes; an infinite suite time limit keeps dm_control from resetting
        # by itself when stepped past its own limit.
        self.env = suite.load(
            self.spec.domain, suite_task(task, reward),
            task_kwargs={"random": seed, "time_limit": float("inf")},
        )
        self.physics = self.env.physics
        self.model: mujoco.MjModel = self.physics.model.ptr
        self.data: mujoco.MjData = self.physics.data.ptr
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, width)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, height)
        self._proprio_qpos, self._proprio_qvel = _actuated_joint_indices(self.model)
        # The suite's step ends with mj_step1 and set_state with mj_forward: poses are current.
        self._renderer = CameraRenderer(self.model, self.data, self.spec.cameras, task, width,
                                        height, shadows, kinematics=False)
        self._started = False
        self.t = 0

    # --- simulation -------------------------------------------------------------------------
    def reset(self, seed: int | None = None, state: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Start an episode. ``seed`` reseeds the task's random stream (the constructor's seed
        seeds it once); without it, resets continue the stream."""
        if seed is not None:
            self.env.task.random.seed(seed)
        self.env.reset()
        self._started = True
        if state is not None:
            self.set_state(state)
        self.t = 0
        return self.observation()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        if not self._started:
            # The suite would silently turn this step into a reset.
            raise invalid_value(f"DMCEnv({self.task!r}).step", "called before reset()",
                                "a started episode. Fix: call reset() first")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.spec.act_dim,):
            raise invalid_value(f"{self.task} action shape", action.shape, f"({self.spec.act_dim},)")
        reward = 0.0
        for _ in range(self.spec.action_repeat):
            timestep = self.env.step(action)
            reward += float(timestep.reward)
        self.t += 1
        return self._flatten(timestep.observation), reward, self.t >= self.horizon, {"success": False}

    def observation(self) -> np.ndarray:
        """The suite's observation entries flattened in the order of ``spec.obs_keys``."""
        return self._flatten(self.env.task.get_observation(self.physics))

    def _flatten(self, obs: Any) -> np.ndarray:
        return np.concatenate([np.asarray(obs[key], dtype=np.float64).ravel()
                               for key, _ in self.spec.obs_keys])

    def get_state(self) -> dict[str, np.ndarray]:
        """Physics state (with the solver's warm start, which the next steps depend on at 1e-14),
        the sensor readings and the task's random state."""
        kind, key, pos, has_gauss, gauss = self.env.task.random.get_state()
        if kind != "MT19937":
            raise invalid_value(f"{self.task} random state", kind, "MT19937")
        return {
            "time": np.array(self.data.time),
            "qpos": self.data.qpos.copy(),
            "qvel": self.data.qvel.copy(),
            "act": self.data.act.copy(),
            "qacc_warmstart": self.data.qacc_warmstart.copy(),
            "sensordata": self.data.sensordata.copy(),
            "random_key": np.array(key, dtype=np.uint32),
            "random_pos": np.array(pos),
            "random_has_gauss": np.array(has_gauss),
            "random_gauss": np.array(gauss),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        # reset_context clears derived data on entry and runs mj_forward on exit, so positions,
        # sensors and the observation match the restored state.
        with self.physics.reset_context():
            self.data.time = float(state["time"])
            self.data.qpos[:] = state["qpos"]
            self.data.qvel[:] = state["qvel"]
            self.data.act[:] = state["act"]
        self.data.qacc_warmstart[:] = state["qacc_warmstart"]
        # The suite steps with mj_step2 then mj_step1, so acceleration-stage sensors (finger's
        # touch) hold the values from before the last integration; mj_forward would recompute
        # them for the new state and change the observation. They do not feed the dynamics.
        self.data.sensordata[:] = state["sensordata"]
        if all(k in state for k in _RANDOM_KEYS):
            self.env.task.random.set_state((
                "MT19937", np.asarray(state["random_key"], dtype=np.uint32),
                int(state["random_pos"]), int(state["random_has_gauss"]),
                float(state["random_gauss"]),
            ))

    def proprio(self) -> np.ndarray:
        """Positions then velocities of the actuated joints: the agent's body, not the pole,
        spinner or world position (cartpole: the cart; finger: its two joints; walker and
        cheetah: the six leg joints)."""
        return np.concatenate([self.data.qpos[self._proprio_qpos], self.data.qvel[self._proprio_qvel]])



def _actuated_joint_indices(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """qpos and qvel indices of the (hinge or slide) joints that actuators drive, in actuator order."""
    joints = [int(model.actuator_trnid[i, 0]) for i in range(model.nu)
              if model.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT]
    return (np.array([model.jnt_qposadr[j] for j in joints], dtype=np.int64),
            np.array([model.jnt_dofadr[j] for j in joints], dtype=np.int64))
