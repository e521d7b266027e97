"""evaluate: success rate (hand_dapg's rule) and mean return over K seeded episodes, and a GIF."""

from __future__ import annotations

from typing import Any

from pipeline.config import PipelineConfig, key_dict
from pipeline.runner import Stage, StageContext, StageResult

VERSION = "1"
VIDEO = "episodes.gif"


def upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    return (cfg.evaluate.policy,)


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    return {"task": cfg.task, "evaluate": key_dict(cfg.evaluate), "horizon": cfg.dapg.horizon,
            "reward": cfg.dapg.reward}


def run(ctx: StageContext) -> dict[str, Any]:
    import contextlib

    import numpy as np

    from pipeline.rl.data import DataSource, make_sampler
    from pipeline.rl.sampler import episode_success
    from pipeline.rl.trainer import load_policy
    from pipeline.rl.video import write_video

    e, task = ctx.config.evaluate, ctx.config.task
    trained = ctx.upstream[e.policy]
    src = DataSource.from_json(trained.summary["source"])
    policy = load_policy(trained.summary["checkpoint"])
    with contextlib.closing(make_sampler(src, ctx.config.policy, ctx.config.dapg)) as sampler:
        paths = sampler.sample(policy, e.episodes, ctx.config.dapg.horizon, e.seed,
                               deterministic=True)
    successes = [episode_success(p, task) for p in paths]
    returns = [float(p["rewards"].sum()) for p in paths]
    summary: dict[str, Any] = {
        "policy": e.policy, "obs_mode": src.obs_mode, "episodes": e.episodes,
        "success_rate": 100.0 * float(np.mean(successes)), "mean_return": float(np.mean(returns)),
        "per_episode_success": successes, "weights": _weights_note(src),
    }
    if e.video_episodes:
        from pipeline.envs.tasks import task_spec

        camera = src.cameras[0] if src.cameras else task_spec(task).rrl_cameras[0]
        shown = [(e.seed + i, paths[i]["actions"]) for i in range(min(e.video_episodes, len(paths)))]
        summary["video"] = str(write_video(task, shown, camera, ctx.out_dir / VIDEO))
    return summary


def _weights_note(src: Any) -> str:
    if src.obs_mode == "state":
        return "none (state observations)"
    from pipeline.store.features import open_features

    weights = open_features(src.store, src.feature_key).attrs.get("weights", {})
    return "RANDOM encoder weights" if weights.get("kind") == "random" else str(weights.get("kind"))


def describe(result: StageResult) -> str:
    s = result.summary
    text = (f"{s['policy']} policy ({s['obs_mode']}, encoder weights: {s['weights']}): success "
            f"{s['success_rate']:.1f}% over {s['episodes']} episodes, mean return {s['mean_return']:.1f}")
    return text + (f"\nvideo {s['video']}" if s.get("video") else "")


STAGE = Stage("evaluate", VERSION, upstream, inputs, run, describe)
