"""render: replay every demo in the simulator, render each step, write an HDF5 episode file."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tqdm import tqdm

from pipeline.config import PipelineConfig
from pipeline.envs.demos import load_demos
from pipeline.envs.distractors import DistractorSpec
from pipeline.envs.families import (
    check_task_config,
    require_demos,
    resolve_task_cameras,
    task_camera_key,
    without_demos,
)
from pipeline.envs.replay import check_mode_supported, replay_parallel
from pipeline.runner import Stage, StageContext, StageResult
from pipeline.settings import key_dict
from pipeline.store.space import frames_bytes, require_free_space

VERSION = "1"
EPISODES = "episodes.hdf5"
SHEET = "contact_sheet.png"


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    check_task_config(cfg)
    env = cfg.env
    cameras = resolve_task_cameras(env.task, env.cameras)
    # The frame settings under the names they had in the render section: keys stay as they were.
    out = {**key_dict(cfg.render), "task": env.task, "cameras": list(cameras),
           "width": env.width, "height": env.height, "shadows": env.shadows,
           "camera_poses": task_camera_key(env.task, cameras)}
    if env.distractor_level:  # level 0 frames are those of a render without distractors
        out["distractors"] = distractors(cfg).key()
    elif env.distractor_levels:  # a mix: demo i at levels[i % n]
        out["distractors"] = {**DistractorSpec(0, env.distractor_seed).key(),
                              "levels": list(env.distractor_levels)}
    return out


def distractors(cfg: PipelineConfig) -> DistractorSpec:
    """The render's distractors; demo i is rendered in the scene of seed ``seed + i``."""
    return DistractorSpec(cfg.env.distractor_level, cfg.env.distractor_seed)


def run(ctx: StageContext) -> dict[str, Any]:
    from pipeline.envs.render_report import summarize_fidelity, write_contact_sheet
    from pipeline.store.episodes import EpisodeWriter
    from pipeline.store.frames import FrameCodec

    task, rcfg = ctx.config.task, ctx.config.render
    require_demos(task, "the render stage replays them")
    check_mode_supported(task, rcfg.replay)
    cameras = resolve_task_cameras(task, ctx.config.env.cameras)
    env = dataclasses.replace(ctx.config.env, cameras=cameras)
    demos_res = ctx.upstream["demos"]
    demos, sha = load_demos(demos_res.out_dir / "demos.pickle", task, demos_res.summary["sha256"])
    demos = demos[: rcfg.max_demos] if rcfg.max_demos else demos
    env_args = {"env_name": task, "type": "adroit", "env_kwargs": inputs(ctx.config)}
    writer = EpisodeWriter(ctx.out_dir / EPISODES, env_args, sha, cameras, log=ctx.log,
                           codec=FrameCodec.of(rcfg))
    done = writer.completed()
    if done:
        ctx.log(f"[render] resuming: {len(done)} of {len(demos)} episodes already written")
    jobs = [(i, d) for i, d in enumerate(demos) if i not in done]
    steps = [min(len(d), rcfg.max_steps or len(d)) for _, d in jobs]
    total = sum(steps)

    def needed(frames: int) -> int:
        return frames_bytes(frames, env.height, env.width, len(cameras), rcfg.codec)

    require_free_space(ctx.out_dir, needed(total), f"{total} frames per camera")
    started = time.perf_counter()
    try:
        with tqdm(total=total, unit="step", desc=f"render {task} ({rcfg.replay})") as bar:
            for episode in replay_parallel(env, rcfg, jobs):
                # Again per episode: the disk is shared, and a full one must stop us cleanly.
                require_free_space(ctx.out_dir, needed(len(episode.actions)),
                                   f"episode {episode.index}")
                writer.write(episode.index, episode.to_episode())
                bar.update(len(episode.actions))
    finally:
        writer.close()
    seconds = time.perf_counter() - started
    fidelity = summarize_fidelity(ctx.out_dir / EPISODES, rcfg.replay)
    write_contact_sheet(ctx.out_dir / EPISODES, ctx.out_dir / SHEET)
    return {
        "task": task, "replay": rcfg.replay, "cameras": list(cameras), "episodes": fidelity["episodes"],
        "frames_per_camera": fidelity["steps"], "render_seconds": round(seconds, 2),
        "frames_per_second": round(total * len(cameras) / seconds, 1) if total else None,
        "fidelity": fidelity, "episodes_file": EPISODES,  # in out_dir: the data folder may move
        "contact_sheet": SHEET,
        **({"distractors": {"level": env.distractor_level or None,
                            "levels": list(env.distractor_levels) or None,
                            "seed": env.distractor_seed, "per_demo": "seed + demo index"}}
           if env.distractor_level or env.distractor_levels else {}),
    }


def describe(result: StageResult) -> str:
    s = result.summary
    f = s["fidelity"]
    lines = [f"{s['episodes']} episodes, {s['frames_per_camera']} frames per camera "
             f"({', '.join(s['cameras'])}) in {result.out_dir / s['episodes_file']}"]
    if s["replay"] == "states":
        lines.append(
            f"replay fidelity (states): joints max |diff| {f['max_joint_diff']:.2e} rad, "
            f"sites max {f['max_site_diff_m'] * 1000:.2f} mm (median {f['median_site_diff_m'] * 1000:.2f} mm), "
            f"{f['within_tolerance_episodes']}/{s['episodes']} episodes within tolerance "
            f"(joints {f['joint_tolerance']:g} rad, sites {f['site_tolerance_m'] * 1000:g} mm)")
    else:
        lines.append(
            f"replay fidelity (open_loop): success at the end {f['success_at_end']}/{s['episodes']}, "
            f"ever {f['ever_success']}/{s['episodes']}; state drift max {f['max_abs_obs_diff']:.3f}, "
            f"mean {f['mean_abs_obs_drift']:.4f}")
    lines.append(f"contact sheet: {result.out_dir / s['contact_sheet']}")
    return "\n".join(lines)


STAGE = Stage(
    name="render",
    version=VERSION,
    upstream=("demos",),
    inputs=inputs,
    run=run,
    describe=describe,
    not_applicable=without_demos,
)
