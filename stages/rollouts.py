"""rollouts: a policy's episodes under distractor levels, rendered into an episode file.

The policy is this config's bc or dapg checkpoint, a checkpoint file (``POLICY=path``: its
sha256, not its path, enters the key; it observes what ``OBS_MODE=`` says, through this config's
encoder), or ``POLICY=random``: actions uniform over the action box, drawn from each episode's
seed (``pipeline.rl.random_policy``), which needs no trained policy. ``POLICY=auto`` (the
default) is dapg where the task has demos and random where it has none (DeepMind Control: the
episodes its features are encoded from, ``SOURCE=auto``). Every step is rendered from the task's cameras at the render settings, the frames an
encoder would see, and written in the render stage's layout, so ``SOURCE=rollouts`` encodes
them into the feature store. Episode i of level L resets with ``rollouts.seed + i`` in the scene
``DistractorSpec(L, rollouts.seed + i)`` (``pipeline.rl.level_sweep``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import POLICY_STAGES, PipelineConfig
from pipeline.envs.families import (
    check_task_config,
    encode_source,
    episode_end_rule,
    horizon,
    resolve_task_cameras,
    rollouts_policy,
    task_camera_key,
    task_facts,
)
from pipeline.errors import ConfigError
from pipeline.fileio import cached_file_sha256
from pipeline.outputs import (
    DataSource,
    data_source,
    locate,
    observation_upstream,
    policy_file,
    store_weights,
    trained_source,
    weights_label,
)
from pipeline.rl.data import make_sampler
from pipeline.rl.distracted import RenderingStateSampler, env_factory
from pipeline.rl.level_sweep import RolloutPlan, level_results, record_rollouts
from pipeline.rl.random_policy import UniformRandomPolicy
from pipeline.rl.rollout_loop import LoopSampler
from pipeline.runner import Stage, StageContext, StageResult, canonical_json
from pipeline.settings import key_dict
from pipeline.store.space import frames_bytes, require_free_space

VERSION = "1"
EPISODES = "episodes.hdf5"
RANDOM = "random"
NO_OBSERVATION = "none (uniform random actions)"


def upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    policy = rollouts_policy(cfg)
    if policy == RANDOM:
        return ()  # no trained policy, no features: the actions come from the seeds alone
    if encode_source(cfg) == "rollouts" and cfg.policy.obs_mode != "state":
        # rollouts -> policy -> encode -> rollouts: the policy would read its own rollouts.
        auto = f" ({cfg.task} has no demos)" if cfg.encode.source == "auto" else ""
        raise ConfigError(
            f"encode.source={cfg.encode.source} reads the rollouts stage's episodes{auto}, and "
            f"policy.obs_mode={cfg.policy.obs_mode}: a vision policy reads the encode stage's "
            "features, which would then be made from its own rollouts. Fix: roll out a state "
            "policy (OBS_MODE=state) or random actions (POLICY=random); for an Adroit vision "
            "policy run `make rollouts` without SOURCE=rollouts; a DeepMind Control vision "
            "policy is scored by `make evaluate`")
    # A checkpoint file observes through this config's data: the demos (state) or the encoder.
    return (policy,) if policy in POLICY_STAGES else observation_upstream(cfg)


def frames(cfg: PipelineConfig) -> dict[str, Any]:
    """How the rollouts are rendered: the env's cameras, frame size and shadows (as the demos)."""
    env = cfg.env
    cameras = resolve_task_cameras(env.task, env.cameras)
    return {"cameras": list(cameras), "camera_poses": task_camera_key(env.task, cameras),
            "width": env.width, "height": env.height, "shadows": env.shadows}


def policy_identity(cfg: PipelineConfig) -> dict[str, Any]:
    r, policy = cfg.rollouts, rollouts_policy(cfg)
    if policy == RANDOM:
        return {"random": "uniform over the action box", "low": -1.0, "high": 1.0}
    if r.policy_file is None:
        return {"stage": policy}
    return {"file_sha256": checkpoint_sha256(r.policy_file), "obs_mode": cfg.policy.obs_mode,
            "proprio_noise": cfg.policy.proprio_noise}


