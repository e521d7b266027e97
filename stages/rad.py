"""rad: RAD (SAC from pixels with random crops) on a DeepMind Control task; its encoder as weights.

Trains for ``rad.env_steps`` suite control steps (DMControl-100k: 100,000), rendering the task's
pixel-RL camera itself (no upstream stage), and checkpoints after every episode: a killed run
resumes from its last episode, bit for bit (``pipeline.rl.rad_train``). Writes ``log.csv`` (one
row per training episode: ``num_samples`` env steps as the NPG logs count them, ``env_steps``
control steps as DMControl-100k counts them, ``stoc_pol_mean`` the episode's return),
``eval.csv`` (mean-action returns over ``rad.eval_episodes`` seeded episodes, every
``rad.eval_every`` control steps and at the end), a learning curve, ``agent.pt`` (actor and
critic) and ``encoder.safetensors``: the encoder the actor acts through, the weights file of the
registered ``rad`` encoder. ``ENCODER=rad WEIGHTS=<this stage's key, 12+ characters>`` encodes
frames with it into the feature store, frozen (the paper's "fixed RAD encoder"); frames must be
rendered at ``rad.render_size`` (``SIZE=``), which the file records with the crop.

What is learnt on is the env section's: ``env.task`` (a DMControl task), ``env.horizon`` (env
steps per episode; unset: the task's), ``env.cameras`` (one) and ``env.shadows``. Its progress
for `status` (episodes done) comes from ``log.csv``, which gets a row after each checkpoint.
"""

from __future__ import annotations

import shutil
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.envs.dmc_tasks import dmc_task_spec
from pipeline.envs.families import (
    DMC,
    check_task_config,
    family,
    resolve_task_cameras,
    resolved_horizon,
)
from pipeline.errors import ConfigError
from pipeline.fileio import file_sha256, read_json_object, write_json_atomic
from pipeline.outputs import CHECKPOINT, CURVE, EVAL_LOG, LOG, RAD_REPLAY
from pipeline.rl.extend import progress as rows_logged
from pipeline.runner import Progress, Stage, StageContext, StageResult
from pipeline.settings import key_dict

VERSION = "1"
ENCODER_FILE = "encoder.safetensors"
AGENT = "agent.pt"
RESULT = "result.json"  # the summary, written once the outputs are; then the replay is deleted
VERIFY_ROWS = 16  # frames the written encoder must reproduce the actor's features on


def camera(cfg: PipelineConfig) -> str:
    cameras = resolve_task_cameras(cfg.task, cfg.env.cameras)
    if len(cameras) != 1:
        raise ConfigError(f"invalid env.cameras={','.join(cameras)} for the rad stage: RAD sees "
                          f"one camera. Fix: CAMERAS={cameras[0]} (or leave CAMERAS unset for the "
                          "task's pixel-RL camera)")
    return cameras[0]


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    if family(cfg.task) != DMC:
        raise ConfigError(f"the rad stage runs DeepMind Control tasks; {cfg.task} is an Adroit "
                          "task. Fix: TASK=cartpole-swingup (or finger-spin, walker-walk, "
                          "cheetah-run)")
    check_task_config(cfg)
    return {"task": cfg.task, "rad": {**key_dict(cfg.rad), "horizon": keyed_horizon(cfg)},
            "camera": camera(cfg), "shadows": cfg.env.shadows, "seed": cfg.policy.seed}


def keyed_horizon(cfg: PipelineConfig) -> int | None:
    """env.horizon as the key (and the checkpoint) hold it: None for the task's own episode
    length, set or not, as rad.horizon was keyed before it became env.horizon (so outputs made
    then keep their keys), and an unset horizon and the task's own share a key, as elsewhere."""
    steps = resolved_horizon(cfg.task, cfg.env.horizon)
    return None if steps == resolved_horizon(cfg.task, None) else steps


def planned_episodes(cfg: PipelineConfig) -> int:
    """Training episodes of the run: whole episodes covering ``rad.env_steps`` control steps."""
    return dmc_task_spec(cfg.task).episodes_for(cfg.rad.env_steps, keyed_horizon(cfg))


