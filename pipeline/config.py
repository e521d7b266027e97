"""Frozen, validated configuration: one dataclass per stage, gathered in `PipelineConfig`.

Every field is declared with `setting(default, ...)`, whose metadata says what a valid value is
(range, choices) and whether it enters the content key. Fields that cannot change a stage's output
(worker counts, where to write) carry ``key=False``. Fields added after a stage's outputs already
existed carry ``key="if_set"``: they enter the key only when they differ from their default, so old
outputs keep their keys. Every value is checked on construction (type, finiteness, range, choice),
so a bad value fails before any work starts, whether it came from the command line or from code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipeline.devices import DEVICE_PATTERN
from pipeline.errors import ConfigError, invalid_value, unknown_name
from pipeline.settings import (
    SHA256_PATTERN,
    Validated,
    field_type,
    parse_value,
    setting,
)

# Adroit, then DeepMind Control; pipeline/envs/families.py holds each task's facts (a test checks
# that it knows exactly these).
TASKS = ("door", "hammer", "pen", "relocate", "cartpole-swingup", "finger-spin", "walker-walk",
         "cheetah-run")
REPLAY_MODES = ("states", "open_loop")
# How episode files store frames (pipeline/store/frames.py); lossless, so not in any key.
FRAME_CODECS = ("zstd", "lzf")
PRECISIONS = ("fp32", "bf16")
OBS_MODES = ("state", "vision+proprio", "vision", "noisy_proprio")
REWARDS = ("dense", "sparse")
ENCODE_SOURCES = ("auto", "demos", "rollouts")
INTERPOLATIONS = ("bilinear", "bicubic")  # resizing an encoder's input (encode.interpolation)
POOLS = ("auto", "avg", "cls", "both")  # a chosen layer -> one vector (pipeline/encoders/layers.py)
POLICY_STAGES = ("bc", "dapg")
HORIZON_VALUES = ("zero", "bootstrap")  # dapg.horizon_value
# rollouts.policy names that are not checkpoint files: auto (dapg where the task has demos, else
# random), random (uniform over the action box), or this config's bc/dapg checkpoint.
ROLLOUT_POLICIES = ("auto", "random", *POLICY_STAGES)


@dataclass(frozen=True)
class EnvConfig(Validated):
    """The environment: every stage that makes one (render, rollouts, dapg, evaluate) reads this.

    Apart from the algorithms' own settings, as LeRobot keeps its EnvConfig apart from the policy
    config: a DAPG config says how to learn, this one what is learnt on and how it looks.
    """

    task: str = setting("door", choices=TASKS)
    reward: str = setting("dense", choices=REWARDS)
    # Env steps per episode; None: the task's own (Adroit 200, pen 100; DMC 1000 // action
    # repeat). The stages key the resolved value: an unset horizon and the same value share a key.
    horizon: int | None = setting(None, gt=0)
    cameras: tuple[str, ...] = setting(())  # empty: the cameras RRL used for the task
    width: int = setting(256, gt=0, le=4096)  # rendered frame size, pixels
    height: int = setting(256, gt=0, le=4096)
    shadows: bool = setting(False)
    # Demo i is rendered under DistractorSpec(level, seed + i). Not in key_dict: the render stage
    # adds the spec (with its version) to the key when the level is above 0, whose frames differ.
    distractor_level: int = setting(0, key=False, ge=0, le=3)
    distractor_seed: int = setting(0, key=False, ge=0)
    # Mixed scenes: demo i is rendered at level levels[i % len(levels)] (in the scene of seed
    # distractor_seed + i), e.g. 0,1,2,3 for frames to train a VAE robust to distractors.
    distractor_levels: tuple[int, ...] = setting((), key=False, ge=0, le=3)

    def _check(self) -> None:
        if self.distractor_levels and self.distractor_level:
            raise invalid_value("env.distractor_levels", self.distractor_levels,
                                "nothing when env.distractor_level is set (one level, or a mix)")
        if len(set(self.distractor_levels)) != len(self.distractor_levels):
            raise invalid_value("env.distractor_levels", self.distractor_levels,
                                "distinct levels 0-3, e.g. 0,1,2,3")
    # Action repeat is a fact of each task, not a setting: DMControl-100k's per task (cartpole 8,
    # finger 2, walker 2, cheetah 4; pipeline/envs/dmc_tasks.py), Adroit's frame_skip of 5.


@dataclass(frozen=True)
class DemosConfig(Validated):
    # A local file; when unset the file is downloaded. Its sha256, not its path, enters the key.
    path: str | None = setting(None, key=False)
    # Expected sha256 of the file. Unset means the pinned upstream checksum for the task.
    sha256: str | None = setting(None, pattern=SHA256_PATTERN)


@dataclass(frozen=True)
class RenderConfig(Validated):
    """How demos are replayed into frames; what the frames look like is the env section's."""

    replay: str = setting("states", choices=REPLAY_MODES)
    max_demos: int | None = setting(None, gt=0)  # render only the first N demos (tiny runs)
    max_steps: int | None = setting(None, gt=0)  # truncate each demo to N steps (tiny runs)
    workers: int = setting(2, key=False, gt=0, le=256)
    # How frames are stored (rollouts use these too): lossless, so the pixels read back and the
    # key are the same whatever they are; zstd over 64-frame chunks is ~9x smaller than lzf.
    codec: str = setting("zstd", key=False, choices=FRAME_CODECS)
    chunk_frames: int = setting(64, key=False, gt=0, le=1024)


