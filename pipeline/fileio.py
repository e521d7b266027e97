"""Durable file writes and file hashes: the one place the pipeline replaces or hashes a file.

A "done" marker (manifest, checkpoint, weights file, log) must never be seen half-written, and must
still be there after a power cut once the stage has said it is done. So every write goes to a
temporary file in the same folder (os.replace is atomic only within one file system), the data is
fsynced, the file renamed over its target, and then the folder is fsynced so that the rename
itself is on disk.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's bytes to disk: a writer that only flushed to the OS (h5py, zarr) may
    otherwise lose them on a power cut after the manifest that vouches for them is on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename, a new file) to disk; a no-op where folders can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes a file only its owner can read (0600), and os.replace keeps that mode: a manifest
# or a weights file in a shared folder would be unreadable to teammates. Files get the mode a
# plain open() would give them.
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; once the block ends, it is fsynced and replaces `path`.

    For writers that want a file name (torch.save, safetensors, h5py). On an exception the
    temporary file is removed and `path` keeps its previous content.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write(path: str | Path, write: Callable[[IO[Any]], object], binary: bool = False) -> None:
    """Write `path` atomically and durably: `write(handle)` fills a temporary file first."""
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w", newline="" if not binary else None) as handle:
        write(handle)


def write_text_atomic(path: str | Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data), binary=True)


def write_csv_atomic(path: str | Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """A CSV of ``rows`` under ``columns`` (a row's other keys are left out), written atomically."""
    def write(handle: IO[str]) -> None:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if the file is missing, unreadable or holds anything
    else. For files written atomically by this project, where damage means "not written"."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


_HASHED: dict[tuple[str, int, int, int, int], str] = {}


def cached_file_sha256(path: str | Path) -> str:
    """``file_sha256``, remembered in this process while the file's stat is unchanged.

    For a file hashed whenever a key is computed (a policy checkpoint given by path). The stat
    includes ctime and inode, so a rewrite that puts back size and mtime is still seen.
    """
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _HASHED:
        _HASHED[key] = file_sha256(path)
    return _HASHED[key]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (never the whole file in memory)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
