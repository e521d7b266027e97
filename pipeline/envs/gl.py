"""Choose an offscreen OpenGL backend for MuJoCo before mujoco is imported.

MuJoCo reads ``MUJOCO_GL`` once, at import. When the user has not set it, we try EGL, then
OSMesa, each in a throwaway subprocess (a failed GL init can abort the process), and export the
first that renders so worker processes inherit it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline.errors import RenderBackendError

BACKENDS = ("egl", "osmesa")  # tried in this order when MUJOCO_GL is unset
KNOWN_BACKENDS = ("egl", "osmesa", "glfw")  # what mujoco accepts
_VERIFIED = "RRL_MUJOCO_GL_VERIFIED"  # the backend a probe in this process tree showed working
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