@dataclass(frozen=True)
class EncodeConfig(Validated):
    encoder: str = setting("resnet34")
    weights: str = setting("pretrained")  # "pretrained", "random", or a .pth/.safetensors path
    # The sha256 the weights file must have; any other file is refused. Not in the key: the
    # file's own sha256 already is.
    weights_sha256: str | None = setting(None, key=False, pattern=SHA256_PATTERN)
    precision: str = setting("fp32", choices=PRECISIONS)
    # Unset: the encoder's own input (timm's pretrained data config; resnet34: RRL's Resize(256),
    # CenterCrop(224), bilinear). Each one set overrides it.
    resize: int | None = setting(None, gt=0, le=4096)
    crop: int | None = setting(None, gt=0, le=4096)
    interpolation: str | None = setting(None, choices=INTERPOLATIONS)
    # Empty: the pooled pre-logits feature. Else indices into timm's forward_intermediates
    # (ResNet stages 2,3,4; ViT blocks -4,-1) and/or pre_logits, all from one forward pass, each
    # stored as its own array (pipeline/encoders/layers.py). pool: how a layer becomes a vector.
    layers: tuple[str, ...] = setting((), key="if_set")
    pool: str = setting("auto", key="if_set", choices=POOLS)
    # Load only a weights file's keys under this prefix, stripped (R3M: module.convnet.).
    weights_prefix: str | None = setting(None, key="if_set")
    batch_size: int = setting(32, key=False, gt=0)
    store: str | None = setting(None, key=False)  # local path or fsspec URL
    scheduler: str | None = setting(None, key=False)  # tcp://host:port
    workers: int = setting(2, key=False, gt=0, le=256)
    # Where frames are encoded: by this stage, and during vision rollouts (dapg, evaluate). Not in
    # the key: fp32 on CUDA runs without TF32 and agrees with the CPU (pipeline/devices.py).
    device: str = setting("auto", key=False, pattern=DEVICE_PATTERN)
    # Which episode file is encoded: the rendered demos, or a policy's rollouts (rollouts stage);
    # auto: the demos where the task has them, else the rollouts (pipeline/envs/families.py).
    # The encode stage keys the resolved source, so "auto" and what it resolves to share a key.
    source: str = setting("auto", key="if_set", choices=ENCODE_SOURCES)

    def _check(self) -> None:
        if self.crop is not None and self.resize is not None and self.crop > self.resize:
            raise invalid_value("encode.crop", self.crop, f"at most encode.resize={self.resize}")


