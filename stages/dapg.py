"""dapg: DAPG (NPG with demo-augmented gradient; plain NPG when demos are off) from the BC policy.

Checkpoints every iteration; a killed run resumes from the last one (same result, seeded), and
a run with more iterations than a finished one (same other inputs) continues that one.
Writes RRL's log.csv columns, eval.csv and a learning curve beside RRL's own logs. On DeepMind
Control tasks (no demos, no success) only NPG runs, and the result is the episode return.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.envs.families import check_task_config, episode_end_rule, horizon, task_facts
from pipeline.fileio import read_json_object, write_json_atomic
from pipeline.outputs import (
    BC_START,
    CURVE,
    EVAL_LOG,
    LOG,
    POLICY_FILE,
    policy_file,
    reference_log_files,
    trained_source,
)
from pipeline.plots import learning_curve, read_csv_rows
from pipeline.rl.data import demo_arrays, make_sampler
from pipeline.rl.extend import continuation, continue_from
from pipeline.rl.extend import progress as iterations_done
from pipeline.rl.rollouts import (
    SampledPolicy,
    Sampler,
    evaluation_seed,
    require_finite_returns,
    summarize,
)
from pipeline.runner import Progress, Stage, StageContext, StageResult
from pipeline.settings import key_dict

VERSION = "2"  # 2: portable summary (relative names), stops on non-finite iterations


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    check_task_config(cfg)
    # The env's reward and resolved horizon keep the names they had in the dapg section (unset is
    # the task's default, Adroit's 200): keys stay as they were.
    return {"task": cfg.task, "dapg": {**key_dict(cfg.dapg), "reward": cfg.env.reward,
                                       "horizon": horizon(cfg)}, **episode_end_rule(cfg.task)}


def reference_logs(task: str) -> dict[str, list[dict[str, float]]]:
    return {p.name.split("_")[-1].split(".")[0]: read_csv_rows(p) for p in reference_log_files(task)}


def run(ctx: StageContext) -> dict[str, Any]:
    from pipeline.rl.checkpoints import load_policy, require_finite_policy, save_checkpoint
    from pipeline.rl.policy import MLPBaseline
    from pipeline.rl.recording import RolloutRecorder, rollouts_info
    from pipeline.rl.trainer import train_dapg
    from pipeline.store.frames import FrameCodec

    d, pcfg, task = ctx.config.dapg, ctx.config.policy, ctx.config.task
    steps = horizon(ctx.config)
    _continue_shorter_run(ctx)
    bc = ctx.upstream["bc"]
    src = trained_source(bc, ctx.config, ctx.data_dir)
    policy = load_policy(policy_file(bc))
    # NPG (use_demos=false) never reads the demos; a task without demos has none to read.
    demo_obs, demo_act = demo_arrays(src, pcfg) if d.use_demos else (None, None)
    baseline = MLPBaseline(policy.obs_dim, batch_size=d.vf_batch, epochs=d.vf_epochs, lr=d.vf_lr,
                           seed=pcfg.seed)
    recorder = None
    record = d.record_every > 0 and src.obs_mode != "state"
    if record:
        info = rollouts_info({"stage": "dapg", "key": ctx.key, "training": True}, src.obs_mode,
                             (0,), policy_config=policy.config(), seed=pcfg.seed)
        recorder = RolloutRecorder(ctx.out_dir / "rollouts", task, d.record_every, info,
                                   FrameCodec.of(ctx.config.render))
    ctx.log(f"[dapg] {'DAPG' if d.use_demos else 'NPG'} on {task} ({src.obs_mode}): "
            f"{d.iterations} iterations x {d.trajectories} trajectories x {steps} steps, "
            f"{d.envs} envs")
    env = ctx.config.env
    with contextlib.closing(make_sampler(src, pcfg, env.reward, d.envs, ctx.config.encode.device,
                                         record=record)) as sampler:
        device = getattr(sampler, "device", None)  # where frames were encoded (vision modes)
        start = bc_start(ctx.out_dir, policy, sampler, task, d.eval_episodes, steps, pcfg.seed)
        ctx.log(f"[dapg] {'BC' if d.use_demos else 'fresh policy'} start: "
                + start_text(start, task_facts(task).has_success))
        rows = train_dapg(policy, baseline, sampler, d, ctx.out_dir, task, demo_obs, demo_act,
                          seed=pcfg.seed, eval_episodes=d.eval_episodes, log=ctx.log,
                          on_rollouts=recorder, horizon=steps, reward=env.reward)
    require_finite_policy(policy, f"{ctx.out_dir}: DAPG", "re-run with FORCE=1 and a smaller "
                          "dapg.step_size")  # e.g. a resumed run whose checkpoint was damaged
    save_checkpoint(ctx.out_dir / POLICY_FILE, {"policy": policy.state_dict(),
                                           "policy_config": policy.config()})
    refs = reference_logs(task)
    scored = task_facts(task).has_success
    learning_curve(ctx.out_dir / LOG, ctx.out_dir / EVAL_LOG, ctx.out_dir / CURVE,
                   f"{task}, {src.obs_mode}: " + ("success" if scored else "no success signal, "
                                                   "see the return"),
                   refs, start["success_rate"] if scored else None)  # None: not evaluated
    last = rows[-1]
    return {
        "obs_mode": src.obs_mode, "iterations": len(rows), "samples": int(sum(r["num_samples"] for r in rows)),
        "final_success_rate": last["success_rate"], "final_eval_score": last["eval_score"],
        "final_return": last["stoc_pol_mean"], "horizon": steps,
        "best_success_rate": float(np.max([r["success_rate"] for r in rows])),
        "bc_start": start, "final_eval_success_rate": _last_eval(ctx.out_dir),
        "checkpoint": POLICY_FILE, "log": LOG, "learning_curve": CURVE,
        "source": bc.summary["source"], "device": device,
        "rrl_reference_final_success": {k: v[-1]["success_rate"] for k, v in refs.items()},
    }


def progress(ctx: StageContext, upstream: dict[str, str]) -> Progress:
    """Iterations this output holds, and the finished shorter run it will continue (rl/extend)."""
    done = iterations_done(ctx.out_dir)
    found = continuation(ctx.out_dir, VERSION, inputs(ctx.config), upstream)
    return Progress(f"dapg iteration {done}/{ctx.config.dapg.iterations}" if done else "",
                    f"its dapg continues the finished {found[1]}-iteration run" if found else "")


def _continue_shorter_run(ctx: StageContext) -> None:
    """ITERS raised after a run finished: start from that run rather than from iteration 0."""
    if ctx.force:
        return  # FORCE=1 recomputes everything
    upstream = {name: result.key for name, result in ctx.upstream.items()}
    found = continuation(ctx.out_dir, VERSION, inputs(ctx.config), upstream)
    if found is not None:
        continue_from(found[0], ctx.out_dir, ctx.log)


def bc_start(out_dir: Path, policy: SampledPolicy, sampler: Sampler, task: str, episodes: int, horizon: int,
             seed: int) -> dict[str, float | None]:
    """Success of the BC policy before any DAPG step (kept, so a resumed run reuses it)."""
    if episodes == 0:  # dapg.eval_episodes=0: no evaluation at all, this one included
        return {"success_rate": None, "mean_return": None, "episodes": 0}
    kept = read_json_object(out_dir / BC_START)  # None: not yet, or damaged (then measured again)
    if kept is not None:
        return kept
    result = summarize(sampler.sample(policy, episodes, horizon, evaluation_seed(seed),
                                      deterministic=True), task)
    require_finite_returns(result, f"{out_dir}: BC start evaluation")
    start = {k: result[k] for k in ("success_rate", "mean_return", "episodes")}
    write_json_atomic(out_dir / BC_START, start)
    return start


def start_text(start: dict[str, Any], has_success: bool) -> str:
    if not start["episodes"]:
        return "not evaluated (dapg.eval_episodes=0)"
    success = f"{start['success_rate']:.1f}% success, " if has_success else ""
    return (f"{success}return {start['mean_return']:.1f} over {start['episodes']} episodes "
            "(mean action)")


def _last_eval(out_dir: Path) -> float | None:
    rows = read_csv_rows(out_dir / EVAL_LOG) if (out_dir / EVAL_LOG).exists() else []
    return rows[-1]["eval_success_rate"] if rows else None


def describe(result: StageResult) -> str:
    s = result.summary
    if "final_return" in s and not task_facts(result.manifest["inputs"]["task"]).has_success:
        ev = s["final_eval_score"]
        return (f"NPG ({s['obs_mode']}): {s['iterations']} iterations, {s['samples']} samples of "
                f"{s['horizon']} steps per episode; start {start_text(s['bc_start'], False)}; "
                f"last iteration: sampled return {s['final_return']:.1f}"
                + (f", evaluation (mean action) {ev:.1f}" if ev == ev else "")  # NaN: no eval
                + f"\nlog {result.out_dir / s['log']}\ncurve {result.out_dir / s['learning_curve']}")
    ref = ", ".join(f"{v:.1f}%" for v in s["rrl_reference_final_success"].values()) or "none found"
    ev = s.get("final_eval_success_rate")
    ev_text = f", evaluation {ev:.1f}%" if ev is not None else ""
    return (f"DAPG ({s['obs_mode']}): {s['iterations']} iterations, {s['samples']} samples; "
            f"BC start {start_text(s['bc_start'], True)}; last iteration: sampled success "
            f"{s['final_success_rate']:.1f}%{ev_text} (best sampled {s['best_success_rate']:.1f}%); "
            f"RRL's logs end at {ref}\n"
            f"log {result.out_dir / s['log']}\ncurve {result.out_dir / s['learning_curve']}")


STAGE = Stage(
    name="dapg",
    version=VERSION,
    upstream=("bc",),
    inputs=inputs,
    run=run,
    describe=describe,
    progress=progress,
)
