"""`rrl release NAME` and `rrl evaluate-release FOLDER`: a headline run's files under results/,
and one command that re-evaluates them on a fresh clone (pipeline/study/release.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.envs.families import horizon, task_facts
from pipeline.errors import ConfigError, StoreError
from pipeline.outputs import EVAL_LOG, LOG, policy_file
from pipeline.runner import Runner
from pipeline.study.release import evaluate_release as run
from pipeline.study.release import write_release
from pipeline.vae.resolve import resolve_trained_weights
from stages import STAGES

RESULTS = Path("results")


def release(ctx: typer.Context,
            name: Annotated[str, typer.Argument(help="folder name under results/")]) -> None:
    """Write the current config's trained policy, its encoder file and its logs to results/NAME."""
    from stages.study_cli import global_config

    config, data = global_config(ctx)
    config = resolve_trained_weights(config, data)  # WEIGHTS=<vae or rad key> names its encoder file
    e = config.encode
    chosen = {"encode.layers": e.layers, "encode.pool": e.pool != "auto",
              "encode.weights_prefix": e.weights_prefix, "policy.features": config.policy.features}
    if any(chosen.values()):
        # release.json records the encoder's whole-model output only: evaluate-release would
        # rebuild other features of the same width and score the policy on them.
        raise ConfigError(f"a release rebuilds the encoder's default features, but this policy "
                          f"reads chosen ones ({', '.join(k for k, v in chosen.items() if v)}). "
                          "Fix: release a policy trained on the encoder's default features")
    runner = Runner(config, STAGES, data)
    dapg, evaluate = runner.result("dapg"), runner.result("evaluate")
    if dapg is None or evaluate is None:
        raise StoreError("the current config has no finished dapg and evaluate outputs. Fix: run "
                         "`make evaluate` with the same settings first")
    weights = Path(config.encode.weights)
    if config.policy.obs_mode == "state" or not weights.is_file():
        raise ConfigError("a release holds a vision policy and the weights file of its encoder "
                          "(a VAE or RAD key, or a .safetensors path). Fix: set ENCODER= and WEIGHTS=")
    env, facts = config.env, task_facts(config.task)
    encoded = runner.result("encode")
    cameras = list(encoded.summary["cameras"]) if encoded is not None else []
    about: dict[str, Any] = {
        "run": {"task": config.task, "obs_mode": config.policy.obs_mode, "cameras": cameras,
                "width": env.width, "height": env.height, "shadows": env.shadows,
                "reward": env.reward, "horizon": horizon(config),
                "proprio_dim": facts.proprio_dim if config.policy.obs_mode != "vision" else 0,
                "evaluate_seed": config.evaluate.seed,
                "iterations": dapg.summary["iterations"], "samples": dapg.summary["samples"],
                "horizon_value": config.dapg.horizon_value},
        # What the encode stage recorded: the encoder is rebuilt exactly as it encoded.
        "encoder": {"name": config.encode.encoder, "precision": config.encode.precision,
                    "preprocessing": encoded.summary.get("preprocessing") if encoded else None},
        "keys": {stage: runner.key(stage) for stage in ("render", "encode", "bc", "dapg", "evaluate")},
        "evaluation": {"episodes": evaluate.summary["episodes"],
                       "per_level": evaluate.summary.get("per_level", {})},
    }
    files = {"encoder": weights, "policy": policy_file(dapg), "log": dapg.out_dir / LOG,
             "eval": dapg.out_dir / EVAL_LOG}
    out = write_release(RESULTS / name, files, about)
    for role, entry in out["files"].items():
        typer.echo(f"{role:<8} {RESULTS / name / entry['file']}  sha256 {entry['sha256']}")


def evaluate_release(
    folder: Annotated[Path, typer.Argument(help="a released result, e.g. results/door_vae")],
    episodes: Annotated[int, typer.Option(min=1, help="seeded episodes per level")] = 50,
    levels: Annotated[str, typer.Option(help="distractor levels, comma-separated")] = "0",
    device: Annotated[str, typer.Option(help="where frames are encoded")] = "auto",
) -> None:
    """Re-evaluate a released policy: render, encode with its encoder, score seeded episodes."""
    chosen = [p.strip() for p in levels.split(",")]
    if not all(p.isdigit() and int(p) <= 3 for p in chosen):
        raise ConfigError(f"invalid --levels {levels!r}: expected distractor levels 0-3, "
                          "comma-separated. Fix: e.g. --levels 0,1,2,3")
    run(folder, episodes, [int(p) for p in chosen], device=device,
        log=lambda m: typer.echo(m))


def register(app: typer.Typer) -> None:
    app.command("release")(release)
    app.command("evaluate-release")(evaluate_release)
