"""evaluate: success rate (hand_dapg's rule) and mean return over K seeded episodes, and a GIF."""

from __future__ import annotations

from typing import Any

from pipeline.config import PipelineConfig, key_dict
from pipeline.runner import Stage, StageContext, StageResult

VERSION = "2"  # 2: portable summary (relative names), per-episode returns, refuses non-finite
VIDEO = "episodes.gif"


def upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    return (cfg.evaluate.policy,)


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    return {"task": cfg.task, "evaluate": key_dict(cfg.evaluate), "horizon": cfg.dapg.horizon,
            "reward": cfg.dapg.reward}


def run(ctx: StageContext) -> dict[str, Any]:
    import contextlib

    from pipeline.rl.checkpoints import load_policy
    from pipeline.rl.data import make_sampler
    from pipeline.rl.rollouts import require_finite_returns, summarize
    from stages.bc import policy_file, trained_source

    e, task = ctx.config.evaluate, ctx.config.task
    trained = ctx.upstream[e.policy]
    src = trained_source(trained, ctx)
    policy = load_policy(policy_file(trained))
    with contextlib.closing(make_sampler(src, ctx.config.policy, ctx.config.dapg)) as sampler:
        rollouts = sampler.sample(policy, e.episodes, ctx.config.dapg.horizon, e.seed,
                                  deterministic=True)
    result = summarize(rollouts, task)
    require_finite_returns(result, f"{ctx.out_dir}: evaluation of the {e.policy} policy")
    summary: dict[str, Any] = {"policy": e.policy, "obs_mode": src.obs_mode, **result,
                               "weights": _weights_note(src)}
    if e.video_episodes:
        from pipeline.envs.tasks import task_spec
        from pipeline.rl.video import write_video

        camera = src.cameras[0] if src.cameras else task_spec(task).rrl_cameras[0]
        shown = [(int(r["seed"]), r["actions"]) for r in rollouts[:e.video_episodes]]
        write_video(task, shown, camera, ctx.out_dir / VIDEO)
        summary["video"] = VIDEO
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
    return text + (f"\nvideo {result.out_dir / s['video']}" if s.get("video") else "")


STAGE = Stage("evaluate", VERSION, upstream, inputs, run, describe)
