"""Choose an offscreen OpenGL backend for MuJoCo before mujoco is imported.

MuJoCo reads ``MUJOCO_GL`` once, at import. When the user has not set it, we try EGL, then
OSMesa, each in a throwaway subprocess (a failed GL init can abort the process), and export the
first that renders so worker processes inherit it.

With EGL on a machine with several GPUs, render worker ``i`` renders on GPU ``i % count``
(``MUJOCO_EGL_DEVICE_ID``, which MuJoCo reads when it makes its first context): otherwise
every worker would share the first GPU. A device the user chose is left alone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.pool import Pool
from typing import Any

from pipeline.errors import RenderBackendError

BACKENDS = ("egl", "osmesa")  # tried in this order when MUJOCO_GL is unset
KNOWN_BACKENDS = ("egl", "osmesa", "glfw")  # what mujoco accepts
_VERIFIED = "RRL_MUJOCO_GL_VERIFIED"  # the backend a probe in this process tree showed working
EGL_DEVICE = "MUJOCO_EGL_DEVICE_ID"
_EGL_GPUS = "RRL_EGL_GPUS"  # how many EGL devices are GPUs, as a probe in this process tree found
# Counts the EGL devices backed by a CUDA device that CUDA_VISIBLE_DEVICES leaves visible (the
# ones MUJOCO_EGL_DEVICE_ID=0, 1, ... name, in that order).
_GPU_PROBE = """
import os
from mujoco.egl import egl_ext as EGL
ids = set()
for device in EGL.eglQueryDevicesEXT():
    try:
        ids.add(int(EGL.eglQueryDeviceAttribEXT(device, EGL.EGL_CUDA_DEVICE_NV)))
    except Exception:  # not a CUDA device (Mesa), or a driver without the query
        pass
entries = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
if "CUDA_VISIBLE_DEVICES" in os.environ:
    try:  # CUDA stops at the first invalid entry (-1)
        numbers = [int(v) for v in entries]
        numbers = numbers[:next((k for k, i in enumerate(numbers) if i < 0), len(numbers))]
        ids = {i for i in numbers if i in ids}
    except ValueError:  # GPU UUIDs: as many as listed, at most as many as there are
        ids = set(sorted(ids)[:len(entries)])
print(len(ids))
"""
_PROBE = (
    "import mujoco\n"
    "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos=\"0 0 1\"/>"
    "<geom type=\"sphere\" size=\".1\"/></worldbody></mujoco>')\n"
    "r = mujoco.Renderer(m, 8, 8); d = mujoco.MjData(m); r.update_scene(d); r.render()\n"
)
_STATE: dict[str, bool] = {"late": False}
_INSTALL_HINT = (
    "install the GL libraries (Debian: `apt-get install libegl1 libgl1 libosmesa6`, "
    "or run `make gl-deps`), or set MUJOCO_GL to a backend that works on this machine"
)


def probe_backend(backend: str) -> str | None:
    """Return None when ``backend`` renders, else the error it printed."""
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend == "osmesa":
        env["PYOPENGL_PLATFORM"] = "osmesa"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def select_gl_backend() -> str:
    """Set MUJOCO_GL (if unset) to the first backend that renders; raise if none does.

    A backend the user set is probed too: a bad one would otherwise fail only inside worker
    processes, where a pool keeps respawning them. The verdict is exported, so worker processes
    (which inherit the environment) do not probe again.
    """
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        if os.environ.get(_VERIFIED) != chosen:
            if chosen not in KNOWN_BACKENDS:
                raise RenderBackendError(
                    f"MUJOCO_GL={chosen!r} is not a MuJoCo rendering backend (valid: "
                    f"{', '.join(KNOWN_BACKENDS)}). Fix: export MUJOCO_GL=egl (or osmesa), or "
                    "unset it to let the pipeline choose")
            error = probe_backend(chosen)
            if error is not None:
                raise RenderBackendError(
                    f"offscreen rendering with MUJOCO_GL={chosen} fails: {error}. Fix: unset "
                    f"MUJOCO_GL to let the pipeline choose, or {_INSTALL_HINT}")
            os.environ[_VERIFIED] = chosen
        return chosen
    if "mujoco" in sys.modules:
        _STATE["late"] = True  # mujoco already picked its (windowed) default at import
    failures = {}
    for backend in BACKENDS:
        error = probe_backend(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = os.environ[_VERIFIED] = backend
            if backend == "osmesa":
                os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
            return backend
        failures[backend] = error
    detail = "; ".join(f"{b}: {e}" for b, e in failures.items())
    raise RenderBackendError(f"no offscreen OpenGL backend works ({detail}). Fix: {_INSTALL_HINT}")


def render_failure(error: Exception) -> RenderBackendError:
    backend = os.environ.get("MUJOCO_GL", "unset")
    if _STATE["late"]:
        return RenderBackendError(
            f"offscreen rendering failed: {error}. mujoco was imported before MUJOCO_GL was "
            "chosen, so it kept its windowed default. Fix: export MUJOCO_GL=egl (or osmesa), or "
            "import pipeline.envs.adroit before mujoco"
        )
    return RenderBackendError(
        f"offscreen rendering failed with MUJOCO_GL={backend}: {error}. Fix: {_INSTALL_HINT}"
    )



def egl_gpus() -> int:
    """GPUs render workers are spread over: EGL devices backed by a visible CUDA device.

    0 when the backend is set to other than EGL, when the user chose a device, or when EGL has
    no GPU devices (Mesa only: spreading would send workers to devices that do not exist). The
    count comes from a throwaway subprocess, as the backend probe, and is exported so worker
    processes inherit it instead of probing again.
    """
    if os.environ.get("MUJOCO_GL", "egl") != "egl" or os.environ.get(EGL_DEVICE):
        return 0
    if _EGL_GPUS not in os.environ:
        env = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl")
        try:
            proc = subprocess.run([sys.executable, "-c", _GPU_PROBE], env=env, capture_output=True,
                                  text=True, timeout=120, check=False)
            lines = proc.stdout.split()
            count = int(lines[-1]) if proc.returncode == 0 and lines else 0
        except (OSError, ValueError, subprocess.SubprocessError):
            count = 0
        os.environ[_EGL_GPUS] = str(count)
    return int(os.environ[_EGL_GPUS])


def use_egl_device(worker: int, gpus: int) -> None:
    """In render worker ``worker`` (before its first GL context): render on GPU ``worker % gpus``.

    ``gpus`` comes from ``egl_gpus()`` in the parent; with fewer than two there is nothing to
    spread, and MuJoCo's own choice (the first GPU) stands.
    """
    if gpus >= 2 and not os.environ.get(EGL_DEVICE):
        os.environ[EGL_DEVICE] = str(worker % gpus)


def _init_render_worker(started: Any, gpus: int, initializer: Callable[..., None] | None,
                        initargs: tuple[Any, ...]) -> None:
    with started.get_lock():
        worker, started.value = started.value, started.value + 1
    use_egl_device(worker, gpus)
    if initializer is not None:
        initializer(*initargs)


def render_pool(processes: int, initializer: Callable[..., None] | None = None,
                initargs: tuple[Any, ...] = ()) -> Pool:
    """A pool of ``processes`` spawned render workers; worker i renders on EGL GPU i % count.

    spawn, not fork: a forked child would inherit (and corrupt) the parent's GL and MuJoCo state.
    """
    ctx = mp.get_context("spawn")
    return ctx.Pool(processes, _init_render_worker,
                    (ctx.Value("i", 0), egl_gpus(), initializer, initargs))