def checkpoint_sha256(path: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"invalid rollouts.policy={path!r}: neither bc, dapg nor an existing "
                          "checkpoint file. Fix: POLICY=bc, POLICY=dapg or POLICY=/path/to/policy.pt")
    return cached_file_sha256(file)  # keys are computed often (status): hashed once per version


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    check_task_config(cfg)
    # Random actions are always drawn: `deterministic` does not change them.
    dropped = ("policy", "deterministic") if rollouts_policy(cfg) == RANDOM else ("policy",)
    rollouts = {k: v for k, v in key_dict(cfg.rollouts).items() if k not in dropped}
    return {"task": cfg.task, "policy": policy_identity(cfg), "rollouts": rollouts,
            "horizon": horizon(cfg), **episode_end_rule(cfg.task), "reward": cfg.env.reward,
            "frames": frames(cfg)}


def _policy(ctx: StageContext) -> tuple[Path, DataSource, dict[str, Any]]:
    """(checkpoint, located DataSource, the policy's identity in the file attrs)."""
    cfg, data = ctx.config, ctx.data_dir
    r, name = cfg.rollouts, rollouts_policy(cfg)
    if r.policy_file is None:
        trained = ctx.upstream[name]
        return (policy_file(trained), trained_source(trained, cfg, data),
                {"stage": name, "key": trained.key})
    src = locate(data_source(cfg, data, ctx.upstream), cfg, data)
    return Path(r.policy_file), src, policy_identity(cfg)


def _require_key_holds(ctx: StageContext) -> None:
    # A checkpoint file replaced after the runner computed the key would put one policy's
    # rollouts under the other's key; the key is cheap to recompute, so check it still holds.
    if not ctx.key_still_holds(inputs(ctx.config)):
        raise ConfigError(f"rollouts inputs changed while the stage started (checkpoint "
                          f"{ctx.config.rollouts.policy!r} replaced?). Fix: leave the checkpoint "
                          "in place while rolling out and run again")


def _check_obs_dim(policy: Any, src: DataSource, ctx: StageContext) -> None:
    facts = task_facts(ctx.config.task)
    if src.obs_mode == "state":
        expected = facts.obs_dim
    elif "encode" in ctx.upstream:  # a checkpoint file, read through this config's encoder
        proprio = facts.proprio_dim if src.obs_mode in ("vision+proprio", "noisy_proprio") else 0
        expected = int(ctx.upstream["encode"].summary["feature_dim"]) * len(src.cameras) + proprio
    else:
        return  # this config's bc/dapg checkpoint, trained on these very features
    if policy.obs_dim != expected:
        raise ConfigError(f"the policy {ctx.config.rollouts.policy} takes {policy.obs_dim}-d "
                          f"inputs, but {src.obs_mode} observations of this config are "
                          f"{expected}-d. Fix: set OBS_MODE= (and the encoder) to what the policy "
                          "was trained on")