@dataclass(frozen=True)
class VAEConfig(Validated):
    """The in-domain encoder (vae stage): a convolutional beta-VAE on the rendered frames."""

    input_size: int = setting(64, ge=8, le=512)  # frames are resized to input_size x input_size
    latent: int = setting(64, gt=0, le=4096)  # the feature width of the encoder
    channels: tuple[int, ...] = setting((32, 64, 128, 256), gt=0, le=4096)  # one stride-2 conv each
    beta: float = setting(1.0, ge=0)  # weight of the KL term
    # Extra weight of the reconstruction error on pixels that moved since the episode's previous
    # frame (the hand, the door as it opens), so that a small latent spends itself on them and
    # not on the static scene: each pixel's squared error counts 1 + motion_weight times. 0: plain.
    motion_weight: float = setting(0.0, key="if_set", ge=0, le=1000)
    # 6 epochs of the 25 door demos (5,400 frames at 64 px) take about 20 minutes on 2 busy cores.
    epochs: int = setting(6, gt=0, le=10_000)
    batch_size: int = setting(32, gt=0)
    lr: float = setting(1e-3, gt=0, le=1)
    holdout: float = setting(0.2, gt=0, le=0.5)  # share of episodes held out (whole episodes)
    seed: int = setting(0, ge=0)
    threads: int | None = setting(None, key=False, gt=0, le=256)  # torch threads; None: torch's

    def _check(self) -> None:
        if not self.channels:
            raise invalid_value("vae.channels", self.channels, "one or more channel counts")
        if self.input_size >> len(self.channels) < 1:
            raise invalid_value("vae.input_size", self.input_size,
                                f"at least {2 ** len(self.channels)} for {len(self.channels)} "
                                "stride-2 convolutions (vae.channels)")


@dataclass(frozen=True)
class RADConfig(Validated):
    """RAD (the rad stage): SAC from pixels with random-crop augmentation on DeepMind Control.

    Defaults are RAD's DMControl settings (Laskin et al. 2020, and the defaults and
    scripts/run.sh of github.com/MishaLaskin/rad), with the DMControl-100k budget. The seed is
    ``policy.seed`` (SEED=), so an experiment's seeds vary RAD runs as they vary NPG runs. What
    is learnt on is the env section's: task, episode length (env.horizon), camera, shadows.
    """

    # Suite control steps (action repeat included), the axis of DMControl-100k; whole episodes run.
    env_steps: int = setting(100_000, gt=0)
    frame_stack: int = setting(3, gt=0, le=16)
    # Frames are rendered square at this size, then cropped to ``crop``: RAD's augmentation
    # (its pre_transform_image_size), so RAD's own setting, not env.width/height (whose 256 px
    # default would make the replay 6.5x larger). Encode the fixed encoder's frames at it (SIZE=).
    render_size: int = setting(100, ge=8, le=1024)
    crop: int = setting(84, ge=8, le=1024)  # random crops in training, the centre crop in acting
    batch_size: int = setting(128, gt=0)
    init_steps: int = setting(1000, ge=0)  # env steps of uniform random actions before updates
    replay_capacity: int = setting(100_000, gt=0)  # transitions; the oldest episodes are dropped
    hidden: int = setting(1024, gt=0, le=65536)  # width of the actor's and Q-functions' MLPs
    feature_dim: int = setting(50, gt=0, le=4096)  # the encoder's output: the frozen feature
    filters: int = setting(32, gt=0, le=1024)
    conv_layers: int = setting(4, ge=1, le=16)  # the first has stride 2, the others stride 1
    actor_lr: float = setting(1e-3, gt=0, le=1)
    critic_lr: float = setting(1e-3, gt=0, le=1)  # the critic's, and with it the encoder's
    alpha_lr: float = setting(1e-4, gt=0, le=1)
    init_temperature: float = setting(0.1, gt=0)
    discount: float = setting(0.99, gt=0, le=1)
    critic_tau: float = setting(0.01, gt=0, le=1)  # target Q-functions' moving average
    encoder_tau: float = setting(0.05, gt=0, le=1)  # target encoder's moving average
    actor_update_every: int = setting(2, gt=0)  # env steps between actor and temperature updates
    target_update_every: int = setting(2, gt=0)
    eval_every: int = setting(10_000, gt=0)  # control steps between evaluations
    eval_episodes: int = setting(10, ge=0)  # mean-action episodes per evaluation
    threads: int | None = setting(None, key=False, gt=0, le=256)  # torch threads; None: torch's

    def _check(self) -> None:
        if self.crop > self.render_size:
            raise invalid_value("rad.crop", self.crop, f"at most rad.render_size={self.render_size}")
        margin = self.render_size - self.crop
        if margin // 2 != round(margin / 2):
            # RAD's centre crop starts at margin // 2, the encode stage's at torchvision's
            # round(margin / 2): the frozen encoder would see another window than the actor did.
            raise invalid_value("rad.crop", self.crop, "a size whose centre crop both RAD and "
                                f"torchvision place alike (rad.render_size - rad.crop = {margin} "
                                "puts them a pixel apart), e.g. 84 with render_size 100")
        side = (self.crop - 3) // 2 + 1 - 2 * (self.conv_layers - 1)
        if side < 1:
            raise invalid_value("rad.crop", self.crop, f"large enough for {self.conv_layers} 3x3 "
                                "convolutions (rad.conv_layers), e.g. 84")


