"""Cheap weights identity for cache keys and `rrl status`.

Must not import torch: it runs on every `status`. A weights file is identified by the sha256 of
its bytes, never its path (pretrained weights too: the tag and the sha256 of the cached download,
``pipeline.encoders.hub``), and the hash is remembered in a small JSON file keyed by
(absolute path, size, mtime_ns, ctime_ns, inode) so only the first call after a change reads the
file. ctime and the inode catch a rewrite whose mtime was put back (``cp -p``, ``rsync -t``, tar);
a file changed within the last ``RACY_WINDOW_NS`` is hashed but not remembered, as git does for
"racily clean" files: a same-size rewrite inside one tick of the file clock would keep all five.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

from pipeline.cache import cache_dir
from pipeline.encoders.hub import pretrained_file
from pipeline.encoders.registry import encoder_spec
from pipeline.errors import WeightsError
from pipeline.fileio import file_sha256

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
_HASH_CACHE_NAME = "weights_sha256.json"
RACY_WINDOW_NS = 2_000_000_000  # coarser than any file clock in use (FAT: 2 s)
# torch.hub's convention: ``resnet34-b627a593.pth`` names the first hex digits of the file's
# sha256. torch.hub accepts any number of digits; 8 or more keeps a user's ``ckpt-2.pth`` (or
# ``run-1.pt``) from being read as a hash prefix, and torchvision's own files use 8 to 10.
HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.")


def weights_fix(name: str) -> str:
    """The sentence telling a user how to point at weights, shared by every weights error."""
    if encoder_spec(name).pretrained_tag is None:
        return (
            f"Fix: train the {name} encoder with `make {name}` (same TASK=, SIZE=) and pass the "
            f"key or the weights file it prints: WEIGHTS=<key> or WEIGHTS=data/{name}/<key12>/"
            f"encoder.safetensors; WEIGHTS=random gives a random-init baseline, only when wanted"
        )
    return (
        f"Fix: set WEIGHTS=pretrained, WEIGHTS=random (a random-init baseline, only when wanted) "
        f"or WEIGHTS=/path/to/file.pth (or .safetensors) holding a state dict for the {name} "
        f"architecture"
    )


def weights_identity(name: str, weights: str, pin: str | None = None) -> dict[str, str]:
    """What the weights are, for the cache key: a kind plus the tag or the file's sha256.

    ``pin`` (``WEIGHTS_SHA256=``): the sha256 the weights file must have; anything else,
    random weights included, is refused.
    """
    spec = encoder_spec(name)  # unknown names fail here, before any file is read
    if weights == "random":
        check_pin(pin, None, "WEIGHTS=random")
        return {"kind": "random"}
    if weights == "pretrained":
        if spec.pretrained_tag is None:
            raise no_pretrained_weights(name)

        path = pretrained_file(spec)  # the cached download (fetched once, if missing)
        sha = weights_sha256(path)
        check_name_hash(path, sha)
        check_pin(pin, sha, f"the pretrained weights of {spec.pretrained_tag} ({path})")
        # A tag is only a name: the file's content is what the key must follow.
        return {"kind": "pretrained", "tag": spec.pretrained_tag, "sha256": sha}
    encoder_spec(name, weights)  # a file whose architecture cannot be read fails here
    path = check_weights_file(name, weights)
    sha = weights_sha256(path)
    check_name_hash(path, sha)
    check_pin(pin, sha, f"weights file {str(path)!r}")
    return {"kind": "file", "sha256": sha}


def check_name_hash(path: Path, sha256: str) -> None:
    """Refuse a file whose name carries a hash prefix (torch.hub style) its bytes do not have."""
    match = HASH_PREFIX.search(path.name)
    if match and not sha256.startswith(match.group(1)):
        raise WeightsError(
            f"weights file {str(path)!r}: its name says its sha256 starts with "
            f"{match.group(1)!r} (the torch.hub convention), but its bytes hash to {sha256}: the "
            f"file is damaged or was changed after download, and is not loaded. Fix: download "
            f"it again (or copy it again from a good copy); if the file was changed on purpose, "
            f"rename it so that its name carries no '-<hex>.' hash prefix")


def check_pin(pin: str | None, sha256: str | None, what: str) -> None:
    """Refuse weights other than the pinned ``WEIGHTS_SHA256=`` (None: nothing pinned)."""
    if pin is None or pin == sha256:
        return
    found = f"has sha256 {sha256}" if sha256 else "is not a file with a sha256"
    raise WeightsError(
        f"{what} {found}, but WEIGHTS_SHA256={pin} (encode.weights_sha256) pins the weights to "
        f"another file. Fix: point WEIGHTS= at the file with that sha256, or change or unset "
        f"WEIGHTS_SHA256 if these weights are the ones you want")


def no_pretrained_weights(name: str) -> WeightsError:
    return WeightsError(f"encoder {name!r} has no pretrained weights (none exist: this project "
                        f"trains it), so WEIGHTS=pretrained cannot be used. {weights_fix(name)}")


def check_weights_file(name: str, weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {str(path)!r} for encoder {name!r} not found "
            f"(the value is neither 'pretrained', 'random' nor an existing file). "
            f"{weights_fix(name)}"
        )
    if path.suffix.lower() not in TORCH_SUFFIXES + SAFETENSORS_SUFFIXES:
        raise WeightsError(
            f"weights file {str(path)!r}: unsupported suffix {path.suffix!r}; expected one of "
            f"{', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}. {weights_fix(name)}"
        )
    return path


def trained_weights_file(name: str, weights: str, stage: str) -> Path | None:
    """The .safetensors file of an encoder a stage of this project trains (None: random weights).

    Its architecture is in the file's metadata, so only the file the stage wrote will do."""
    if weights == "pretrained":
        raise no_pretrained_weights(name)
    if weights == "random":
        return None
    path = check_weights_file(name, weights)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise WeightsError(f"weights file {str(path)!r}: {stage.upper()} weights are the "
                           f".safetensors file the {stage} stage writes (its shape is in the "
                           f"file's metadata). {weights_fix(name)}")
    return path


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weights file (``fileio.file_sha256``), remembered across processes while the
    file's stat is unchanged: keys are computed on every `rrl status`, and files are large."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as err:
        raise WeightsError(f"weights file {str(path)!r} cannot be read: {err}") from err
    entry = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}"
    cache_file = cache_dir() / _HASH_CACHE_NAME
    known = _read_cache(cache_file)
    if entry in known:
        return known[entry]
    try:
        sha = file_sha256(path)
    except OSError as err:
        raise WeightsError(f"weights file {str(path)!r} cannot be read: {err}") from err
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < RACY_WINDOW_NS:
        return sha  # racily clean: a rewrite this instant could keep the same stat
    # One entry per path: an edited file's old hash is useless and would only grow the file.
    prefix = f"{path}|"
    known = {k: v for k, v in _read_cache(cache_file).items() if not k.startswith(prefix)}
    known[entry] = sha
    _write_cache(cache_file, known)
    return sha


def _read_cache(cache_file: Path) -> dict[str, str]:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}  # missing or corrupt: the cache only saves time, so start over
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _write_cache(cache_file: Path, known: dict[str, str]) -> None:
    # Atomic replace so concurrent workers never read half a file; a lost update only costs a
    # rehash. An unwritable cache directory is not an error for the same reason.
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".weights_sha256.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(known, handle, indent=0, sort_keys=True)
            os.replace(tmp, cache_file)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
