"""The layout of an episode file, checked when it is opened for reading.

An episode file comes from our own render or rollouts stage, but it may be damaged, hand-edited
or written by another tool: every field the readers rely on is checked up front (shapes, dtypes,
lengths, finite numbers), and a problem names the file, the field and the fix, before any
feature is computed from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import StoreError, bad_store
from pipeline.store.frames import missing_filters

_FIX = ("the file is damaged or was not written by this pipeline's render/rollouts stage: "
        "re-run that stage with FORCE=1")
# name -> (number of dimensions, dtype kind: f float, b bool, u unsigned); checked per episode.
_ARRAYS: dict[str, tuple[int, str]] = {
    "actions": (2, "f"), "rewards": (1, "f"), "dones": (1, "b"), "states": (2, "f"),
    "obs/proprio": (2, "f"), "obs/state": (2, "f"),
}
_FINITE = ("actions", "rewards", "states", "obs/proprio", "obs/state")


def _bad(path: Path, field: str, problem: str) -> StoreError:
    return bad_store(str(path), f"field {field!r} {problem}", _FIX)


def unreadable(path: Path, field: str, exc: OSError) -> StoreError:
    """A read HDF5 refused: in a file written with checksums (fletcher32), a changed byte."""
    return _bad(path, field, f"cannot be read back ({exc}): a chunk of it is damaged (every "
                "chunk written since episode files carry fletcher32 checksums is checked)")


def _json_attr(path: Path, attrs: Any, name: str, kind: type) -> Any:
    if name not in attrs:
        raise _bad(path, f"data.attrs[{name}]", "is missing")
    try:
        value = json.loads(attrs[name])
    except (TypeError, ValueError):
        raise _bad(path, f"data.attrs[{name}]", "is not valid JSON") from None
    if not isinstance(value, kind):
        raise _bad(path, f"data.attrs[{name}]", f"is a {type(value).__name__}, expected a "
                   f"{kind.__name__}")
    return value


def check_episode_file(path: Path, file: h5py.File, complete: list[str]) -> list[str]:
    """Check the file-level attrs and every complete episode; returns the camera names."""
    root = file.get("data")
    if not isinstance(root, h5py.Group):
        raise _bad(path, "data", "is missing (not an episode file)")
    _json_attr(path, root.attrs, "env_args", dict)
    cameras = _json_attr(path, root.attrs, "cameras", list)
    if not cameras or not all(isinstance(c, str) and c for c in cameras):
        raise _bad(path, "data.attrs[cameras]", f"is {cameras!r}, expected camera names")
    if "source_sha256" not in root.attrs:
        raise _bad(path, "data.attrs[source_sha256]", "is missing")
    widths: dict[str, tuple[int, ...]] = {}
    for name in complete:
        _check_episode(path, root[name], f"data/{name}", cameras, widths)
    return [str(c) for c in cameras]


def _check_episode(path: Path, group: h5py.Group, where: str, cameras: list[str],
                   widths: dict[str, tuple[int, ...]]) -> None:
    steps = group.attrs.get("num_samples")
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise _bad(path, f"{where}.attrs[num_samples]", f"is {steps!r}, expected a positive count")
    arrays = {**_ARRAYS, **{f"obs/{c}_image": (4, "u") for c in cameras}}
    for name, (ndim, kind) in arrays.items():
        field = f"{where}/{name}"
        data = group.get(name)
        if not isinstance(data, h5py.Dataset):
            raise _bad(path, field, "is missing")
        if data.ndim != ndim or data.shape[0] != steps or data.dtype.kind != kind:
            raise _bad(path, field, f"has shape {data.shape} and dtype {data.dtype}, expected "
                       f"{ndim} dimensions, {steps} rows (num_samples) and dtype kind {kind!r}")
        if name.endswith("_image") and (data.shape[-1] != 3 or data.dtype != np.uint8):
            raise _bad(path, field, f"has shape {data.shape} and dtype {data.dtype}, expected "
                       "(T, H, W, 3) uint8 frames")
        if name.endswith("_image") and (missing := missing_filters(data)):
            raise bad_store(str(path), f"field {field!r} is compressed with {', '.join(missing)}, "
                            "which this HDF5 library cannot decode",
                            "install the filters (`pip install hdf5plugin`; the pipeline's own "
                            "readers import it) or re-render the file with render.codec=lzf")
        # Every episode of a file must agree on widths: rows are concatenated across episodes.
        if widths.setdefault(name, data.shape[1:]) != data.shape[1:]:
            raise _bad(path, field, f"has width {data.shape[1:]}, but earlier episodes have "
                       f"{widths[name]}")
        if name in _FINITE:
            try:
                values = data[()]
            except OSError as exc:
                raise unreadable(path, field, exc) from None
            if not np.isfinite(values).all():
                raise _bad(path, field, "contains NaN or inf")