@dataclass(frozen=True)
class PolicyConfig(Validated):
    obs_mode: str = setting("vision+proprio", choices=OBS_MODES)
    # Which stored features the policy reads, concatenated per camera (names from `rrl inspect`,
    # or layer indices as in encode.layers); empty: every stored feature.
    features: tuple[str, ...] = setting((), key="if_set")
    hidden: tuple[int, ...] = setting((256, 256), gt=0)
    proprio_noise: float = setting(0.0, ge=0)  # sigma of Gaussian noise on proprioception
    seed: int = setting(0, ge=0)

    def _check(self) -> None:
        if self.obs_mode == "noisy_proprio" and self.proprio_noise <= 0:
            raise invalid_value("policy.proprio_noise", self.proprio_noise,
                                "a positive sigma when policy.obs_mode=noisy_proprio")


@dataclass(frozen=True)
class BCConfig(Validated):
    epochs: int = setting(5, gt=0)
    batch_size: int = setting(32, gt=0)
    lr: float = setting(1e-3, gt=0, le=1)


@dataclass(frozen=True)
class DAPGConfig(Validated):
    iterations: int = setting(300, gt=0)
    trajectories: int = setting(200, gt=0)
    use_demos: bool = setting(True)  # False: plain NPG
    lam0: float = setting(1e-2, ge=0)
    lam1: float = setting(0.95, gt=0, le=1)
    gamma: float = setting(0.995, gt=0, le=1)
    gae_lambda: float = setting(0.97, ge=0, le=1)
    step_size: float = setting(0.05, gt=0)  # normalized KL step (mjrl's delta)
    cg_iters: int = setting(10, gt=0)
    cg_damping: float = setting(1e-4, ge=0)
    vf_epochs: int = setting(2, ge=0)
    vf_batch: int = setting(64, gt=0)
    vf_lr: float = setting(1e-3, gt=0, le=1)
    eval_episodes: int = setting(10, ge=0)  # mean-action episodes per iteration (eval_score)
    # V after an episode's last step, where the horizon cuts it. "zero": mjrl as RRL and hand_dapg
    # ran it (gym's TimeLimit reports done at the horizon, so process_samples appends 0);
    # "bootstrap": the last step's prediction, mjrl's branch for paths not done, which this
    # pipeline used until this setting existed (its earlier runs are keyed as "bootstrap").
    horizon_value: str = setting("zero", key="unless_legacy", legacy="bootstrap",
                                 choices=HORIZON_VALUES)
    envs: int = setting(8, key=False, gt=0, le=1024)  # envs stepped in parallel
    record_every: int = setting(0, key=False, ge=0)  # write rollouts every k iterations


@dataclass(frozen=True)
class EvaluateConfig(Validated):
    policy: str = setting("dapg", choices=("bc", "dapg"))  # which checkpoint
    episodes: int = setting(50, gt=0)
    seed: int = setting(10**7, ge=0)  # a seed range used neither by training nor by evaluation
    video_episodes: int = setting(2, ge=0)  # at most `episodes` are shown
    # `episodes` per level; episode i at level L is scored in the scene DistractorSpec(L, seed + i).
    distractors: tuple[int, ...] = setting((0,), key="if_set", ge=0, le=3)

    def _check(self) -> None:
        _check_levels("evaluate.distractors", self.distractors)


