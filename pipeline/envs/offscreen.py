"""Offscreen rendering of a MuJoCo model's named cameras, shared by every task family.

Importing this module chooses the GL backend before mujoco loads (MuJoCo reads ``MUJOCO_GL``
once, at import), so env modules import it before anything that imports mujoco.
"""

from __future__ import annotations

import sys

from pipeline.envs.gl import render_failure, select_gl_backend

select_gl_backend()  # must precede the first `import mujoco` in this process
# Mesa's software GL (llvmpipe) and triton each bring their own LLVM: importing triton after a GL
# context exists crashes the process (torch imports it lazily, e.g. through timm). Nothing that
# renders needs triton, so make `import triton` fail cleanly; torch then treats it as absent.
sys.modules.setdefault("triton", None)  # type: ignore[arg-type]

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.errors import unknown_name  # noqa: E402


class CameraRenderer:
    """(H, W, 3) uint8 frames of ``model``/``data`` from named cameras; one GL context, made lazily.

    ``kinematics``: recompute body poses from qpos before each frame. After mj_step, body poses
    are those of the last substep's start, so a frame would lag the state (and differ from the
    frame of the same state restored); envs whose step already leaves poses current skip it.
    """

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, cameras: Sequence[str],
                 label: str, width: int, height: int, shadows: bool, kinematics: bool) -> None:
        self.model, self.data, self.cameras, self.label = model, data, tuple(cameras), label
        self.width, self.height, self.shadows, self.kinematics = width, height, shadows, kinematics
        self._renderer: mujoco.Renderer | None = None

    def render(self, camera: str) -> np.ndarray:
        if camera not in self.cameras:
            raise unknown_name(f"{self.label} camera", camera, self.cameras)
        renderer = self._get()
        if self.kinematics:
            mujoco.mj_kinematics(self.model, self.data)
        renderer.update_scene(self.data, camera=camera)
        if not self.shadows:
            # Software GL spends most of its time on shadow and reflection passes (4x slower).
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return renderer.render().copy()

    def _get(self) -> mujoco.Renderer:
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            except Exception as exc:  # GL errors come as several unrelated types
                raise render_failure(exc) from exc
        return self._renderer

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class RendersCameras:
    """Frames and closing for an env that holds a `CameraRenderer` and a wrapped env."""

    cameras: tuple[str, ...]
    _renderer: CameraRenderer
    env: Any

    def render(self, camera: str) -> np.ndarray:
        """An (H, W, 3) uint8 frame of the current state from a named camera."""
        return self._renderer.render(camera)

    def render_all(self) -> dict[str, np.ndarray]:
        return {cam: self.render(cam) for cam in self.cameras}

    def close(self) -> None:
        self._renderer.close()
        self.env.close()
