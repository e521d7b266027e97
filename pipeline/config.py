"""Frozen, validated configuration: one dataclass per stage, gathered in `PipelineConfig`.

Fields that cannot change a stage's output (worker counts, where to write) carry
``metadata=NOT_IN_KEY`` and are left out of the content key; everything else is in it.
Values are checked in ``__post_init__`` so a bad value fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError, invalid_value, unknown_name

TASKS = ("door", "hammer", "pen", "relocate")
REPLAY_MODES = ("states", "open_loop")
PRECISIONS = ("fp32", "bf16")
OBS_MODES = ("state", "vision+proprio", "vision", "noisy_proprio")
REWARDS = ("dense", "sparse")
NOT_IN_KEY = {"key": False}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise invalid_value(name, value, "a positive number")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise unknown_name(name, value, choices)


@dataclass(frozen=True)
class DemosConfig:
    task: str = "door"
    # A local file; when unset the file is downloaded. Its sha256, not its path, enters the key.
    path: str | None = field(default=None, metadata=NOT_IN_KEY)
    # Expected sha256 of the file. Unset means the pinned upstream checksum for the task.
    sha256: str | None = None

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise invalid_value("demos.sha256", self.sha256, "64 lowercase hex digits")


@dataclass(frozen=True)
class RenderConfig:
    cameras: tuple[str, ...] = ()  # empty: the cameras RRL used for the task
    width: int = 256
    height: int = 256
    shadows: bool = False
    replay: str = "states"
    max_demos: int | None = None  # render only the first N demos (tiny runs, tests)
    max_steps: int | None = None  # truncate each demo to N steps (tiny runs, tests)
    workers: int = field(default=2, metadata=NOT_IN_KEY)

    def __post_init__(self) -> None:
        _check_choice("render.replay", self.replay, REPLAY_MODES)
        for name in ("width", "height", "workers"):
            _check_positive(f"render.{name}", getattr(self, name))
        for name in ("max_demos", "max_steps"):
            value = getattr(self, name)
            if value is not None:
                _check_positive(f"render.{name}", value)


@dataclass(frozen=True)
class EncodeConfig:
    encoder: str = "resnet34"
    weights: str = "pretrained"  # "pretrained", "random", or a path to .pth/.safetensors
    precision: str = "fp32"
    resize: int = 256
    crop: int = 224
    batch_size: int = field(default=32, metadata=NOT_IN_KEY)
    store: str | None = field(default=None, metadata=NOT_IN_KEY)  # local path or fsspec URL
    scheduler: str | None = field(default=None, metadata=NOT_IN_KEY)  # tcp://host:port
    workers: int = field(default=2, metadata=NOT_IN_KEY)

    def __post_init__(self) -> None:
        _check_choice("encode.precision", self.precision, PRECISIONS)
        for name in ("resize", "crop", "batch_size", "workers"):
            _check_positive(f"encode.{name}", getattr(self, name))
        if self.crop > self.resize:
            raise invalid_value("encode.crop", self.crop, f"at most encode.resize={self.resize}")


@dataclass(frozen=True)
class PolicyConfig:
    obs_mode: str = "vision+proprio"
    hidden: tuple[int, ...] = (256, 256)
    proprio_noise: float = 0.0  # sigma of Gaussian noise on proprioception (noisy_proprio)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("policy.obs_mode", self.obs_mode, OBS_MODES)
        for width in self.hidden:
            _check_positive("policy.hidden", width)
        if self.obs_mode == "noisy_proprio" and self.proprio_noise <= 0:
            raise invalid_value("policy.proprio_noise", self.proprio_noise,
                                "a positive sigma when policy.obs_mode=noisy_proprio")


@dataclass(frozen=True)
class BCConfig:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "lr"):
            _check_positive(f"bc.{name}", getattr(self, name))


@dataclass(frozen=True)
class DAPGConfig:
    iterations: int = 300
    trajectories: int = 200
    horizon: int = 200
    reward: str = "dense"
    use_demos: bool = True  # False: plain NPG
    lam0: float = 1e-2
    lam1: float = 0.95
    gamma: float = 0.995
    gae_lambda: float = 0.97
    step_size: float = 0.05  # normalised KL step (mjrl's delta)
    cg_iters: int = 10
    cg_damping: float = 1e-4
    vf_epochs: int = 2
    vf_batch: int = 64
    vf_lr: float = 1e-3
    eval_episodes: int = 10  # deterministic-policy episodes per iteration (eval_score column)
    envs: int = field(default=8, metadata=NOT_IN_KEY)  # envs stepped in parallel
    record_every: int = field(default=0, metadata=NOT_IN_KEY)  # write rollouts every k iterations

    def __post_init__(self) -> None:
        _check_choice("dapg.reward", self.reward, REWARDS)
        for name in ("iterations", "trajectories", "horizon", "cg_iters", "envs"):
            _check_positive(f"dapg.{name}", getattr(self, name))


@dataclass(frozen=True)
class EvaluateConfig:
    policy: str = "dapg"  # which checkpoint: "dapg" or "bc"
    episodes: int = 50
    seed: int = 10**7  # a seed range used neither by training nor by per-iteration evaluation
    video_episodes: int = 2

    def __post_init__(self) -> None:
        _check_choice("evaluate.policy", self.policy, ("bc", "dapg"))
        _check_positive("evaluate.episodes", self.episodes)


@dataclass(frozen=True)
class PipelineConfig:
    demos: DemosConfig = field(default_factory=DemosConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    dapg: DAPGConfig = field(default_factory=DAPGConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    @property
    def task(self) -> str:
        return self.demos.task

    def with_overrides(self, overrides: dict[str, str]) -> PipelineConfig:
        """Apply ``{"render.width": "64"}``-style overrides, parsing each value to its field's type."""
        sections: dict[str, dict[str, Any]] = {}
        for dotted, raw in overrides.items():
            section, _, name = dotted.partition(".")
            if section not in _SECTIONS:
                raise unknown_name("config section", section, list(_SECTIONS))
            fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section])}
            if name not in fields:
                raise unknown_name(f"{section} setting", name, list(fields))
            sections.setdefault(section, {})[name] = parse_value(
                _field_type(_SECTIONS[section], name), raw, dotted
            )
        updated = {
            section: dataclasses.replace(getattr(self, section), **values)
            for section, values in sections.items()
        }
        return dataclasses.replace(self, **updated)


_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(PipelineConfig)}  # type: ignore[misc]


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def parse_value(tp: Any, raw: str, name: str) -> Any:
    """Parse a command-line string into the annotated type of a config field."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("", "none", "null"):
            return None
        return parse_value(next(a for a in args if a is not type(None)), raw, name)
    if origin is tuple:
        return tuple(parse_value(args[0], part.strip(), name) for part in raw.split(",") if part.strip())
    try:
        if tp is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return tp(raw)
    except ValueError:
        raise ConfigError(f"invalid {name}={raw!r}: expected a value of type {tp.__name__}") from None


def key_dict(cfg: Any) -> dict[str, Any]:
    """The fields of a stage config that enter its content key, as plain JSON-able values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("key", True):
            value = getattr(cfg, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
