"""Static facts about the four Adroit tasks: env classes, widths, cameras, proprioception slices.

Kept free of mujoco imports so that keys and status can be computed without touching GL.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import unknown_name

# mj_envs' pen-v0 ends an episode when the pen falls (its height below 0.075 m) and mjrl's sampler
# stops the path there (RRL's pen logs: 39,893-39,950 samples per 400 x 100 steps), where
# gymnasium-robotics' pen never ends early: pipeline/envs/adroit.py ends it.
PEN_DROP_HEIGHT = 0.075


@dataclass(frozen=True)
class CameraPose:
    """A camera added to a model: placed at ``pos``, looking at ``lookat`` (world frame, metres)."""

    pos: tuple[float, float, float]
    lookat: tuple[float, float, float]
    fovy: float = 45.0


@dataclass(frozen=True)
class TaskSpec:
    name: str
    env_class: str  # attribute of gymnasium_robotics.envs.adroit_hand
    obs_dim: int
    act_dim: int
    proprio: tuple[int, int]  # slice of qpos holding the 24 hand joints (RRL)
    rrl_cameras: tuple[str, ...]  # the cameras RRL trained on
    model_cameras: tuple[str, ...]  # cameras the gymnasium-robotics model already has
    added_cameras: dict[str, CameraPose]  # RRL's cameras missing from the model

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.model_cameras + tuple(self.added_cameras)


# The RRL camera poses are not published with the gymnasium-robotics models; these were chosen
# by eye to frame the same content (the hand and the object) and are part of the render key.
_TOP_OF_DOOR = CameraPose(pos=(0.0, -0.1, 1.4), lookat=(0.0, 0.15, 0.2))
_TOP_OF_TABLE = CameraPose(pos=(0.0, -0.1, 1.4), lookat=(0.0, 0.1, 0.1))

TASK_SPECS: dict[str, TaskSpec] = {
    "door": TaskSpec(
        "door", "AdroitHandDoorEnv", 39, 28, (4, 28), ("top",),
        ("fixed", "vil_camera"), {"top": _TOP_OF_DOOR},
    ),
    "hammer": TaskSpec(
        "hammer", "AdroitHandHammerEnv", 46, 26, (2, 26), ("top",),
        ("fixed", "vil_camera"), {"top": _TOP_OF_TABLE},
    ),
    "pen": TaskSpec(
        "pen", "AdroitHandPenEnv", 45, 24, (0, 24), ("vil_camera",),
        ("fixed", "vil_camera", "view_1", "view_2", "view_3", "view_4", "view_5"), {},
    ),
    "relocate": TaskSpec(
        "relocate", "AdroitHandRelocateEnv", 39, 30, (6, 30), ("bottom", "top", "left_cross"),
        ("fixed", "vil_camera"),
        {
            "top": CameraPose(pos=(0.0, -0.5, 0.9), lookat=(0.0, 0.0, 0.1)),
            "bottom": CameraPose(pos=(0.0, 0.3, 1.0), lookat=(0.0, -0.05, 0.1)),
            "left_cross": CameraPose(pos=(-0.8, -0.5, 0.6), lookat=(0.0, 0.0, 0.1)),
        },
    ),
}


def task_spec(task: str) -> TaskSpec:
    if task not in TASK_SPECS:
        raise unknown_name("task", task, list(TASK_SPECS))
    return TASK_SPECS[task]


def resolve_cameras(task: str, cameras: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The cameras to render: the given ones (validated) or the task's RRL cameras."""
    spec = task_spec(task)
    chosen = cameras or spec.rrl_cameras
    for cam in chosen:
        if cam not in spec.cameras:
            raise unknown_name(f"{task} camera", cam, spec.cameras)
    return tuple(chosen)


def camera_key(task: str, cameras: tuple[str, ...]) -> dict[str, object]:
    """Poses of the added cameras among ``cameras``: they change the frames, so they go in keys."""
    spec = task_spec(task)
    return {
        cam: {"pos": list(p.pos), "lookat": list(p.lookat), "fovy": p.fovy}
        for cam, p in spec.added_cameras.items()
        if cam in cameras
    }
