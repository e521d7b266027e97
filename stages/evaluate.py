"""evaluate: success rate (hand_dapg's rule) and mean return over K seeded episodes, and a GIF.

With ``DISTRACTORS=0,1,2,3`` the K episodes are scored at every level, episode i in the seeded
scene ``DistractorSpec(level, seed + i)`` (``pipeline.rl.distracted``); the GIF shows the first
level.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import PipelineConfig
from pipeline.envs.families import check_task_config, episode_end_rule, horizon, task_facts
from pipeline.outputs import DataSource, policy_file, store_weights, trained_source, weights_label
from pipeline.rl.rollouts import SampledPolicy, require_finite_returns
from pipeline.rl.scoring import score_policy
from pipeline.rl.video import write_video
from pipeline.runner import Stage, StageContext, StageResult
from pipeline.settings import key_dict

VERSION = "2"  # 2: portable summary (relative names), per-episode returns, refuses non-finite
VIDEO = "episodes.gif"


def upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    return (cfg.evaluate.policy,)


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    check_task_config(cfg)
    return {"task": cfg.task, "evaluate": key_dict(cfg.evaluate), "horizon": horizon(cfg),
            **episode_end_rule(cfg.task), "reward": cfg.env.reward}


def run(ctx: StageContext) -> dict[str, Any]:
    from pipeline.rl.checkpoints import load_policy

    e, task = ctx.config.evaluate, ctx.config.task
    trained = ctx.upstream[e.policy]
    src = trained_source(trained, ctx.config, ctx.data_dir)
    policy = load_policy(policy_file(trained))
    per_level: dict[str, dict[str, Any]] = {}
    scored: dict[int, tuple[dict[str, Any], list[Any]]] = {}
    for level in e.distractors:
        # A state policy never sees a frame and distractors leave physics alone: the rollouts
        # at every level are those of one run without rendering.
        scene = level if src.obs_mode != "state" else 0
        if scene not in scored:
            scored[scene] = _evaluate_level(ctx, src, policy, scene)
        result, rollouts = scored[scene]
        per_level[str(level)] = {k: result[k] for k in ("success_rate", "mean_return", "episodes")}
        if level == e.distractors[0]:
            first, shown = result, rollouts[:e.video_episodes]
    # The first level's numbers stay at the top, where readers of one level look for them.
    summary: dict[str, Any] = {"policy": e.policy, "obs_mode": src.obs_mode, **first,
                               "distractors": list(e.distractors), "per_level": per_level,
                               "weights": weights_label(store_weights(src))}
    if src.obs_mode == "state" and len(e.distractors) > 1:
        summary["distractors_note"] = ("state observations: distractors change what is rendered "
                                       "only, so every level scores the same (unrendered) rollouts")
    if shown:
        camera = src.cameras[0] if src.cameras else task_facts(task).default_cameras[0]
        write_video(task, [(int(r["seed"]), r["actions"]) for r in shown], camera,
                    ctx.out_dir / VIDEO, distractors=e.distractors[0])
        summary["video"] = VIDEO
    return summary


def _evaluate_level(ctx: StageContext, src: DataSource, policy: SampledPolicy,
                    level: int) -> tuple[dict[str, Any], list[Any]]:
    result, rollouts = score_policy(ctx.config, src, policy, level)
    require_finite_returns(result, f"{ctx.out_dir}: evaluation of the {ctx.config.evaluate.policy} "
                           f"policy at distractor level {level}")
    return result, rollouts


def describe(result: StageResult) -> str:
    s = result.summary
    scored = task_facts(result.manifest["inputs"]["task"]).has_success
    text = (f"{s['policy']} policy ({s['obs_mode']}, encoder weights: {s['weights']}): "
            + (f"success {s['success_rate']:.1f}% over {s['episodes']} episodes, mean return "
               if scored else f"over {s['episodes']} episodes (no success signal), mean return ")
            + f"{s['mean_return']:.1f}")
    levels = s.get("per_level", {})
    if len(levels) > 1:
        text += "\ndistractor level  success  mean return"
        text += "".join(f"\n{level:>16}  {v['success_rate']:6.1f}%  {v['mean_return']:11.1f}"
                        for level, v in levels.items())
        if s.get("distractors_note"):
            text += f"\n({s['distractors_note']})"
    return text + (f"\nvideo {result.out_dir / s['video']}" if s.get("video") else "")


STAGE = Stage(
    name="evaluate",
    version=VERSION,
    upstream=upstream,
    inputs=inputs,
    run=run,
    describe=describe,
)
