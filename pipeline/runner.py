"""The stage graph: content keys, manifests, locks, status and force.

A stage's key is the sha256 of canonical JSON of (stage name, code version, key inputs, upstream
keys). Its outputs live in ``<data>/<stage>/<key[:12]>/`` and count as done only once
``manifest.json`` exists; the manifest is written last, by atomic rename, so a crash never leaves
an output that reads as done. A partially written folder is kept so the stage can resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, UnknownNameError, WeightsError, unknown_name
from pipeline.fileio import write_json_atomic
from pipeline.locks import lock_holder, stage_lock
from pipeline.manifests import (
    MANIFEST,
    diff_flat,
    folder_size,
    git_commit,
    latest_manifest,
    package_versions,
    read_manifest,
)

__all__ = [
    "MANIFEST",
    "Progress",
    "Runner",
    "Stage",
    "StageContext",
    "StageResult",
    "StageStatus",
    "canonical_json",
    "content_key",
    "lock_holder",
    "package_versions",
    "stage_lock",
    "write_json_atomic",
]



def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(stage: str, version: str, inputs: dict[str, Any], upstream: dict[str, str]) -> str:
    payload = {"stage": stage, "version": version, "inputs": inputs, "upstream": upstream}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


@dataclass
class StageContext:
    """What a stage's ``run`` function gets: where to write, its config, its upstream outputs."""

    name: str
    key: str
    out_dir: Path
    config: PipelineConfig
    upstream: dict[str, StageResult]
    data_dir: Path
    log: Callable[[str], None] = print
    force: bool = False  # FORCE=1: redo the work even where the stage's own store holds it
    version: str = ""  # the stage's code version (see ``key_still_holds``)

    def key_still_holds(self, inputs: dict[str, Any]) -> bool:
        """Whether the stage's inputs, recomputed now, still give this output's key.

        A file hashed into the key (weights, a policy checkpoint) may be replaced after the
        runner computed it; its output would then sit under the other file's key. Keys are cheap
        to recompute, so a stage that hashes files checks before it writes.
        """
        upstream = {name: result.key for name, result in self.upstream.items()}
        return content_key(self.name, self.version, inputs, upstream) == self.key


@dataclass(frozen=True)
class StageResult:
    name: str
    key: str
    out_dir: Path
    manifest: dict[str, Any]
    cache_hit: bool = False

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.manifest.get("summary", {}))

    def file(self, field: str) -> Path:
        """A file the summary names under ``field``: it lives in this output's folder.

        Only the name is used, so manifests written when summaries held paths (absolute, or
        relative to another working directory) still resolve after the data folder moved.
        """
        return self.out_dir / Path(str(self.summary[field])).name


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A stage declaration. ``inputs`` returns the JSON-able values that decide its output."""

    name: str
    version: str
    # Upstream stage names, or a function of the config for stages whose inputs depend on a mode
    # (state-based learning needs no rendered frames).
    upstream: tuple[str, ...] | Callable[[PipelineConfig], tuple[str, ...]]
    inputs: Callable[[PipelineConfig], dict[str, Any]]
    run: Callable[[StageContext], dict[str, Any]]
    describe: Callable[[StageResult], str] = field(default=lambda r: "")
    # Finds an output made elsewhere (a pulled feature store) and returns its summary, or None.
    # Called before upstream stages run, so a teammate's store needs no local render.
    adopt: Callable[[StageContext], dict[str, Any] | None] | None = None
    # Called on a cache hit (the manifest exists): None when the output still holds, else why
    # not (a feature store moved to a bucket, a shard file lost), so the stage is adopted or run
    # again. ``thorough`` is True before a run uses the output (read and check everything),
    # False for `status` (cheap checks only: it is called for every stage on every call).
    check_done: Callable[[StageContext, bool], str | None] | None = None
    # Why the stage does not apply to this config (a task without demos has nothing to render),
    # or None. Its key is still computed, for the stages below it; `status` shows it as n/a.
    not_applicable: Callable[[PipelineConfig], str | None] | None = None
    # How far an unfinished output got and what it will start from, for `status` (dapg: its
    # iterations, and the finished shorter run it continues). Given the upstream keys.
    progress: Callable[[StageContext, dict[str, str]], Progress] | None = None


@dataclass(frozen=True)
class Progress:
    """What a stage's ``progress`` hook says about an output that is not done."""

    done: str = ""  # how far it got, e.g. "dapg iteration 12/300"
    continues: str = ""  # what it will start from, e.g. "its dapg continues the finished ..."


