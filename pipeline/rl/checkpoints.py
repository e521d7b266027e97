"""Policy checkpoints: atomic saves, and loads that run no code and refuse non-finite numbers.

Checkpoints are what teammates share, so they hold only tensors, numbers, strings, lists and dicts
(the policy's config as plain values, numpy's RNG state as a tensor) and are read with
``torch.load(weights_only=True)``: a file whose pickle names any other object (a payload calling
``os.system``, say) is refused before anything in it runs.

A checkpoint also carries ``content_sha256``, a checksum of everything else in it, checked on
load: torch's zip format checks nothing, so a flipped byte in a tensor loads as other weights
without complaint (40 of 40 tried) and would be evaluated or trained on. Files saved before the
checksum load as before, unchecked.

Imports torch but not MuJoCo, so evaluating or continuing from a checkpoint needs no simulator
until a sampler is made.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import NonFiniteError, StoreError, bad_store
from pipeline.fileio import atomic_path
from pipeline.rl.policy import GaussianMLPPolicy


def non_finite_tensors(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [name for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all())]


def require_finite_policy(policy: GaussianMLPPolicy, where: str, fix: str) -> None:
    """Raise NonFiniteError naming the parameters of `policy` that are NaN or infinite."""
    bad = non_finite_tensors(policy.state_dict())
    if bad:
        raise NonFiniteError(f"{where}: policy parameters {', '.join(bad)} are NaN or infinite. "
                             f"Fix: {fix}")


CONTENT_SHA256 = "content_sha256"


def content_sha256(state: Mapping[str, Any]) -> str:
    """sha256 of a checkpoint's contents (all but this checksum): tensors by dtype, shape and
    bytes, plain values by type and repr, dicts in sorted key order."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CONTENT_SHA256})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"S{type(value).__name__}:{value!r}".encode())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` with its ``content_sha256``; a crash leaves the previous checkpoint whole."""
    with atomic_path(path) as tmp:
        torch.save({**state, CONTENT_SHA256: content_sha256(state)}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read without running code (``weights_only=True``).

    Raises StoreError naming the file when it is missing, unreadable, damaged (its contents do
    not match their ``content_sha256``) or asks the unpickler for anything but plain data:
    nothing in such a file has run when the error is raised.
    """
    if not Path(path).is_file():
        raise bad_store(str(path), "policy checkpoint does not exist",
                        "re-run the stage that writes it (FORCE=1)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise bad_store(str(path), "refused to load this checkpoint: it holds Python objects other "
                        f"than tensors and plain values ({first}), and unpickling them could run "
                        "code", "use a checkpoint written by this pipeline (bc, dapg); if you wrote "
                        "this file yourself and trust it, re-save it with tensors, numbers, strings, "
                        "lists and dicts only") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise bad_store(str(path), f"the checkpoint cannot be read ({type(exc).__name__}: {exc})",
                        "re-run the stage that wrote it with FORCE=1") from None
    if not isinstance(state, dict):
        raise bad_store(str(path), f"a checkpoint holds a dict, this file holds a {type(state).__name__}",
                        "pass a policy checkpoint written by bc or dapg")
    recorded = state.pop(CONTENT_SHA256, None)
    if recorded is not None and recorded != content_sha256(state):
        raise bad_store(str(path), "its contents no longer match the content_sha256 saved with "
                        "them: the file is damaged", "re-run the stage that wrote it with "
                        "FORCE=1 (a copied file: copy it again)")
    return state


def load_policy(path: str | Path) -> GaussianMLPPolicy:
    """The policy of a trainer checkpoint (or of a file saved the same way)."""
    state = load_checkpoint(path)
    for field in ("policy", "policy_config"):
        if field not in state:
            raise bad_store(str(path), f"field {field!r} is missing: not a policy checkpoint",
                            "pass a checkpoint written by bc or dapg (policy.pt)")
    policy = GaussianMLPPolicy(**state["policy_config"], seed=None)
    policy.load_state_dict(state["policy"])
    require_finite_policy(policy, str(path), "re-run the stage that wrote it with FORCE=1; if it "
                          "diverged, lower its step (bc.lr, dapg.step_size, dapg.lam0)")
    return policy


def numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as plain values and a tensor, so a checkpoint can hold it."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    try:
        keys = state["keys"].numpy().astype(np.uint32)
        np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"],
                             state["cached_gaussian"]))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise StoreError(f"numpy RNG state in the checkpoint is malformed ({exc}). Fix: re-run the "
                         "stage with FORCE=1") from None
