"""Render frames/s of the door demos on this process's GL backend: the render stage's replay
(``replay_parallel``: worker processes, states replay, one camera), without writing a file.

    MUJOCO_GL=egl python bench/render.py --size 256 --demos 8 --workers 16

Prints the OpenGL renderer a context gets here (``GL_RENDERER``: a GPU's name, or ``llvmpipe``
for Mesa's software rasteriser), then frames/s. Starting the worker pool (spawn, imports, env
and GL context) takes seconds that do not depend on the backend, so it is timed on its own, by
the same replay cut to one step per demo, and subtracted: ``steady`` is frames / (full - start).
With EGL on several GPUs, workers spread over them (``MUJOCO_EGL_DEVICE_ID``,
pipeline/envs/gl.py). The last line is JSON, for bench/gpu_check.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from pipeline.config import EnvConfig, RenderConfig
from pipeline.envs.demos import load_demos
from pipeline.envs.families import resolve_task_cameras
from pipeline.envs.gl import EGL_DEVICE, egl_gpus, select_gl_backend
from pipeline.envs.replay import replay_parallel

ROOT = Path(__file__).resolve().parents[1]
SHARED_DEMOS = ROOT.parent / "shared/data/adroit-demos/door-v0_demos.pickle"
TASK = "door"


def gl_renderer() -> str:
    """GL_RENDERER of a context made as the workers make theirs (MuJoCo's offscreen backend)."""
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
    renderer = mujoco.Renderer(model, 8, 8)  # makes its context current
    try:
        from OpenGL import GL  # after MuJoCo's backend set PYOPENGL_PLATFORM


        name = GL.glGetString(GL.GL_RENDERER)
        return name.decode() if isinstance(name, bytes) else str(name)
    finally:
        renderer.close()


def replay_seconds(env: EnvConfig, cfg: RenderConfig, demos: list) -> tuple[float, int]:  # type: ignore[type-arg]
    jobs = list(enumerate(demos))
    start = time.perf_counter()
    frames = sum(len(ep.actions) for ep in replay_parallel(env, cfg, jobs))
    return time.perf_counter() - start, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--demos", type=int, default=8, help="the first N door demos")
    parser.add_argument("--max-steps", type=int, default=None, help="steps per demo (all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--file", type=Path, default=SHARED_DEMOS, help="the door demo pickle")
    args = parser.parse_args()
    backend = select_gl_backend()
    renderer = gl_renderer()
    demos = load_demos(args.file, TASK)[0][: args.demos]
    cameras = resolve_task_cameras(TASK, ())
    env = EnvConfig(task=TASK, cameras=cameras, width=args.size, height=args.size)
    cfg = RenderConfig(workers=args.workers, max_steps=args.max_steps)
    gpus = egl_gpus()
    print(f"MUJOCO_GL={backend}, GL_RENDERER {renderer!r}, {args.workers} workers"
          f"{f' spread over {gpus} EGL GPUs' if gpus > 1 else ''}"
          f"{f', {EGL_DEVICE}={os.environ[EGL_DEVICE]}' if os.environ.get(EGL_DEVICE) else ''}; "
          f"door, {len(demos)} demos, {args.size} px, camera {', '.join(cameras)}")
    start, _ = replay_seconds(env, dataclasses.replace(cfg, max_steps=1), demos)
    full, frames = replay_seconds(env, cfg, demos)
    steady = frames / max(full - start, 1e-9)
    print(f"pool start {start:.1f} s; {frames} frames in {full:.1f} s: {frames / full:.1f} frames/s "
          f"overall, {steady:.1f} frames/s steady ({1e3 * args.workers / steady:.1f} ms per frame "
          "per worker)")
    print(json.dumps({"backend": backend, "renderer": renderer, "workers": args.workers,
                      "gpus": gpus, "frames": frames, "seconds": round(full, 2),
                      "start_seconds": round(start, 2), "overall_fps": round(frames / full, 1),
                      "steady_fps": round(steady, 1)}))


if __name__ == "__main__":
    main()