@dataclass(frozen=True)
class StageStatus:
    name: str
    key: str
    state: str  # "up to date" | "running" | "stale" | "missing" | "n/a" (does not apply here)
    reason: str = ""
    started: bool = False  # an unfinished output of this key is on disk (it resumes)


class Runner:
    def __init__(
        self,
        config: PipelineConfig,
        stages: dict[str, Stage],
        data_dir: Path | str = "data",
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.stages = stages
        self.data_dir = Path(data_dir)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self._keys: dict[str, str] = {}

    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            raise unknown_name("stage", name, list(self.stages))
        return self.stages[name]

    def inputs(self, name: str) -> dict[str, Any]:
        return self.stage(name).inputs(self.config)

    def upstream_of(self, name: str) -> tuple[str, ...]:
        upstream = self.stage(name).upstream
        return upstream(self.config) if callable(upstream) else upstream

    def upstream_keys(self, name: str) -> dict[str, str]:
        return {up: self.key(up) for up in self.upstream_of(name)}

    def key(self, name: str) -> str:
        if name not in self._keys:
            st = self.stage(name)
            self._keys[name] = content_key(name, st.version, self.inputs(name), self.upstream_keys(name))
        return self._keys[name]

    def out_dir(self, name: str) -> Path:
        return self.data_dir / name / self.key(name)[:12]

    def result(self, name: str) -> StageResult | None:
        path = self.out_dir(name) / MANIFEST
        manifest = read_manifest(path)
        if manifest is None:
            if path.exists():
                self.log(f"[{name}] {path} cannot be read or names another key: the output "
                         "counts as not done, so this run checks or redoes it")
            return None
        return StageResult(name, manifest["key"], path.parent, manifest, cache_hit=True)

    def run(self, name: str, force: bool = False) -> StageResult:
        """Run ``name`` (and any missing upstream stage first); a finished output is a cache hit."""
        done = self.result(name)
        check = self.stage(name).check_done
        if done is not None and not force:
            problem = check(self._context(name, {}), True) if check is not None else None
            if problem is None:
                self.log(f"[{name}] cache hit {done.key[:12]} ({done.out_dir})")
                return done
            self.log(f"[{name}] not a cache hit: {problem}")
        if not force and self.stage(name).adopt is not None:
            adopted = self._adopt(name)
            if adopted is not None:
                return adopted
        upstream = {up: self.run(up) for up in self.upstream_of(name)}
        return self._execute(name, upstream, force, seen_manifest=done is not None)

    def _context(self, name: str, upstream: dict[str, StageResult],
                 force: bool = False) -> StageContext:
        return StageContext(name, self.key(name), self.out_dir(name), self.config, upstream,
                            self.data_dir, self.log, force, self.stage(name).version)

    def _adopt(self, name: str) -> StageResult | None:
        adopt = self.stage(name).adopt
        assert adopt is not None
        summary = adopt(self._context(name, {}))
        if summary is None:
            return None
        self.log(f"[{name}] cache hit {self.key(name)[:12]}: found a finished output made elsewhere")
        self.out_dir(name).mkdir(parents=True, exist_ok=True)
        manifest = self._manifest(name, self.upstream_keys(name), summary, 0.0)
        write_json_atomic(self.out_dir(name) / MANIFEST, manifest)
        return StageResult(name, self.key(name), self.out_dir(name), manifest, cache_hit=True)

    def _manifest(self, name: str, upstream_keys: dict[str, str], summary: dict[str, Any],
                  seconds: float) -> dict[str, Any]:
        st = self.stage(name)
        return {
            "stage": name,
            "key": self.key(name),
            "version": st.version,
            "inputs": self.inputs(name),
            "upstream": upstream_keys,
            "summary": summary,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "bytes": folder_size(self.out_dir(name)),
            "versions": package_versions(),
            "git_commit": git_commit(),
        }

    def _execute(self, name: str, upstream: dict[str, StageResult], force: bool,
                 seen_manifest: bool = False) -> StageResult:
        st, key, out_dir = self.stage(name), self.key(name), self.out_dir(name)
        with stage_lock(out_dir.with_suffix(".lock"), name):
            # Another process may have finished this output while the upstream stages ran.
            meanwhile = None if force or seen_manifest else self.result(name)
            if meanwhile is not None and (st.check_done is None or
                                          st.check_done(self._context(name, {}), True) is None):
                self.log(f"[{name}] cache hit {key[:12]}: finished by another process meanwhile")
                return meanwhile
            if force and out_dir.exists():
                self.log(f"[{name}] FORCE: removing {out_dir}")
                shutil.rmtree(out_dir)
            elif out_dir.exists() and not (out_dir / MANIFEST).exists():
                self.log(f"[{name}] resuming unfinished output in {out_dir}")
            out_dir.mkdir(parents=True, exist_ok=True)
            self.log(f"[{name}] running {key[:12]} -> {out_dir}")
            started = time.perf_counter()
            summary = st.run(self._context(name, upstream, force))
            upstream_keys = {up: res.key for up, res in upstream.items()}
            manifest = self._manifest(name, upstream_keys, summary, time.perf_counter() - started)
            write_json_atomic(out_dir / MANIFEST, manifest)
        return StageResult(name, key, out_dir, manifest)

    def status(self) -> list[StageStatus]:
        return [self.stage_status(name) for name in self.stages]

    def progress(self, name: str) -> Progress:
        """What the stage's progress hook says of this config's output (nothing without a hook)."""
        hook = self.stage(name).progress
        if hook is None:
            return Progress()
        ctx = dataclasses.replace(self._context(name, {}), log=lambda msg: None)
        return hook(ctx, self.upstream_keys(name))

    def stage_status(self, name: str, previous: dict[str, Any] | str | None = "latest") -> StageStatus:
        """up to date / running / stale (why) / missing (how far it got) / n/a, for one stage.

        ``previous``: the manifest a missing output is compared with to say why it is stale;
        "latest" (the default) takes the newest output of the stage in the data folder, None
        compares with nothing (the study layer passes each cell's own previous output).
        """
        try:
            key = self.key(name)
        except UnknownNameError:
            raise  # a misspelt name is an error of the config, not of one stage (exit 2)
        except ConfigError as exc:  # e.g. the probe's targets exist for Adroit tasks only
            return StageStatus(name, "-" * 12, "n/a", str(exc).splitlines()[0])
        except WeightsError as exc:  # pretrained weights are keyed by their file's sha256
            why = str(exc).split(" Fix:")[0]
            return StageStatus(name, "?" * 12, "blocked", f"{why} (`rrl run {name}` gives the fix)")
        why_not = self.stage(name).not_applicable
        reason = why_not(self.config) if why_not is not None else None
        if reason:
            return StageStatus(name, key, "n/a", reason)
        quiet = dataclasses.replace(self._context(name, {}), log=lambda msg: None)
        if self.result(name) is not None:
            check = self.stage(name).check_done
            problem = check(quiet, False) if check is not None else None
            if problem is not None:
                return StageStatus(name, key, "stale", problem)
            return StageStatus(name, key, "up to date")
        progress = self.progress(name)
        started = self.out_dir(name).exists()
        holder = lock_holder(self.out_dir(name).with_suffix(".lock"))
        if holder:
            return StageStatus(name, key, "running",
                               holder + (f" ({progress.done})" if progress.done else ""), True)
        if previous == "latest":
            previous = latest_manifest(self.data_dir / name)
        then = f"; {progress.continues}" if progress.continues else ""
        # An output of this very key that was started says more than an older finished one.
        if not started and isinstance(previous, dict) and previous.get("key") != key:
            return StageStatus(name, key, "stale", self.stale_reason(name, previous) + then, started)
        done = f" ({progress.done})" if progress.done else ""
        if progress.continues:
            return StageStatus(name, key, "missing",
                               f"{'interrupted' + done if started else 'not run'}{then}", started)
        if started:
            return StageStatus(name, key, "missing", f"interrupted{done}; resumes", True)
        return StageStatus(name, key, "missing", "never run")

    def stale_reason(self, name: str, previous: dict[str, Any]) -> str:
        """Why an output made with ``previous`` (a manifest) is not this config's: version, config, upstream."""
        st = self.stage(name)
        reasons = []
        if previous.get("version") != st.version:
            reasons.append(f"code version changed ({previous.get('version')} -> {st.version})")
        changes = diff_flat(previous.get("inputs", {}), self.inputs(name))
        if changes:
            reasons.append("config changed: " + ", ".join(changes))
        old_up = previous.get("upstream", {})
        for up, up_key in self.upstream_keys(name).items():
            if old_up.get(up) != up_key:
                reasons.append(f"upstream {up} changed")
        return "; ".join(reasons) or "inputs changed"