@dataclass(frozen=True)
class RolloutsConfig(Validated):
    # "bc" or "dapg": this config's checkpoint; "random": uniform random actions; "auto": dapg
    # where the task has demos, else random; else a checkpoint file (its sha256 is keyed).
    policy: str = setting("auto")
    episodes: int = setting(50, gt=0)  # per distractor level
    # Episode i of every level resets with seed + i, in the scene DistractorSpec(level, seed + i).
    distractors: tuple[int, ...] = setting((0,), ge=0, le=3)
    deterministic: bool = setting(True)  # the policy's mean action (random: always drawn)
    seed: int = setting(2 * 10**7, ge=0)  # a range neither training nor evaluate.seed uses
    envs: int = setting(8, key=False, gt=0, le=1024)  # envs stepped in parallel
    workers: int = setting(2, key=False, gt=0, le=256)  # processes the envs render in

    def _check(self) -> None:
        _check_levels("rollouts.distractors", self.distractors)

    @property
    def policy_file(self) -> str | None:
        """The checkpoint file to roll out, or None for a named policy (ROLLOUT_POLICIES)."""
        return None if self.policy in ROLLOUT_POLICIES else self.policy


def _check_levels(name: str, levels: tuple[int, ...]) -> None:
    if not levels or len(set(levels)) != len(levels):
        raise invalid_value(name, levels, "one or more distinct distractor levels 0-3, e.g. 0,1,2,3")


@dataclass(frozen=True)
class ProbeConfig(Validated):
    include_proprio: bool = setting(False)  # also give the probe the store's proprioception
    features: tuple[str, ...] = setting((), key="if_set")  # as policy.features
    test_fraction: float = setting(0.2, gt=0, le=0.5)  # share of demos held out to measure R^2
    folds: int = setting(5, ge=2, le=100)  # group k-fold over the training demos picks alpha
    alphas: tuple[float, ...] = setting(tuple(10.0**k for k in range(-3, 7)), gt=0)
    seed: int = setting(0, ge=0)  # which demos are held out, how the rest are dealt into folds
    threads: int = setting(1, key=False, gt=0, le=256)  # BLAS threads of the probe's worker

    def _check(self) -> None:
        if not self.alphas:
            raise invalid_value("probe.alphas", self.alphas, "at least one positive value")


@dataclass(frozen=True)
class PipelineConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    dapg: DAPGConfig = field(default_factory=DAPGConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    rollouts: RolloutsConfig = field(default_factory=RolloutsConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    rad: RADConfig = field(default_factory=RADConfig)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not isinstance(getattr(self, f.name), SECTIONS[f.name]):
                raise invalid_value(f.name, getattr(self, f.name), f"a {SECTIONS[f.name].__name__}")

    @property
    def task(self) -> str:
        return self.env.task

    def with_overrides(self, overrides: dict[str, str]) -> PipelineConfig:
        """Apply ``{"env.width": "64"}``-style overrides, parsing each value to its field's type."""
        sections: dict[str, dict[str, Any]] = {}
        for dotted, raw in overrides.items():
            section, name = split_field(dotted)
            sections.setdefault(section, {})[name] = parse_value(
                field_type(SECTIONS[section], name), raw, dotted)
        updated = {section: dataclasses.replace(getattr(self, section), **values)
                   for section, values in sections.items()}
        return dataclasses.replace(self, **updated)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(PipelineConfig)}  # type: ignore[misc]


# Settings that moved to the section of their concept: old name -> new name. An old name (in
# SET=, --set or an experiment file) is refused with its new one; keys did not change.
MOVED = {"demos.task": "env.task", "dapg.reward": "env.reward", "dapg.horizon": "env.horizon",
         "render.cameras": "env.cameras", "render.width": "env.width",
         "render.height": "env.height", "render.shadows": "env.shadows",
         "render.distractor_level": "env.distractor_level",
         "render.distractor_seed": "env.distractor_seed", "dapg.device": "encode.device",
         "rad.horizon": "env.horizon"}


def split_field(dotted: str) -> tuple[str, str]:
    """``"env.width"`` -> ("env", "width"), failing with the valid names when unknown."""
    if dotted in MOVED:
        raise ConfigError(f"setting {dotted} is now {MOVED[dotted]} (the environment's settings "
                          f"have their own section). Fix: write {MOVED[dotted]}=...")
    section, _, name = dotted.partition(".")
    if section not in SECTIONS:
        raise unknown_name("config section", section, list(SECTIONS))
    names = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if name not in names:
        raise unknown_name(f"{section} setting", name, names)
    return section, name


def config_field(dotted: str) -> dataclasses.Field[Any]:
    section, name = split_field(dotted)
    return next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name)