def run(ctx: StageContext) -> dict[str, Any]:
    from pipeline.rl.checkpoints import load_policy
    from pipeline.rl.recording import RolloutFile, rollouts_info
    from pipeline.store.frames import FrameCodec

    cfg, r = ctx.config, ctx.config.rollouts
    src: DataSource | None = None  # what a trained policy observes through; None: random
    if rollouts_policy(cfg) == RANDOM:
        policy, sha, identity = _random_policy(cfg)
        obs_mode = NO_OBSERVATION
    else:
        checkpoint, src, identity = _policy(ctx)
        policy = load_policy(checkpoint)
        sha = checkpoint_sha256(str(checkpoint))
        if r.policy_file is not None:
            _require_key_holds(ctx)
        _check_obs_dim(policy, src, ctx)
        obs_mode = src.obs_mode
    cameras = (tuple(src.cameras) if src is not None else ()) or resolve_task_cameras(
        cfg.task, cfg.env.cameras)
    plan = RolloutPlan(tuple(r.distractors), r.episodes, r.seed, horizon(cfg),
                       r.deterministic and src is not None)
    frame_spec = frames(cfg)
    require_free_space(ctx.out_dir, frames_bytes(plan.total * plan.horizon, cfg.env.height,
                                                 cfg.env.width, len(cameras), cfg.render.codec),
                       f"{plan.total} rollout episodes")
    info = rollouts_info(identity, obs_mode, plan.levels, rollouts_key=ctx.key,
                         episodes_per_level=r.episodes, seed=r.seed, deterministic=plan.deterministic,
                         horizon=plan.horizon, reward=cfg.env.reward,
                         policy_config=policy.config())
    env_kwargs = {**frame_spec, "reward": cfg.env.reward, "horizon": plan.horizon}
    path = ctx.out_dir / EPISODES
    with RolloutFile(path, cfg.task, cameras, info, env_kwargs, sha, ctx.log,
                     FrameCodec.of(cfg.render)) as out:
        done = len(out.completed())
        if done:
            ctx.log(f"[rollouts] resuming: {done} of {plan.total} episodes already written")
        costs = record_rollouts(plan, policy, _samplers(ctx, src, cameras), out, ctx.log)
    levels = level_results(path, plan)
    return {"policy": identity, "obs_mode": obs_mode, "cameras": list(cameras),
            "episodes_per_level": r.episodes, "horizon": plan.horizon,
            "frames_per_camera": plan.total * plan.horizon,
            "levels": {str(level): v for level, v in levels.items()},
            "render_cost": {str(level): v for level, v in costs.items()},  # this run's episodes
            "weights": weights_label(store_weights(src)) if src is not None else NO_OBSERVATION,
            "episodes_file": EPISODES}


def _random_policy(cfg: PipelineConfig) -> tuple[Any, str, dict[str, Any]]:
    """(the policy, a sha256 naming it in the episode file, its identity)."""
    facts, identity = task_facts(cfg.task), policy_identity(cfg)
    policy = UniformRandomPolicy(facts.obs_dim, facts.act_dim, identity["low"], identity["high"])
    return policy, hashlib.sha256(canonical_json(identity).encode()).hexdigest(), identity


def _samplers(ctx: StageContext, src: DataSource | None,
              cameras: tuple[str, ...]) -> Callable[[int], LoopSampler]:
    """level -> a recording sampler whose envs render that level's scenes."""
    cfg, r = ctx.config, ctx.config.rollouts

    def sampler_for(level: int) -> LoopSampler:
        if src is None or src.obs_mode == "state":  # the policy reads the env's state (or nothing)
            return RenderingStateSampler(cfg.task, level, cameras, n_envs=r.envs,
                                         workers=r.workers, reward=cfg.env.reward,
                                         width=cfg.env.width, height=cfg.env.height,
                                         shadows=cfg.env.shadows)

        sampler = make_sampler(src, cfg.policy, cfg.env.reward, r.envs, cfg.encode.device,
                               workers=r.workers, record=True, env_factory=env_factory(level))
        assert isinstance(sampler, LoopSampler)  # vision samplers record what they render
        return sampler

    return sampler_for


def describe(result: StageResult) -> str:
    s = result.summary
    who = (s["policy"].get("stage") or ("uniform random" if "random" in s["policy"] else
                                        f"checkpoint sha256 {s['policy']['file_sha256'][:12]}"))
    lines = [f"{who} policy ({s['obs_mode']}, encoder weights: {s['weights']}): "
             f"{s['episodes_per_level']} episodes x {s['horizon']} steps per level, cameras "
             f"{', '.join(s['cameras'])}",
             "level  success  mean return  render frames/s"]
    for level, v in s["levels"].items():
        cost = s["render_cost"].get(level, {}).get("frames_per_second")
        lines.append(f"{level:>5}  {v['success_rate']:6.1f}%  {v['mean_return']:11.1f}  "
                     f"{cost if cost is not None else '-':>15}")
    lines.append(f"episodes {result.out_dir / s['episodes_file']}")
    return "\n".join(lines)


STAGE = Stage(
    name="rollouts",
    version=VERSION,
    upstream=upstream,
    inputs=inputs,
    run=run,
    describe=describe,
)
