"""The user-level cache folder (downloads, remembered file hashes), outside any workspace.

``RRL_CACHE`` moves it (tests point it at a temporary folder); the default follows XDG's
``~/.cache``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$RRL_CACHE/<parts>``, by default ``~/.cache/rrl/<parts>`` (not created here)."""
    root = os.environ.get("RRL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "rrl").joinpath(*parts)
