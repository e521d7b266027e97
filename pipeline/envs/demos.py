"""hand_dapg demonstrations: locate (local file or pinned download), checksum, parse, validate.

The format is a pickle list of dicts with ``observations`` (T, obs_dim), ``actions``
(T, act_dim), ``rewards`` (T,) and ``init_state_dict``. Unpickling is restricted to numpy's array
classes, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.cache import cache_dir
from pipeline.envs.tasks import task_spec
from pipeline.errors import DemoUnavailableError, bad_demo
from pipeline.fileio import fsync_dir

UPSTREAM_COMMIT = "9a1de23df6574e1b94e1da742e3326eb1f61c013"  # aravindr93/hand_dapg master
UPSTREAM_URL = (
    "https://raw.githubusercontent.com/aravindr93/hand_dapg/{commit}/dapg/demonstrations/{file}"
)


@dataclass(frozen=True)
class Pin:
    """What we know of the upstream file: its git blob id always, its sha256 where verified."""

    git_blob: str
    sha256: str | None


PINS: dict[str, Pin] = {
    "door": Pin("ae07c9e8a3eba2afa0852dcaf1e889a2ef03d380",
                "d6ec9a090261f901e5c9bf10082799e30c8d34c3f28aef4026e492a1aefc96c3"),
    "hammer": Pin("c7d19716650dc97beb3c5e88b9c3c62990088bd0", None),
    "pen": Pin("6322e0f54a39ce40c0e62220e975154655007680", None),
    "relocate": Pin("c388dd632ca3bcfdb36ef591294d80817e9a4511", None),
}
STATE_KEYS = {
    "door": ("qpos", "qvel", "door_body_pos"),
    "hammer": ("qpos", "qvel", "board_pos"),
    "pen": ("qpos", "qvel", "desired_orien"),
    "relocate": ("qpos", "qvel", "hand_qpos", "obj_pos", "target_pos", "palm_pos"),
}

# Sizes checked against the demos at hand (door); the other tasks' files are not available here,
# so only their keys, finiteness and shape class are checked.
STATE_SIZES: dict[str, dict[str, int]] = {"door": {"qpos": 30, "qvel": 30, "door_body_pos": 3}}


@dataclass(frozen=True)
class Demo:
    observations: np.ndarray  # (T, obs_dim) float64
    actions: np.ndarray  # (T, act_dim) float64
    rewards: np.ndarray  # (T,) float64
    init_state: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.actions)


def demo_filename(task: str) -> str:
    return f"{task}-v0_demos.pickle"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def expected_sha256(task: str, override: str | None) -> str | None:
    return override or PINS[task].sha256


def verify_checksum(path: Path, data: bytes, task: str, override: str | None) -> str:
    """Return the file's sha256 after checking it against the override, the pin, or the git blob."""
    actual = hashlib.sha256(data).hexdigest()
    expected = expected_sha256(task, override)
    if expected is not None and actual != expected:
        raise bad_demo(
            path, "sha256", f"checksum is {actual}, expected {expected} (the upstream {task} demos)",
            "supply the unmodified upstream file, or pass DEMOS_SHA256=<sha256> (--set "
            "demos.sha256=...) to use a different file deliberately",
        )
    if expected is None and git_blob_id(data) != PINS[task].git_blob:
        raise bad_demo(
            path, "sha256", f"git blob id is {git_blob_id(data)}, expected {PINS[task].git_blob}",
            "supply the upstream file, or pass DEMOS_SHA256=<sha256> to use this file deliberately",
        )
    return actual


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol-2 pickles store bytes through it
        ("__builtin__", "bytes"), ("builtins", "bytes"),  # ... and empty bytes through this
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def parse_demos(path: Path, data: bytes, task: str) -> list[Demo]:
    """Unpickle and validate every field; errors name the file, the field and the fix."""
    try:
        raw = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, IndexError) as exc:
        raise bad_demo(path, "<file>", f"cannot be unpickled ({exc}); the file is truncated or "
                       "not a hand_dapg demo pickle", "download it again or check the path") from None
    if not isinstance(raw, list) or not raw:
        raise bad_demo(path, "<file>", f"expected a non-empty list of demos, got {type(raw).__name__}",
                       "use a hand_dapg *_demos.pickle file")
    spec = task_spec(task)
    return [_parse_one(path, i, d, spec.obs_dim, spec.act_dim, STATE_KEYS[task],
                       STATE_SIZES.get(task, {})) for i, d in enumerate(raw)]


