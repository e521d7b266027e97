"""Operating-system and network failures told as "what, where, fix", like the pipeline's own errors.

Stages resume from what they finished, so every fix ends in "run the same command again".
"""

from __future__ import annotations

import errno

_RESUME = "the finished part is kept: run the same command again to resume"

_FIXES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", f"free some space (or set DATA= to a larger disk); {_RESUME}"),
    errno.EDQUOT: ("the disk quota is exhausted", f"free some space; {_RESUME}"),
    errno.EROFS: ("the file system is read-only",
                  "choose a writable folder with DATA= (workspace) or STORE= (feature store)"),
    errno.EACCES: ("permission denied",
                   "make the folder writable, or choose another with DATA= or STORE="),
    errno.EPERM: ("operation not permitted",
                  "make the folder writable, or choose another with DATA= or STORE="),
    errno.ENOTDIR: ("a path that must be a folder is a file",
                    "point DATA= or STORE= at a folder, or move that file away"),
    errno.EEXIST: ("a file is in the way", "move that file away, or choose another DATA= or STORE="),
    errno.EISDIR: ("a path that must be a file is a folder", "check the paths given (DEMOS=, WEIGHTS=)"),
    errno.ENOENT: ("no such file or folder", "check the paths given (DATA=, DEMOS=, WEIGHTS=, STORE=)"),
}


def is_remote_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from talking to an object store (S3, GCS) over the network."""
    module = type(exc).__module__.split(".")[0]
    return module in ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google")


def explain_os_error(exc: BaseException) -> str:
    """One sentence: what failed, on which path, and how to fix it."""
    where = ""
    if isinstance(exc, OSError):
        paths = [p for p in (exc.filename, exc.filename2) if p]
        where = f" ({' -> '.join(map(str, paths))})" if paths else ""
        what, fix = _FIXES.get(exc.errno or -1, ("", ""))
        if what:
            return f"{what}{where}: {exc.strerror or exc}. Fix: {fix}"
    if is_remote_error(exc) or isinstance(exc, ConnectionError | TimeoutError):
        return (f"the object store could not be reached or refused the request{where} "
                f"({type(exc).__name__}: {exc}). Fix: check the endpoint (AWS_ENDPOINT_URL) and "
                f"credentials, and that the bucket exists; {_RESUME}")
    return (f"{type(exc).__name__}: {exc}{where}. Fix: check the paths and permissions above; "
            f"{_RESUME}")
