"""demos: locate the hand_dapg demonstrations, verify their checksum, validate, keep a copy.

DeepMind Control tasks have none: their key is computed (so status works), running it is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.envs.demos import PINS, expected_sha256, load_demos, resolve_demo_file
from pipeline.envs.families import check_task_config, require_demos, task_facts, without_demos
from pipeline.fileio import file_sha256
from pipeline.outputs import DEMOS_FILE
from pipeline.runner import Stage, StageContext, StageResult

VERSION = "1"



def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    d = cfg.demos
    check_task_config(cfg)
    if not task_facts(cfg.task).has_demos:
        return {"task": cfg.task, "source": None}
    if d.path:
        source = file_sha256(d.path) if Path(d.path).is_file() else f"missing file {d.path}"
    else:
        source = expected_sha256(cfg.task, d.sha256) or f"git-blob:{PINS[cfg.task].git_blob}"
    return {"task": cfg.task, "source": source}


def run(ctx: StageContext) -> dict[str, Any]:
    d, cfg = ctx.config.demos, ctx.config
    require_demos(cfg.task, "the demos stage was asked to find and check them")
    path = resolve_demo_file(cfg.task, d.path, d.sha256)
    demos, sha = load_demos(path, cfg.task, d.sha256)
    shutil.copyfile(path, ctx.out_dir / DEMOS_FILE)
    lengths = [len(x) for x in demos]
    ctx.log(f"[demos] {len(demos)} valid {cfg.task} demos, {sum(lengths)} steps, sha256 {sha[:12]}")
    return {"task": cfg.task, "sha256": sha, "source_path": str(path), "episodes": len(demos),
            "steps": sum(lengths), "lengths": lengths}


def describe(result: StageResult) -> str:
    s = result.summary
    return f"{s['episodes']} {s['task']} demos, {s['steps']} steps (sha256 {s['sha256'][:12]})"


STAGE = Stage(
    name="demos",
    version=VERSION,
    upstream=(),
    inputs=inputs,
    run=run,
    describe=describe,
    not_applicable=without_demos,
)
