"""Weights files kept by content: the files a feature group was encoded with, under their sha256.

    <store root>/_weights/<sha256>/<file name>     the file, byte for byte (local folder or bucket)
    $RRL_CACHE/weights/<sha256>/<file name>        a local copy of a file read from a remote store

A group's attrs name its weights by ``sha256`` and ``file`` (the name it had, for messages and for
torch.hub-style hash names), never by a path: the encode stage puts the file into its store's
``_weights`` folder before the group can be complete, ``push``/``pull`` carry it with the group,
and the learning stages rebuild the encoder from it (``fetch_weights``). So a moved data folder,
a teammate's pulled store or a shared bucket rebuilds the same encoder. Every file read from
here is hashed before it is used; a file whose bytes do not match its folder name is refused.

Pretrained and random weights are not files of the group: they need no copy (the tag, or the seed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cache import cache_dir
from pipeline.config import PipelineConfig
from pipeline.errors import WeightsError
from pipeline.fileio import atomic_path, file_sha256
from pipeline.settings import SHA256_PATTERN
from pipeline.store.remote import Options, fs_path, is_url, local_path

FOLDER = "_weights"  # in a store root; a leading underscore keeps it apart from group keys
CACHE_FOLDER = "weights"  # under $RRL_CACHE
LEFT_OUT = ".left_out.json"  # beside where a file a copy left out would be: its name and size
REFERENCE = "sha256:"  # WEIGHTS=sha256:<hex> names a file of the weights cache by its content


@dataclass(frozen=True)
class WeightsFile:
    """A weights file as a group's attrs name it."""

    sha256: str
    name: str
    size: int | None = None

    @classmethod
    def from_attrs(cls, weights: dict[str, Any]) -> WeightsFile | None:
        """The file a group's ``weights`` attrs reference; None for pretrained/random weights.

        Groups written before the cache recorded the absolute ``path``: its name still counts.
        """
        if weights.get("kind") != "file" or not weights.get("sha256"):
            return None
        sha256 = str(weights["sha256"])
        name = str(weights.get("file") or Path(str(weights.get("path") or "weights")).name)
        # Both become path components (the store's and the cache's weights folders), and attrs
        # come from whoever made the group: "../.." must never reach a path.
        if not re.fullmatch(SHA256_PATTERN, sha256) or name in ("", ".", "..") or \
                Path(name).name != name or "\\" in name:
            raise WeightsError(f"the group's weights attrs name sha256 {sha256!r}, file {name!r}: "
                               "not 64 lowercase hex digits and a plain file name, so the group "
                               "is damaged or was not written by this pipeline and is not used. "
                               "Fix: encode it again (FORCE=1), or pull it again from its source")
        size = weights.get("bytes")
        return cls(sha256, name, int(size) if size is not None else None)

    def describe(self) -> str:
        size = f", {self.size / 1e6:.1f} MB" if self.size is not None else ""
        return f"{self.name!r} (sha256 {self.sha256}{size})"


def _folder(root_url: str, sha256: str, storage_options: Options) -> tuple[Any, str]:
    fs, root = fs_path(root_url, storage_options)
    return fs, f"{root}/{FOLDER}/{sha256}"


def _files_in(fs: Any, folder: str) -> list[str]:
    fs.invalidate_cache(folder)
    with contextlib.suppress(FileNotFoundError):
        return sorted(p for p in fs.ls(folder, detail=False) if not p.rsplit("/", 1)[-1].startswith("."))
    return []


def put_weights(root_url: str, path: Path, sha256: str, storage_options: Options = None) -> str:
    """Keep ``path`` (whose bytes hash to ``sha256``) in the store's weights folder; its location.

    A file already there under that sha256 is kept (its bytes are the same by construction).
    """
    fs, folder = _folder(root_url, sha256, storage_options)
    target = f"{folder}/{path.name}"
    if _files_in(fs, folder):
        return target
    if not is_url(root_url):
        Path(folder).mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
            _require_sha(tmp, sha256, path.name, f"the copy of {path} in {folder}")
    else:
        _require_sha(path, sha256, path.name, "the local file to upload")
        fs.put_file(str(path), target)  # one object: it appears whole or not at all
    return target


