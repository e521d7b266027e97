"""Small pieces several test modules need: tiny stage sizes, killing a process group, replaying a
rollout's frames."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pipeline.config import PipelineConfig

# Learning and vision settings small enough for the default suite.
TINY_RL = {"dapg.iterations": "2", "dapg.trajectories": "4", "env.horizon": "20",
           "dapg.eval_episodes": "2", "dapg.envs": "4", "evaluate.episodes": "4",
           "evaluate.video_episodes": "1"}
TINY_VISION = {"env.width": "48", "env.height": "48", "render.workers": "1",
               "encode.encoder": "resnet10t", "encode.weights": "random", "encode.resize": "48",
               "encode.crop": "40", "encode.workers": "1"}


def demo_config(demos: tuple[Path, str], *presets: dict[str, str], **extra: str) -> PipelineConfig:
    """The default config on the given demos file (path, sha256), then ``presets`` (dicts of
    dotted overrides, later ones win), then ``extra`` overrides."""
    path, sha = demos
    values = {"demos.path": str(path), "demos.sha256": sha}
    for preset in presets:
        values.update(preset)
    return PipelineConfig().with_overrides({**values, **extra})


def tiny_config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    """The default config on the given demos file, at `TINY_RL` sizes, with ``extra`` overrides."""
    return demo_config(demos, TINY_RL, **extra)


def kill_group(proc: subprocess.Popen[Any], what: str) -> None:
    """kill -9 a process group and wait until none of it is left to write anything."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"{what} processes survived kill -9"
        time.sleep(0.05)


def replayed_door_frames(actions: np.ndarray, seed: int, size: int = 48) -> np.ndarray:
    """The top camera's frames of a door episode reset with ``seed`` and stepped by ``actions``
    (all but the last, whose result is never observed)."""
    from pipeline.envs.adroit import AdroitEnv

    env = AdroitEnv("door", horizon=10**9, cameras=("top",), width=size, height=size)
    env.reset(seed=seed)
    frames = [env.render("top")]
    for action in actions[:-1]:
        env.step(action)
        frames.append(env.render("top"))
    env.close()
    return np.stack(frames)


def hub_cache_entry(cache: Path, repo_id: str, filename: str, data: bytes) -> str:
    """``data`` as ``filename`` of repository ``repo_id`` in a Hugging Face hub cache, laid out as
    a cache copied from an online machine is (blob by sha256, snapshot link, main ref); its sha256."""
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "blobs" / sha).write_bytes(data)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    link = repo / "snapshots" / commit / filename
    if not link.exists():
        link.symlink_to(Path("../../blobs") / sha)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return sha


def stand_in_pretrained(cache: Path, monkeypatch: Any, names: tuple[str, ...]) -> dict[str, str]:
    """Offline caches holding a stand-in file for each encoder's pretrained weights, as a cache
    filled on an online machine would hold the real ones (Hugging Face hub layout, or torch.hub's
    checkpoint folder for a URL). Keys of pretrained configs need the file's sha256; these files
    give them on a machine without network. The bytes are not loadable weights. Returns each
    name's file sha256."""
    import hashlib

    import huggingface_hub.constants as hf

    from pipeline.encoders.hub import HF_DEFAULT_FILE, _candidates
    from pipeline.encoders.registry import encoder_spec

    hub_dir, torch_dir = cache / "hub", cache / "torch"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(hub_dir))
    monkeypatch.setenv("TORCH_HOME", str(torch_dir))
    out = {}
    for name in names:
        spec = encoder_spec(name)
        assert spec.hub is not None, f"{name} has no pretrained weights"
        data = f"stand-in weights for {spec.pretrained_tag}".encode()
        sha = hashlib.sha256(data).hexdigest()
        if spec.hub.hf_hub_id:
            hub_cache_entry(hub_dir, spec.hub.hf_hub_id,
                            _candidates(spec.hub.hf_hub_filename or HF_DEFAULT_FILE)[0], data)
        else:
            assert spec.hub.url is not None
            target = torch_dir / "hub" / "checkpoints" / Path(spec.hub.url).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        out[name] = sha
    return out


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (bench scripts are not a package), for tests of its parts."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def moto_server(bucket: str = "rrl-test") -> Iterator[tuple[subprocess.Popen[bytes] | None,
                                                            dict[str, Any]]]:
    """A moto_server on a free loopback port with ``bucket`` made: (its process, or None if it
    could not start; the storage options that reach it). Stopped on exit, if still running."""
    import s3fs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    yield None, options
                    return
                assert time.monotonic() < deadline, "moto_server did not answer"
                time.sleep(0.1)
        s3fs.S3FileSystem(**options).mkdir(bucket)
        yield proc, options
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
