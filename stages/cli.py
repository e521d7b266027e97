"""The `rrl` command: a thin layer over the stage runner.

Global options build one PipelineConfig; subcommands run stages, show status, list cameras.
Example: ``rrl --demos door-v0_demos.pickle --replay open_loop run render``.
The options come from the one table in `stages.options`; each also reads ``RRL_<MAKE VAR>``
from the environment, which is how `make features ENCODER=resnet18` reaches it.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.config import PipelineConfig
from pipeline.encoders.catalog import listing
from pipeline.envs.families import TASK_FACTS, task_facts
from pipeline.envs.tasks import TASK_SPECS
from pipeline.errors import ConfigError, PipelineError, StoreError
from pipeline.manifests import MANIFEST, read_manifest
from pipeline.runner import Runner
from pipeline.vae.resolve import resolve_trained_weights
from stages import STAGES, release_cli, study_cli
from stages.cli_errors import explain_os_error, is_remote_error
from stages.encode import DEFAULT_STORE
from stages.options import OPTIONS, check_make_vars, overrides

EXIT_CODES = ("Exit status: 0 done; 1 a check found problems (rrl verify); 2 an error (a bad setting "
              "or input file, a damaged store, a failed stage), told in one line with its fix; "
              "130 interrupted (finished work is kept).")
app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Render, encode and learn Adroit tasks from cached frozen-encoder features.",
                  epilog=EXIT_CODES)
_STARTED = time.perf_counter()


class State:
    config: PipelineConfig = PipelineConfig()
    data: Path = Path("data")


def configure(**values: Any) -> None:
    """Render, encode and learn Adroit tasks from cached frozen-encoder features."""
    make_vars = os.environ.get("RRL_MAKE_VARS", "").split()
    check_make_vars(make_vars)
    sets = values.pop("set_") or []
    # Absolute: paths sent to an external dask cluster's workers must not depend on their cwd.
    State.data = values.pop("data").absolute()
    State.config = PipelineConfig().with_overrides(overrides(values, sets))
    State.config = resolve_trained_weights(State.config, State.data)  # ENCODER=vae|rad WEIGHTS=<key>
    if State.config.encode.weights.startswith("sha256:"):  # a weights file named by content
        from pipeline.store.weights_files import resolve_config_reference

        State.config = resolve_config_reference(State.config, store_url())


def _option_parameters() -> list[inspect.Parameter]:
    params = [
        inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            str | None, typer.Option(o.flag, envvar=f"RRL_{o.make_var}", help=o.describe(),
                                     show_default=False)])
        for o in OPTIONS
    ]
    params.append(inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        list[str] | None, typer.Option("--set", envvar="RRL_SET",
                                       help="any config value: section.name=value (repeatable)")]))
    params.append(inspect.Parameter("data", inspect.Parameter.KEYWORD_ONLY, default=Path("data"), annotation=Annotated[
        Path, typer.Option(envvar="RRL_DATA", help="workspace folder")]))
    return params


configure.__signature__ = inspect.Signature(_option_parameters())  # type: ignore[attr-defined]
configure.__annotations__ = {p.name: p.annotation for p in _option_parameters()}
app.callback()(configure)


def _runner() -> Runner:
    return Runner(State.config, STAGES, State.data)


def store_url() -> str:
    return State.config.encode.store or str(State.data / DEFAULT_STORE)


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
def options() -> None:
    """The options: CLI flag, Make variable, the config fields they set, help."""
    for o in OPTIONS:
        typer.echo(f"{o.flag:<16} {o.make_var + '=':<14} {','.join(o.fields):<44} {o.describe()}")
    typer.echo(f"{'--set':<16} {'SET=':<14} {'section.name=value ...':<44} any other config field")


@app.command()
def cameras(task: Annotated[str | None, typer.Argument()] = None) -> None:
    """List the cameras each task offers (the default ones, RRL's on Adroit, marked with *)."""
    for name in [task] if task else list(TASK_FACTS):
        facts = task_facts(name)
        names = [f"{c}*" if c in facts.default_cameras else c for c in facts.cameras]
        typer.echo(f"{name:<16} {' '.join(names)}")


def _resolve_key(key: str | None) -> str:
    """A full feature key from a prefix, or the current config's encode key."""
    runner = _runner()
    if not key:
        return str(runner.key("encode"))
    if len(key) == 64:
        return key
    matches = sorted({p.name for p in (State.data / "encode").glob(f"{key}*")})
    manifests = [read_manifest(State.data / "encode" / m / MANIFEST) for m in matches]
    found = [m["key"] for m in manifests if m is not None]
    if len(found) != 1:
        raise StoreError(f"key prefix {key!r} matches {len(found)} local encode outputs. "
                         "Fix: give the full 64-character key (rrl inspect prints it)")
    return str(found[0])


@app.command("inspect")
def inspect_group(key: Annotated[str | None, typer.Argument(help="feature key or prefix")] = None,
             store: Annotated[str | None, typer.Option(help="store root (default: local)")] = None) -> None:
    """Summary of a feature store group: encoder, weights (random flagged), shapes, size."""
    from pipeline.store.features import open_features
    from pipeline.store.inspect import format_summary, summary

    typer.echo(format_summary(summary(open_features(store or store_url(), _resolve_key(key)))))



@app.command()
def verify(key: Annotated[str | None, typer.Argument(help="feature key or prefix")] = None,
           store: Annotated[str | None, typer.Option(help="store root (default: local)")] = None) -> None:
    """Check a feature group against its per-shard checksums; report all-zero rows. Exit 1 if bad."""
    from pipeline.store.inspect import format_verify_report
    from pipeline.store.verify import verify_group

    report = verify_group(store or store_url(), _resolve_key(key))
    typer.echo(format_verify_report(report.as_dict()))
    if not report.ok:
        raise typer.Exit(1)


MaxWeightsMB = Annotated[float | None, typer.Option(
    envvar="RRL_MAX_WEIGHTS_MB", help="leave out weights files larger than this many MB (the "
    "group's features still copy; rebuilding its encoder then asks for the file)")]


def _copy(src: str, dst: str, key: str, max_weights_mb: float | None) -> None:
    from pipeline.store.copy import copy_group

    limit = None if max_weights_mb is None else int(max_weights_mb * 1e6)
    for note in copy_group(src, dst, key, max_weights_bytes=limit).notes:
        typer.echo(f"note: {note}", err=True)


@app.command()
def push(key: Annotated[str, typer.Argument(help="feature key or prefix")],
         url: Annotated[str, typer.Argument(help="destination root: path, s3://..., gs://...")],
         max_weights_mb: MaxWeightsMB = None) -> None:
    """Copy a finished feature group, and its weights files, to a shared folder or bucket."""
    full = _resolve_key(key)
    _copy(store_url(), url, full, max_weights_mb)
    typer.echo(f"pushed {full[:12]} to {url}")


@app.command()
def pull(key: Annotated[str, typer.Argument(help="full feature key (64 hex)")],
         url: Annotated[str, typer.Argument(help="source root: path, s3://..., gs://...")],
         max_weights_mb: MaxWeightsMB = None) -> None:
    """Copy a feature group and its weights files from a shared folder or bucket; `run encode`
    then finds it (WEIGHTS=sha256:<hex> names its weights file by content)."""
    _copy(url, store_url(), key, max_weights_mb)
    typer.echo(f"pulled {key[:12]} into {store_url()}")


def _int_list(raw: str, option: str, example: str) -> list[int]:
    parts = [p.strip() for p in raw.split(",")]
    if not all(p.lstrip("-").isdigit() for p in parts):
        raise ConfigError(f"invalid {option} {raw!r}: expected comma-separated whole numbers. "
                          f"Fix: e.g. {option} {example}")
    return [int(p) for p in parts]


@app.command()
def distractors(
    task: Annotated[list[str] | None, typer.Option(help="task(s); default: all four")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG path")] = None,
    levels: Annotated[str, typer.Option(help="comma-separated levels")] = "0,1,2,3",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1,2",
    size: Annotated[int, typer.Option(help="pixels per frame")] = 128,
) -> None:
    """Contact sheet of the visual distractors: rows = levels, columns = seeds, one block per task."""
    # Rendering first: nothing here may import torch before the GL context exists.
    from pipeline.envs.distractor_sheet import write_distractor_sheet

    tasks = task or list(TASK_SPECS)
    path = out or State.data / "distractors" / f"{'_'.join(tasks)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_distractor_sheet(tasks if len(tasks) > 1 else tasks[0], path,
                           levels=_int_list(levels, "--levels", "0,1,2,3"),
                           seeds=_int_list(seeds, "--seeds", "0,1,2"), size=size)
    typer.echo(f"distractor sheet: {path}")


@app.command()
def encoders(search: Annotated[str | None, typer.Option(
                 help="list timm's pretrained tags matching this (substring or glob)")] = None,
             limit: Annotated[int, typer.Option(help="at most this many tags")] = 50) -> None:
    """The aliases, or timm's pretrained tags: input config and feature width per layer."""
    for line in listing(search, limit):
        typer.echo(line)


def main() -> None:
    # A failed batch of concurrent uploads (fsspec over aiohttp) leaves sibling tasks whose
    # errors nobody awaits; asyncio would log each, traceback and all, as "Task exception was
    # never retrieved" when it is collected. The first failure is already this command's error.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        app()
    except PipelineError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        typer.echo(f"error: {explain_os_error(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is kept; run the same command again to resume", err=True)
        sys.exit(130)
    except Exception as exc:
        if not is_remote_error(exc):
            raise
        typer.echo(f"error: {explain_os_error(exc)}", err=True)
        sys.exit(2)


study_cli.register(app)  # `rrl experiment run|status NAME`, `rrl report NAME...`
release_cli.register(app)  # `rrl release NAME`, `rrl evaluate-release FOLDER`
