"""The `rrl` command: a thin layer over the stage runner.

Global options build one PipelineConfig; subcommands run stages, show status, list cameras.
Example: ``rrl --demos door-v0_demos.pickle --replay open_loop run render``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, PipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
_STARTED = time.perf_counter()

# Option name -> dotted config field; options left unset keep the config's default.
_OPTION_FIELDS: dict[str, str] = {
    "task": "demos.task", "demos": "demos.path", "demos_sha256": "demos.sha256",
    "replay": "render.replay", "cameras": "render.cameras", "size": "render.width+height",
    "shadows": "render.shadows",
    "max_demos": "render.max_demos", "encoder": "encode.encoder", "weights": "encode.weights",
    "precision": "encode.precision", "store": "encode.store", "scheduler": "encode.scheduler",
    "workers": "render/encode/dapg workers", "obs_mode": "policy.obs_mode", "iters": "dapg.iterations",
    "traj": "dapg.trajectories", "reward": "dapg.reward", "seed": "policy.seed",
}


class State:
    config: PipelineConfig = PipelineConfig()
    data: Path = Path("data")


def _overrides(options: dict[str, Any], sets: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in options.items():
        if value is None or value == "":
            continue
        if name == "size":
            out["render.width"] = out["render.height"] = str(value)
        elif name == "workers":
            out["render.workers"] = out["encode.workers"] = out["dapg.envs"] = str(value)
        else:
            out[_OPTION_FIELDS[name]] = str(value)
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"invalid --set {item!r}: expected section.name=value, e.g. render.width=64")
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


@app.callback()
def configure(
    task: Annotated[str | None, typer.Option(help="door | hammer | pen | relocate")] = None,
    demos: Annotated[str | None, typer.Option(help="local demo pickle (else download)")] = None,
    demos_sha256: Annotated[str | None, typer.Option(help="accept a demo file with this sha256")] = None,
    replay: Annotated[str | None, typer.Option(help="states | open_loop")] = None,
    cameras: Annotated[str | None, typer.Option(help="comma-separated camera names")] = None,
    size: Annotated[int | None, typer.Option(help="render width and height in pixels")] = None,
    shadows: Annotated[bool | None, typer.Option("--shadows/--no-shadows", help="render shadows")] = None,
    max_demos: Annotated[int | None, typer.Option(help="render only the first N demos")] = None,
    encoder: Annotated[str | None, typer.Option(help="encoder name (rrl encoders)")] = None,
    weights: Annotated[str | None, typer.Option(help="pretrained | random | path to weights")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 | bf16")] = None,
    store: Annotated[str | None, typer.Option(help="feature store: path or s3://, gs:// URL")] = None,
    scheduler: Annotated[str | None, typer.Option(help="dask scheduler address")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes")] = None,
    obs_mode: Annotated[str | None, typer.Option(help="state | vision+proprio | vision | noisy_proprio")] = None,
    iters: Annotated[int | None, typer.Option(help="DAPG iterations")] = None,
    traj: Annotated[int | None, typer.Option(help="trajectories per DAPG iteration")] = None,
    reward: Annotated[str | None, typer.Option(help="dense | sparse")] = None,
    seed: Annotated[int | None, typer.Option(help="policy seed")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="any config value: section.name=value")] = None,
    data: Annotated[Path, typer.Option(help="workspace folder")] = Path("data"),
) -> None:
    """Render, encode and learn Adroit tasks from cached frozen-encoder features."""
    options = {k: v for k, v in locals().items() if k in _OPTION_FIELDS}
    State.config = PipelineConfig().with_overrides(_overrides(options, set_ or []))
    State.data = data


def _runner() -> Any:
    from pipeline.runner import Runner
    from stages import STAGES

    return Runner(State.config, STAGES, State.data)


@app.command()
def run(
    stage: Annotated[str, typer.Argument(help="stage to run (missing upstream stages run first)")],
    force: Annotated[bool, typer.Option("--force", help="redo this stage even if up to date")] = False,
) -> None:
    """Run one stage; an up-to-date output is a cache hit."""
    runner = _runner()
    result = runner.run(stage, force=force)
    elapsed = time.perf_counter() - _STARTED
    verb = "cache hit" if result.cache_hit else "done"
    typer.echo(f"{stage}: {verb} in {elapsed:.2f} s, key {result.key[:12]}, output {result.out_dir}")
    text = runner.stage(stage).describe(result)
    if text:
        typer.echo(text)


@app.command()
def status() -> None:
    """Each stage for the current config: up to date, stale (and why) or missing."""
    for st in _runner().status():
        reason = f": {st.reason}" if st.reason else ""
        typer.echo(f"{st.name:<10} {st.key[:12]}  {st.state}{reason}")


@app.command()
def key(stage: Annotated[str, typer.Argument(help="stage name")]) -> None:
    """Print the full content key of a stage under the current config."""
    typer.echo(_runner().key(stage))


@app.command()
def cameras(task: Annotated[str | None, typer.Argument()] = None) -> None:
    """List the cameras each task offers (RRL's default marked with *)."""
    from pipeline.envs.tasks import TASK_SPECS, task_spec

    for name in [task] if task else list(TASK_SPECS):
        spec = task_spec(name)
        names = [f"{c}*" if c in spec.rrl_cameras else c for c in spec.cameras]
        typer.echo(f"{name:<9} {' '.join(names)}")


def _resolve_key(key: str | None) -> str:
    """A full feature key from a prefix, or the current config's encode key."""
    runner = _runner()
    if not key:
        return str(runner.key("encode"))
    if len(key) == 64:
        return key
    from pipeline.errors import StoreError

    matches = sorted({p.name for p in (State.data / "encode").glob(f"{key}*")})
    manifests = [State.data / "encode" / m / "manifest.json" for m in matches]
    found = [json.loads(m.read_text())["key"] for m in manifests if m.exists()]
    if len(found) != 1:
        raise StoreError(f"key prefix {key!r} matches {len(found)} local encode outputs. "
                         "Fix: give the full 64-character key (rrl inspect prints it)")
    return str(found[0])


def _local_root() -> str:
    from stages.encode import DEFAULT_STORE

    return State.config.encode.store or str(State.data / DEFAULT_STORE)


@app.command()
def inspect(key: Annotated[str | None, typer.Argument(help="feature key or prefix")] = None,
            store: Annotated[str | None, typer.Option(help="store root (default: local)")] = None) -> None:
    """Summary of a feature store group: encoder, weights (random flagged), shapes, size."""
    from pipeline.store.features import open_features, summary
    from pipeline.store.inspect import format_summary

    typer.echo(format_summary(summary(open_features(store or _local_root(), _resolve_key(key)))))


@app.command()
def push(key: Annotated[str, typer.Argument(help="feature key or prefix")],
         url: Annotated[str, typer.Argument(help="destination root: path, s3://..., gs://...")]) -> None:
    """Copy a finished feature group to a shared folder or bucket."""
    from pipeline.store.remote import copy_group

    full = _resolve_key(key)
    copy_group(_local_root(), url, full)
    typer.echo(f"pushed {full[:12]} to {url}")


@app.command()
def pull(key: Annotated[str, typer.Argument(help="full feature key (64 hex)")],
         url: Annotated[str, typer.Argument(help="source root: path, s3://..., gs://...")]) -> None:
    """Copy a feature group from a shared folder or bucket; `run encode` then finds it."""
    from pipeline.store.remote import copy_group

    copy_group(url, _local_root(), key)
    typer.echo(f"pulled {key[:12]} into {_local_root()}")


@app.command()
def encoders() -> None:
    """List the registered encoders and their feature widths."""
    from pipeline.encoders import encoder_spec, list_encoders

    for name in list_encoders():
        spec = encoder_spec(name)
        typer.echo(f"{name:<24} {spec.feature_dim:>5}-d  {spec.source}: {spec.pretrained_tag}")


def main() -> None:
    try:
        app()
    except PipelineError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is kept; run the same command again to resume", err=True)
        sys.exit(130)