def _parse_one(path: Path, i: int, d: Any, obs_dim: int, act_dim: int,
               state_keys: tuple[str, ...], task_sizes: dict[str, int]) -> Demo:
    where = f"demo[{i}]"
    if not isinstance(d, dict):
        raise bad_demo(path, where, f"expected a dict, got {type(d).__name__}", "use a hand_dapg demo file")
    fix = "re-export the demonstrations, or drop this demo from the list"
    arrays = {}
    for name, width in (("observations", obs_dim), ("actions", act_dim), ("rewards", None)):
        if name not in d:
            raise bad_demo(path, f"{where}.{name}", "is missing", fix)
        arr = np.asarray(d[name])
        if not np.issubdtype(arr.dtype, np.floating):
            raise bad_demo(path, f"{where}.{name}", f"has dtype {arr.dtype}, expected float", fix)
        want_ndim = 1 if width is None else 2
        if arr.ndim != want_ndim or (width is not None and arr.shape[1] != width):
            expected = "(T,)" if width is None else f"(T, {width})"
            raise bad_demo(path, f"{where}.{name}", f"has shape {arr.shape}, expected {expected} for "
                           "this task", "check that the file belongs to the task (TASK=...)")
        bad = ~np.isfinite(arr)
        if bad.any():
            step = int(np.argwhere(bad)[0][0])
            raise bad_demo(path, f"{where}.{name}", f"contains NaN or inf (first at step {step})", fix)
        arrays[name] = arr.astype(np.float64)
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or lengths["actions"] == 0:
        raise bad_demo(path, where, f"lengths differ or are zero: {lengths}", fix)
    init = d.get("init_state_dict")
    if not isinstance(init, dict) or any(k not in init for k in state_keys):
        raise bad_demo(path, f"{where}.init_state_dict", f"must be a dict with keys {list(state_keys)}", fix)
    state = {k: _state_entry(path, f"{where}.init_state_dict.{k}", v, task_sizes.get(k), fix)
             for k, v in init.items()}
    return Demo(arrays["observations"], arrays["actions"], arrays["rewards"], state)


def _state_entry(path: Path, field: str, value: Any, size: int | None, fix: str) -> np.ndarray:
    """A simulator-state entry: a finite 1-D float vector (of the known size, where known)."""
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise bad_demo(path, field, f"has dtype {arr.dtype}, expected numbers", fix)
    if arr.ndim != 1 or not len(arr) or (size is not None and len(arr) != size):
        expected = f"({size},)" if size is not None else "a non-empty vector"
        raise bad_demo(path, field, f"has shape {arr.shape}, expected {expected}",
                       "check that the file belongs to the task (TASK=...)")
    if not np.isfinite(arr).all():
        raise bad_demo(path, field, "contains NaN or inf", fix)
    return arr.astype(np.float64)


def load_demos(path: str | Path, task: str, sha256: str | None = None) -> tuple[list[Demo], str]:
    """Read, checksum and validate a local demo file; returns the demos and the file's sha256."""
    path = Path(path)
    if not path.is_file():
        raise bad_demo(path, "<file>", "does not exist", "check DEMOS=... points at the pickle file")
    data = path.read_bytes()
    demos = parse_demos(path, data, task)
    return demos, verify_checksum(path, data, task, sha256)


def fetch_demos(task: str, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download the upstream demos for ``task`` (once, into the cache) and return the local path."""
    target = cache_dir("demos") / demo_filename(task)
    if target.is_file():
        return target
    url = UPSTREAM_URL.format(commit=UPSTREAM_COMMIT, file=demo_filename(task))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(partial, "wb") as fh:
            shutil.copyfileobj(resp, fh)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        raise DemoUnavailableError(
            f"no demonstrations for {task}: no local file was given and downloading {url} failed "
            f"({exc}). Fix: either pass a local copy with DEMOS=/path/to/{demo_filename(task)} "
            f"(CLI: --demos), or run where {url.split('/')[2]} is reachable so it can be downloaded "
            "and checksum-verified"
        ) from None
    try:
        verify_checksum(Path(url), partial.read_bytes(), task, sha256)
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    fsync_dir(target.parent)
    return target


def resolve_demo_file(task: str, path: str | None, sha256: str | None) -> Path:
    return Path(path) if path else fetch_demos(task, sha256)
