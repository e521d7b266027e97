"""rollouts: a trained policy's episodes under distractor levels, rendered into an episode file.

The policy is this config's bc or dapg checkpoint, or a checkpoint file (``POLICY=path``: its
sha256, not its path, enters the key; it observes what ``OBS_MODE=`` says, through this config's
encoder). Every step is rendered from the task's cameras at the render settings, the frames an
encoder would see, and written in the render stage's layout, so ``SOURCE=rollouts`` encodes
them into the feature store. Episode i of level L resets with ``rollouts.seed + i`` in the scene
``DistractorSpec(L, rollouts.seed + i)`` (``pipeline.rollout_episodes``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, key_dict
from pipeline.envs.tasks import camera_key, resolve_cameras
from pipeline.errors import ConfigError
from pipeline.runner import Stage, StageContext, StageResult
from stages import bc

VERSION = "1"
EPISODES = "episodes.hdf5"
PROPRIO_DIM = 24  # the hand's joints (RRL's proprioception), for every task


def upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    r = cfg.rollouts
    if cfg.encode.source == "rollouts" and cfg.policy.obs_mode != "state":
        # rollouts -> policy -> encode -> rollouts: the policy would read its own rollouts.
        raise ConfigError(
            f"encode.source=rollouts with policy.obs_mode={cfg.policy.obs_mode}: a vision policy "
            "reads the encode stage's features, which would then be made from its own rollouts. "
            "Fix: encode the rollouts of a state policy (OBS_MODE=state), or run `make rollouts` "
            "without SOURCE=rollouts for a vision policy")
    # A checkpoint file observes through this config's data: the demos (state) or the encoder.
    return (r.policy,) if r.policy_file is None else bc.upstream(cfg)


def frames(cfg: PipelineConfig) -> dict[str, Any]:
    """How the rollouts are rendered: the render stage's cameras, size and shadows."""
    cameras = resolve_cameras(cfg.task, cfg.render.cameras)
    r = cfg.render
    return {"cameras": list(cameras), "camera_poses": camera_key(cfg.task, cameras),
            "width": r.width, "height": r.height, "shadows": r.shadows}


def policy_identity(cfg: PipelineConfig) -> dict[str, Any]:
    r = cfg.rollouts
    if r.policy_file is None:
        return {"stage": r.policy}
    return {"file_sha256": checkpoint_sha256(r.policy_file), "obs_mode": cfg.policy.obs_mode,
            "proprio_noise": cfg.policy.proprio_noise}


def checkpoint_sha256(path: str) -> str:
    import hashlib

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"invalid rollouts.policy={path!r}: neither bc, dapg nor an existing "
                          "checkpoint file. Fix: POLICY=bc, POLICY=dapg or POLICY=/path/to/policy.pt")
    return hashlib.sha256(file.read_bytes()).hexdigest()


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    rollouts = {k: v for k, v in key_dict(cfg.rollouts).items() if k != "policy"}
    return {"task": cfg.task, "policy": policy_identity(cfg), "rollouts": rollouts,
            "horizon": cfg.dapg.horizon, "reward": cfg.dapg.reward, "frames": frames(cfg)}


def _policy(ctx: StageContext) -> tuple[Path, Any, dict[str, Any]]:
    """(checkpoint, located DataSource, the policy's identity in the file attrs)."""
    r = ctx.config.rollouts
    if r.policy_file is None:
        trained = ctx.upstream[r.policy]
        return (Path(bc.policy_file(trained)), bc.trained_source(trained, ctx),
                {"stage": r.policy, "key": trained.key})
    return Path(r.policy_file), bc.locate(bc.data_source(ctx), ctx), policy_identity(ctx.config)


def _require_key_holds(ctx: StageContext) -> None:
    # A checkpoint file replaced after the runner computed the key would put one policy's
    # rollouts under the other's key; the key is cheap to recompute, so check it still holds.
    from pipeline.runner import content_key

    upstream = {name: result.key for name, result in ctx.upstream.items()}
    if content_key(ctx.name, VERSION, inputs(ctx.config), upstream) != ctx.key:
        raise ConfigError(f"rollouts inputs changed while the stage started (checkpoint "
                          f"{ctx.config.rollouts.policy!r} replaced?). Fix: leave the checkpoint "
                          "in place while rolling out and run again")