def progress(ctx: StageContext, upstream: dict[str, str]) -> Progress:
    """Episodes this output's checkpoint holds: the log gets its row right after (torch-free)."""
    done = rows_logged(ctx.out_dir)
    return Progress(f"rad episode {done}/{planned_episodes(ctx.config)}" if done else "")


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    from pipeline.rl.rad_train import RADSetup, train_rad

    out, cfg = ctx.out_dir, ctx.config.rad
    written = read_json_object(out / RESULT)  # None: not written, or damaged (then redone)
    if written is not None and _outputs_intact(ctx, written):
        ctx.log("[rad] outputs already written (the run ended before its manifest): reusing them")
        return written
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = ctx.config.env
    setup = RADSetup(env.task, camera(ctx.config), env.shadows, ctx.config.policy.seed,
                     keyed_horizon(ctx.config))
    ctx.log(f"[rad] {setup.task} from {cfg.render_size} px frames of camera {setup.camera!r} "
            f"(crop {cfg.crop}, {cfg.frame_stack} stacked): {cfg.env_steps:,} control steps, "
            f"batch {cfg.batch_size}, {torch.get_num_threads()} torch threads")
    result = train_rad(cfg, setup, out, ctx.log)
    summary = _write_outputs(ctx, setup, result)
    write_json_atomic(out / RESULT, summary)
    shutil.rmtree(out / RAD_REPLAY, ignore_errors=True)  # only needed to resume
    (out / CHECKPOINT).unlink(missing_ok=True)
    return summary


def _write_outputs(ctx: StageContext, setup: Any, result: Any) -> dict[str, Any]:
    from pipeline.rl.checkpoints import save_checkpoint
    from pipeline.rl.rad_weights import check_encoder_file, learning_curve, write_encoder

    out, cfg, agent = ctx.out_dir, ctx.config.rad, result.agent
    write_encoder(agent, out / ENCODER_FILE, {**setup.as_dict(), "rad_key": ctx.key})
    last = sorted((out / RAD_REPLAY).glob("episode_*.pt"))[-1]
    check_encoder_file(agent, out / ENCODER_FILE, last, VERIFY_ROWS)
    save_checkpoint(out / AGENT, {"actor": agent.actor.state_dict(),
                                  "critic": agent.critic.state_dict(),
                                  "architecture": agent.arch.as_dict(), "act_dim": agent.act_dim})
    rows, evals = result.rows, result.eval_rows
    learning_curve(rows, evals, out / CURVE, f"RAD on {setup.task} ({cfg.render_size} px, crop "
                   f"{cfg.crop}, {cfg.frame_stack} frames)")
    final = evals[-1] if evals else None
    return {
        "task": setup.task, "camera": setup.camera, "episodes": len(rows),
        "samples": int(sum(r["num_samples"] for r in rows)),
        "env_steps": int(rows[-1]["env_steps"]) if rows else 0,
        "final_return": rows[-1]["stoc_pol_mean"] if rows else None,
        "final_eval_score": final["eval_score"] if final else None,
        "final_eval_std": final["eval_std"] if final else None,
        "eval_episodes": cfg.eval_episodes, "evaluations": len(evals),
        "train_seconds": round(sum(r["time_sampling"] + r["time_update"] for r in rows), 1),
        "eval_seconds": round(sum(r["time_eval"] for r in evals), 1),
        "resumed_from_episode": result.resumed_from,
        "replay_bytes": result.replay_bytes, "architecture": agent.arch.as_dict(),
        "encoder_file": ENCODER_FILE, "encoder_sha256": file_sha256(out / ENCODER_FILE),
        "agent": AGENT, "log": LOG, "eval_log": EVAL_LOG, "learning_curve": CURVE,
    }


def _outputs_intact(ctx: StageContext, summary: dict[str, Any]) -> bool:
    path = ctx.out_dir / ENCODER_FILE
    return path.is_file() and file_sha256(path) == summary.get("encoder_sha256") and all(
        (ctx.out_dir / summary[k]).is_file() for k in ("agent", "log", "eval_log", "learning_curve"))


def describe(result: StageResult) -> str:
    s, out = result.summary, result.out_dir
    ev = s["final_eval_score"]
    ev_text = (f"; evaluation (mean action, {s['eval_episodes']} episodes) {ev:.1f} +- "
               f"{s['final_eval_std']:.1f}") if ev is not None else ""
    return "\n".join([
        f"RAD on {s['task']} (camera {s['camera']}): {s['episodes']} episodes, {s['env_steps']:,} "
        f"control steps ({s['samples']:,} env steps); last training episode return "
        f"{s['final_return']:.1f}{ev_text}",
        f"replay memory {s['replay_bytes'] / 2**20:.0f} MiB; {s['train_seconds']:.0f} s training, "
        f"{s['eval_seconds']:.0f} s evaluating",
        f"log {out / s['log']}\ncurve {out / s['learning_curve']}",
        f"encoder weights: {out / s['encoder_file']}",
        f"encode with it: make features ENCODER=rad WEIGHTS={result.key[:12]} "
        f"SIZE={s['architecture']['input_size']} (frames rendered as RAD saw them)",
    ])


STAGE = Stage(
    name="rad",
    version=VERSION,
    upstream=(),
    inputs=inputs,
    run=run,
    describe=describe,
    progress=progress,
)
