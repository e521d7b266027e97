"""Released results: the few files a headline run made, committed under ``results/<name>/``, and
one command that re-evaluates them on a fresh clone with no data folder.

    results/<name>/
      release.json          what the run was (task, observation, frames, encoder, horizon), each
                            file's sha256, the keys that made it, and the evaluation it reported
      encoder.safetensors   the frozen encoder (a project-trained one: VAE or RAD, architecture
                            in its metadata)
      policy.pt             the trained policy: tensors and plain values only
      log.csv, eval.csv     the training log, RRL's columns

``evaluate_release`` checks every file against its sha256 first (a damaged or swapped file is
refused), loads the policy with ``torch.load(weights_only=True)``, renders its own frames in the
simulator, encodes them with the released encoder and scores seeded episodes: the same episodes,
seeds and code path as the evaluate stage, so a fresh clone reproduces the release's number.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import StoreError, bad_store
from pipeline.fileio import file_sha256, read_json_object, write_json_atomic
from pipeline.rl.distracted import env_factory
from pipeline.rl.env_backends import task_env
from pipeline.rl.rollouts import summarize
from pipeline.rl.vision import ObsSpec, VisionSampler, vision_layout

if TYPE_CHECKING:
    from pipeline.encoders.frozen import FrozenEncoder
    from pipeline.rl.policy import GaussianMLPPolicy

RELEASE = "release.json"
FILES = ("encoder", "policy", "log", "eval")


def write_release(folder: Path, files: dict[str, Path], about: dict[str, Any]) -> dict[str, Any]:
    """Copy ``files`` (role -> path; roles from FILES) into ``folder`` and describe them."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for role, src in files.items():
        if role not in FILES:
            raise ValueError(f"unknown release file role {role!r}")
        dst = folder / ("encoder.safetensors" if role == "encoder" else src.name)
        shutil.copyfile(src, dst)
        entries[role] = {"file": dst.name, "sha256": file_sha256(dst), "bytes": dst.stat().st_size}
    release = {**about, "files": entries}
    write_json_atomic(folder / RELEASE, release)
    return release


def read_release(folder: Path) -> dict[str, Any]:
    """The release's description, after checking every file it names against its sha256."""
    path = folder / RELEASE
    if not path.is_file():
        raise bad_store(str(folder), f"no {RELEASE} here: not a released result",
                        "pass a folder under results/ (e.g. results/door_vae)")
    release = read_json_object(path)
    if release is None:
        raise bad_store(str(path), "cannot be read as a JSON object",
                        "restore it from git (git checkout -- results/)")
    for role in ("encoder", "policy"):
        if role not in release.get("files", {}):
            raise bad_store(str(path), f"field 'files.{role}' is missing", "re-create the release")
    for role, entry in release["files"].items():
        file = folder / entry["file"]
        if not file.is_file():
            raise bad_store(str(file), f"the release's {role} file is missing",
                            "restore it from git (git checkout -- results/)")
        found = file_sha256(file)
        if found != entry["sha256"]:
            raise bad_store(str(file), f"sha256 is {found}, the release says {entry['sha256']}: "
                            "the file is damaged or was replaced, and is not used",
                            "restore it from git (git checkout -- results/)")
    return release


def load_release(folder: Path, device: str = "auto",
                 ) -> tuple[dict[str, Any], GaussianMLPPolicy, FrozenEncoder]:
    """The release's description (files checked), its policy and its encoder rebuilt exactly as it
    encoded, after checking that the policy takes what the encoder and proprioception give."""
    from pipeline.encoders import create_encoder
    from pipeline.rl.checkpoints import load_policy

    release = read_release(folder)
    run, files = release["run"], release["files"]
    policy = load_policy(folder / files["policy"]["file"])
    enc = release["encoder"]
    pre = enc.get("preprocessing") or {}
    encoder = create_encoder(enc["name"], str(folder / files["encoder"]["file"]),
                             enc.get("precision", "fp32"), pre.get("resize"), pre.get("crop"),
                             device=device, interpolation=pre.get("interpolation"),
                             layers=tuple(enc.get("layers", ())), pool=enc.get("pool", "auto"))
    if policy.obs_dim != encoder.feature_dim * len(run["cameras"]) + run["proprio_dim"]:
        raise StoreError(f"{folder}: the policy takes {policy.obs_dim}-d inputs, the encoder and "
                         "proprioception give another width. Fix: re-create the release")
    return release, policy, encoder


def evaluate_release(folder: Path, episodes: int, levels: Sequence[int] = (0,),
                     seed: int | None = None, envs: int = 8, device: str = "auto",
                     log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Success and mean return of the released policy over ``episodes`` seeded episodes per
    distractor level (episode i in the scene DistractorSpec(level, seed + i))."""
    release, policy, encoder = load_release(folder, device)
    run = release["run"]
    seed = run["evaluate_seed"] if seed is None else seed
    layout = vision_layout(len(os.sched_getaffinity(0)), encoder.device.type == "cuda")
    out: dict[str, dict[str, Any]] = {}
    for level in levels:
        factory = env_factory(level) if level else task_env
        sampler = VisionSampler(run["task"], encoder, ObsSpec(run["obs_mode"], tuple(run["cameras"]), 0.0),
                                n_envs=envs, reward=run["reward"], width=run["width"],
                                height=run["height"], shadows=run["shadows"],
                                env_factory=factory, **layout.kwargs())
        with contextlib.closing(sampler):
            rollouts = sampler.sample(policy, episodes, run["horizon"], seed, deterministic=True)
        result = summarize(rollouts, run["task"])
        out[str(level)] = {k: result[k] for k in ("success_rate", "mean_return", "episodes")}
        line = (f"level {level}: success {result['success_rate']:.1f}% over {episodes} episodes, "
                f"mean return {result['mean_return']:.1f}")
        ref = (release.get("evaluation") or {}).get("per_level", {}).get(str(level))
        if ref:  # what the run's own evaluate stage measured, to compare at a glance
            line += (f" (released: {ref['success_rate']:.1f}% over {ref['episodes']}, mean return "
                     f"{ref['mean_return']:.1f}{'' if seed == run['evaluate_seed'] else ', other seeds'})")
        log(line)
    return out
