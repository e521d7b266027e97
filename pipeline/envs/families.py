"""One answer to "what is this task": its family (Adroit or DeepMind Control) and its facts.

Code that needs a task's widths, cameras, rewards, success rule or default horizon asks here, so
it works for both families; the family modules (``tasks.py``, ``dmc_tasks.py``) keep the details.
The config settings whose meaning depends on the family are resolved here too (``horizon``,
``encode_source``, ``rollouts_policy``), and ``check_task_config`` refuses the settings a family
does not have. Free of mujoco and dm_control imports, like the family modules, so that keys and
status are computed without touching GL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import REWARDS, PipelineConfig
from pipeline.envs.dmc_tasks import DMC_TASK_SPECS, resolve_dmc_cameras
from pipeline.envs.tasks import PEN_DROP_HEIGHT, TASK_SPECS, camera_key, resolve_cameras
from pipeline.errors import ConfigError, unknown_name

ADROIT, DMC = "adroit", "dmc"
# hand_dapg's evaluate_success: an episode succeeds if the goal holds for more than this many steps.
_ADROIT_SUCCESS_STEPS = {"door": 25, "hammer": 25, "relocate": 25, "pen": 20}
# Episode lengths of mj_envs' v0 registrations (max_episode_steps), which RRL and hand_dapg
# trained and scored with: pen 100, the others 200 (gymnasium-robotics gives pen 200 as well).
_ADROIT_HORIZON = {"door": 200, "hammer": 200, "pen": 100, "relocate": 200}



@dataclass(frozen=True)
class TaskFacts:
    name: str
    family: str  # ADROIT | DMC
    obs_dim: int  # the env's low-dimensional observation (state mode)
    act_dim: int  # actions lie in [-1, 1]^act_dim in both families
    proprio_dim: int  # Adroit: the 24 hand joints (RRL); DMC: actuated joints' positions+velocities
    cameras: tuple[str, ...]  # every camera the task offers
    default_cameras: tuple[str, ...]  # rendered when render.cameras is empty (RRL's / pixel-RL's)
    rewards: tuple[str, ...]
    default_horizon: int  # env steps per episode when dapg.horizon is unset
    has_demos: bool
    # Success if the env's success signal holds for more than this many steps; None: the family
    # defines no success (DeepMind Control), and results are episode returns.
    success_steps: int | None

    @property
    def has_success(self) -> bool:
        return self.success_steps is not None


def _adroit(name: str) -> TaskFacts:
    spec = TASK_SPECS[name]
    return TaskFacts(name, ADROIT, spec.obs_dim, spec.act_dim, spec.proprio[1] - spec.proprio[0],
                     spec.cameras, spec.rrl_cameras, REWARDS, _ADROIT_HORIZON[name], True,
                     _ADROIT_SUCCESS_STEPS[name])


def _dmc(name: str) -> TaskFacts:
    spec = DMC_TASK_SPECS[name]
    return TaskFacts(name, DMC, spec.obs_dim, spec.act_dim, spec.proprio_dim, spec.cameras,
                     (spec.default_camera,), spec.rewards, spec.default_horizon, False, None)


TASK_FACTS: dict[str, TaskFacts] = {**{n: _adroit(n) for n in TASK_SPECS},
                                    **{n: _dmc(n) for n in DMC_TASK_SPECS}}


def task_facts(task: str) -> TaskFacts:
    if task not in TASK_FACTS:
        raise unknown_name("task", task, list(TASK_FACTS))
    return TASK_FACTS[task]


def family(task: str) -> str:
    return task_facts(task).family


def resolve_task_cameras(task: str, cameras: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The cameras to render: the given ones (validated) or the task's default ones."""
    if family(task) == DMC:
        return resolve_dmc_cameras(task, cameras)
    return resolve_cameras(task, cameras)


