"""Static facts about the DeepMind Control tasks we run: suite names, widths, cameras, repeats.

Kept free of mujoco and dm_control imports (like tasks.py) so that keys and status can be computed
without touching GL. Widths are checked against the live suite by tests/test_dmc.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import unknown_name


@dataclass(frozen=True)
class DMCTaskSpec:
    name: str  # our name, "<domain>-<task>" as the pixel-RL papers write it
    domain: str  # dm_control.suite domain
    suite_tasks: dict[str, str]  # our reward name -> the suite task giving that reward
    action_repeat: int  # physics control steps per env step
    obs_keys: tuple[tuple[str, int], ...]  # suite observation entries, in flattening order
    act_dim: int
    proprio_dim: int  # positions then velocities of the actuated joints
    cameras: tuple[str, ...]  # the model's cameras; the first is the pixel-RL default

    @property
    def obs_dim(self) -> int:
        return sum(width for _, width in self.obs_keys)

    @property
    def rewards(self) -> tuple[str, ...]:
        return tuple(self.suite_tasks)

    @property
    def default_camera(self) -> str:
        return self.cameras[0]

    @property
    def default_horizon(self) -> int:
        """The suite's 1000 control steps, counted in env steps after action repeat."""
        return SUITE_CONTROL_STEPS // self.action_repeat

    def episodes_for(self, control_steps: int, horizon: int | None = None) -> int:
        """Whole episodes of ``horizon`` env steps (default: the task's) covering ``control_steps``
        suite control steps, the unit of DMControl-100k's budget."""
        return -(-control_steps // ((horizon or self.default_horizon) * self.action_repeat))


# Every task below has a time limit of 1000 control steps in the suite; returns are in [0, 1000].
SUITE_CONTROL_STEPS = 1000

# Action repeats follow PlaNet (Hafner et al. 2019), kept by SAC-AE, CURL, RAD and DrQ, so that
# results compare with theirs. "dense" is the suite task's standard reward (finger-spin's is
# already a 0/1 reward per step); cartpole also has the suite's sparse variant.
DMC_TASK_SPECS: dict[str, DMCTaskSpec] = {
    "cartpole-swingup": DMCTaskSpec(
        "cartpole-swingup", "cartpole", {"dense": "swingup", "sparse": "swingup_sparse"},
        action_repeat=8, obs_keys=(("position", 3), ("velocity", 2)), act_dim=1,
        proprio_dim=2, cameras=("fixed", "lookatcart"),
    ),
    "finger-spin": DMCTaskSpec(
        "finger-spin", "finger", {"dense": "spin"},
        action_repeat=2, obs_keys=(("position", 4), ("velocity", 3), ("touch", 2)), act_dim=2,
        proprio_dim=4, cameras=("cam0", "cam1"),
    ),
    "walker-walk": DMCTaskSpec(
        "walker-walk", "walker", {"dense": "walk"},
        action_repeat=2, obs_keys=(("orientations", 14), ("height", 1), ("velocity", 9)),
        act_dim=6, proprio_dim=12, cameras=("side", "back"),
    ),
    "cheetah-run": DMCTaskSpec(
        "cheetah-run", "cheetah", {"dense": "run"},
        action_repeat=4, obs_keys=(("position", 8), ("velocity", 9)), act_dim=6,
        proprio_dim=12, cameras=("side", "back"),
    ),
}


def dmc_task_spec(task: str) -> DMCTaskSpec:
    if task not in DMC_TASK_SPECS:
        raise unknown_name("DeepMind Control task", task, list(DMC_TASK_SPECS))
    return DMC_TASK_SPECS[task]


def suite_task(task: str, reward: str) -> str:
    """The suite task that gives ``reward`` for ``task``."""
    spec = dmc_task_spec(task)
    if reward not in spec.suite_tasks:
        raise unknown_name(f"{task} reward", reward, spec.rewards)
    return spec.suite_tasks[reward]


def resolve_dmc_cameras(task: str, cameras: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The cameras to render: the given ones (validated) or the task's pixel-RL default."""
    spec = dmc_task_spec(task)
    chosen = cameras or (spec.default_camera,)
    for cam in chosen:
        if cam not in spec.cameras:
            raise unknown_name(f"{task} camera", cam, spec.cameras)
    return tuple(chosen)