def _check_obs_dim(policy: Any, src: Any, ctx: StageContext) -> None:
    from pipeline.envs.tasks import task_spec

    if src.obs_mode == "state":
        expected = task_spec(ctx.config.task).obs_dim
    elif "encode" in ctx.upstream:  # a checkpoint file, read through this config's encoder
        proprio = PROPRIO_DIM if src.obs_mode in ("vision+proprio", "noisy_proprio") else 0
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
    from pipeline.rollout_episodes import RolloutPlan, level_results, record_rollouts
    from pipeline.store.space import frames_bytes, require_free_space

    cfg, r = ctx.config, ctx.config.rollouts
    checkpoint, src, identity = _policy(ctx)
    policy = load_policy(checkpoint)
    sha = checkpoint_sha256(str(checkpoint))
    if r.policy_file is not None:
        _require_key_holds(ctx)
    _check_obs_dim(policy, src, ctx)
    cameras = tuple(src.cameras) or resolve_cameras(cfg.task, cfg.render.cameras)
    plan = RolloutPlan(tuple(r.distractors), r.episodes, r.seed, cfg.dapg.horizon, r.deterministic)
    frame_spec = frames(cfg)
    require_free_space(ctx.out_dir, frames_bytes(plan.total * plan.horizon, cfg.render.height,
                                                 cfg.render.width, len(cameras)),
                       f"{plan.total} rollout episodes")
    info = rollouts_info(identity, src.obs_mode, plan.levels, rollouts_key=ctx.key,
                         episodes_per_level=r.episodes, seed=r.seed, deterministic=r.deterministic,
                         horizon=plan.horizon, reward=cfg.dapg.reward,
                         policy_config=policy.config())
    env_kwargs = {**frame_spec, "reward": cfg.dapg.reward, "horizon": plan.horizon}
    path = ctx.out_dir / EPISODES
    with RolloutFile(path, cfg.task, cameras, info, env_kwargs, sha, ctx.log) as out:
        done = len(out.completed())
        if done:
            ctx.log(f"[rollouts] resuming: {done} of {plan.total} episodes already written")
        costs = record_rollouts(plan, policy, _samplers(ctx, src, cameras), out, ctx.log)
    levels = level_results(path, plan)
    return {"policy": identity, "obs_mode": src.obs_mode, "cameras": list(cameras),
            "episodes_per_level": r.episodes, "horizon": plan.horizon,
            "frames_per_camera": plan.total * plan.horizon,
            "levels": {str(level): v for level, v in levels.items()},
            "render_cost": {str(level): v for level, v in costs.items()},  # this run's episodes
            "weights": _weights_note(src), "episodes_file": EPISODES}


def _samplers(ctx: StageContext, src: Any, cameras: tuple[str, ...]) -> Any:
    """level -> a recording sampler whose envs render that level's scenes."""
    cfg, r = ctx.config, ctx.config.rollouts

    def sampler_for(level: int) -> Any:
        if src.obs_mode == "state":
            from pipeline.rl.distracted import RenderingStateSampler

            return RenderingStateSampler(cfg.task, level, cameras, n_envs=r.envs,
                                         workers=r.workers, reward=cfg.dapg.reward,
                                         width=cfg.render.width, height=cfg.render.height,
                                         shadows=cfg.render.shadows)
        from pipeline.rl.data import make_sampler
        from pipeline.rl.distracted import env_factory

        return make_sampler(src, cfg.policy, dataclasses.replace(cfg.dapg, envs=r.envs),
                            workers=r.workers, record=True, env_factory=env_factory(level))

    return sampler_for


def _weights_note(src: Any) -> str:
    from stages.evaluate import weights_note

    return str(weights_note(src))


def describe(result: StageResult) -> str:
    s = result.summary
    who = s["policy"].get("stage") or f"checkpoint sha256 {s['policy']['file_sha256'][:12]}"
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


STAGE = Stage("rollouts", VERSION, upstream, inputs, run, describe)