def task_camera_key(task: str, cameras: tuple[str, ...]) -> dict[str, object]:
    """Poses of cameras the project added to the model (they change the frames: keyed).
    The DeepMind Control models are used as they are."""
    return {} if family(task) == DMC else camera_key(task, cameras)


def no_demos_error(task: str, needs: str) -> ConfigError:
    """The error for asking a task without demonstrations for them; `needs` says who and why."""
    return ConfigError(
        f"{task} has no demonstrations (DeepMind Control tasks come without any), but {needs}. "
        "Fix: learn with NPG (--set dapg.use_demos=false), which starts from a fresh policy, and "
        "encode the features of random-policy rollouts (SOURCE=auto, the default)")


def without_demos(cfg: PipelineConfig) -> str | None:
    """For the stages that exist only where there are demos (demos, render, vae): why not."""
    if task_facts(cfg.task).has_demos:
        return None
    return f"{cfg.task} has no demonstrations (DeepMind Control): nothing to replay or render"


def require_demos(task: str, needs: str) -> None:
    if not task_facts(task).has_demos:
        raise no_demos_error(task, needs)


# --- settings whose meaning depends on the family ---------------------------------------------

def horizon(cfg: PipelineConfig) -> int:
    """env.horizon, or the task's default when unset (Adroit 200; DMC 1000 // action repeat)."""
    return resolved_horizon(cfg.task, cfg.env.horizon)


def resolved_horizon(task: str, horizon: int | None) -> int:
    """The one place an unset horizon becomes the task's own episode length."""
    return horizon or task_facts(task).default_horizon


def episode_end_rule(task: str) -> dict[str, Any]:
    """How an episode may end before the horizon, for the keys of the stages that step envs
    (empty where it never does, so those tasks' keys stay as they were)."""
    return {"ends_when_pen_below": PEN_DROP_HEIGHT} if task == "pen" else {}


def encode_source(cfg: PipelineConfig) -> str:
    """What encode reads: ``demos`` (rendered) or ``rollouts``; ``auto`` is the rendered demos
    where the task has demos, else the rollouts stage's episodes (random-policy by default)."""
    source = cfg.encode.source
    if source != "auto":
        return source
    return "demos" if task_facts(cfg.task).has_demos else "rollouts"


def rollouts_policy(cfg: PipelineConfig) -> str:
    """rollouts.policy, with ``auto`` resolved: the dapg checkpoint where the task has demos
    (Adroit), else uniform random actions (DMC: the episodes its features are encoded from)."""
    policy = cfg.rollouts.policy
    if policy != "auto":
        return policy
    return "dapg" if task_facts(cfg.task).has_demos else "random"


def check_task_config(cfg: PipelineConfig) -> None:
    """Refuse the settings the task's family does not have (checked when keys are computed)."""
    facts = task_facts(cfg.task)
    if cfg.env.reward not in facts.rewards:
        raise ConfigError(f"invalid env.reward={cfg.env.reward!r} for {cfg.task}: it offers "
                          f"{', '.join(facts.rewards)}. Fix: REWARD={facts.rewards[0]}")
    resolve_task_cameras(cfg.task, cfg.env.cameras)  # unknown cameras fail, listing the valid
    if facts.family == ADROIT:
        return
    levels: dict[str, Any] = {"env.distractor_level": cfg.env.distractor_level,
                              "env.distractor_levels": cfg.env.distractor_levels or 0,
                              "evaluate.distractors": cfg.evaluate.distractors,
                              "rollouts.distractors": cfg.rollouts.distractors}
    for name, value in levels.items():
        if value not in (0, (0,)):
            raise ConfigError(
                f"invalid {name}={value!r} for {cfg.task}: visual distractors exist for the Adroit "
                "tasks only (pipeline/envs/distractors.py edits their scenes). Fix: DISTRACTORS=0 "
                "(and env.distractor_level=0)")
    if cfg.encode.source == "demos":
        raise no_demos_error(cfg.task, "encode.source=demos encodes their rendered frames")