def fetch_weights(root_url: str, ref: WeightsFile, storage_options: Options = None,
                  legacy_path: str | None = None) -> Path:
    """A local file with the bytes of ``ref``: from the store's weights folder, else the local
    weights cache (a remote store's file is downloaded there first), else the absolute path an
    older group recorded. Hashed before it is returned."""
    fs, folder = _folder(root_url, ref.sha256, storage_options)
    found = _files_in(fs, folder)
    if found and not is_url(root_url):
        _require_sha(Path(found[0]), ref.sha256, ref.name, "the file in the store")
        return Path(found[0])
    cached = local_cache(ref)
    if cached is not None:
        return cached
    if found:  # a remote store: one download into the local cache
        target = cache_dir(CACHE_FOLDER, ref.sha256, Path(found[0]).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            fs.get_file(found[0], str(tmp))
            _require_sha(tmp, ref.sha256, ref.name, f"the download of {found[0]}")
        return target
    if legacy_path and Path(legacy_path).is_file() and file_sha256(legacy_path) == ref.sha256:
        return Path(legacy_path)
    raise missing_weights(root_url, ref)


def local_cache(ref: WeightsFile) -> Path | None:
    """The copy in ``$RRL_CACHE/weights/<sha256>/``, if there and intact."""
    folder = cache_dir(CACHE_FOLDER, ref.sha256)
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.is_file() and not path.name.startswith("."):
            _require_sha(path, ref.sha256, ref.name, "the file in the local weights cache")
            return path
    return None


def missing_weights(root_url: str, ref: WeightsFile) -> WeightsError:
    return WeightsError(
        f"the weights file {ref.describe()} is neither in {root_url}/{FOLDER}/{ref.sha256}/ nor "
        f"in the local weights cache {cache_dir(CACHE_FOLDER, ref.sha256)}: it was left out "
        f"when the feature group was copied (push/pull --max-weights-mb), or was removed. Fix: "
        f"pull the group again with its weights (`rrl pull KEY URL`), or copy the file "
        f"{ref.name} into {root_url}/{FOLDER}/{ref.sha256}/ (its sha256 is checked on use)")


def _require_sha(path: str | Path, sha256: str, name: str, what: str) -> None:
    found = file_sha256(path)
    if found != sha256:
        with contextlib.suppress(OSError):
            if str(path).endswith(".tmp"):
                os.unlink(path)
        raise WeightsError(
            f"{what} ({path}) should hold the weights file {name!r} with sha256 {sha256}, but its "
            f"bytes hash to {found}: it is damaged and is not used. Fix: delete it and copy the "
            f"file again (push/pull the group again, or run encode with WEIGHTS= the good file)")


def resolve_reference(weights: str, root_url: str, storage_options: Options = None) -> str:
    """``WEIGHTS=sha256:<hex>`` -> the local path of that file (store or cache); else as given."""
    if not weights.startswith(REFERENCE):
        return weights
    sha = weights.removeprefix(REFERENCE).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise WeightsError(f"WEIGHTS={weights}: expected sha256: and 64 hex digits. Fix: copy "
                           "the sha256 from `rrl inspect` (weights) of the group")
    fs, folder = _folder(root_url, sha, storage_options)
    found = _files_in(fs, folder)
    ref = WeightsFile(sha, found[0].rsplit("/", 1)[-1]) if found else _left_out(fs, folder, sha)
    return str(fetch_weights(root_url, ref, storage_options))


def _left_out(fs: Any, folder: str, sha256: str) -> WeightsFile:
    """What a copy recorded about a file it left out (so an error can name it), else a stub."""
    try:
        record = json.loads(fs.cat_file(f"{folder}/{LEFT_OUT}"))
        return WeightsFile(sha256, str(record["name"]), int(record["bytes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return WeightsFile(sha256, "(name unknown)")


def resolve_config_reference(cfg: PipelineConfig, root_url: str) -> PipelineConfig:
    """The config with ``encode.weights=sha256:<hex>`` replaced by that file's local path."""
    e = cfg.encode
    found = resolve_reference(e.weights, root_url)
    return cfg if found == e.weights else dataclasses.replace(
        cfg, encode=dataclasses.replace(e, weights=found))


@dataclass
class CarriedWeights:
    """What a copy did with the weights files its group references."""

    copied: list[str]
    left_out: list[str]  # larger than the size limit: the group needs them to rebuild its encoder
    unavailable: list[str]  # not at the source either

    def lines(self) -> list[str]:
        return ([f"left out weights file {w} (over the size limit): stages that rebuild the "
                 "encoder (dapg, evaluate, rollouts) will ask for it" for w in self.left_out]
                + [f"weights file {w} is not in the source store, so it was not copied"
                   for w in self.unavailable])


def carry_weights(src_url: str, dst_url: str, refs: list[WeightsFile], src_options: Options = None,
                  dst_options: Options = None, max_bytes: int | None = None) -> CarriedWeights:
    """Copy the weights files of a group between stores (files over ``max_bytes`` stay behind)."""
    out = CarriedWeights([], [], [])
    for ref in refs:
        src_fs, src_folder = _folder(src_url, ref.sha256, src_options)
        found = _files_in(src_fs, src_folder)
        dst_fs, dst_folder = _folder(dst_url, ref.sha256, dst_options)
        if _files_in(dst_fs, dst_folder):
            out.copied.append(ref.describe())
            continue
        if not found:
            cached = local_cache(ref)
            if cached is None:
                out.unavailable.append(ref.describe())
                continue
            source: tuple[Any, str] = (None, str(cached))
            size = cached.stat().st_size
        else:
            source = (src_fs, found[0])
            size = int(src_fs.size(found[0]))
        described = WeightsFile(ref.sha256, ref.name, size).describe()
        if max_bytes is not None and size > max_bytes:
            out.left_out.append(described)
            if not is_url(dst_url):
                Path(dst_folder).mkdir(parents=True, exist_ok=True)
            dst_fs.pipe_file(f"{dst_folder}/{LEFT_OUT}",
                             json.dumps({"name": ref.name, "bytes": size}).encode())
            continue
        if source[0] is None or not is_url(src_url):
            put_weights(dst_url, Path(local_path(source[1])), ref.sha256, dst_options)
        else:  # from a bucket: through the local cache, which hashes it on the way
            local = fetch_weights(src_url, ref, src_options)
            put_weights(dst_url, local, ref.sha256, dst_options)
        out.copied.append(described)
    return out
