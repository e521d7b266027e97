"""Episode-file codec: bytes, write speed and encode-stage read speed, against today's lzf files.

    nice -n 19 python bench/episodes.py --sizes 256,64

For each frame size the door demos are rendered by the render stage (a cache hit when the
workspace has them), then every episode is written again from those frames, through the
render stage's own ``EpisodeWriter.write``, once per codec: as files were written before this
codec (lzf, one frame per chunk) and with the current settings (zstd, ``--chunk`` frames per
chunk). Printed per codec, and as a ratio to lzf:

- bytes per frame: file size / frames;
- write frames/s: ``EpisodeWriter.write`` calls (frames and the small arrays, as the render stage
  writes them), and the share of the render's own cost per frame that this adds (the core time
  of replaying and rendering the first demo in this process, as a render worker does);
- read frames/s through the encode stage's access pattern: tasks of ``stages.encode.ROWS_PER_TASK``
  rows dealt round-robin to ``--workers`` readers (one per dask worker), each task read in
  batches of ``encode.batch_size`` rows (``ShardEncoder``). The files were just written, so they
  are read from the page cache: this is decoding speed; a cold disk favours the smaller file.

Speeds are frames per CPU-second of this process (``time.process_time``: HDF5 runs its filters in
the calling thread), so other jobs on the machine slow the wall clock but hardly these numbers;
the render's core time counts the software rasteriser's threads too.

Every frame read back is compared with the rendered one; a mismatch stops the bench.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.config import EncodeConfig, PipelineConfig
from pipeline.runner import Runner
from pipeline.store.episodes import Episode, EpisodeReader, EpisodeWriter
from pipeline.store.frames import LEGACY, ZSTD_LEVEL, FrameCodec
from stages import STAGES
from stages.encode import ROWS_PER_TASK

ROOT = Path(__file__).resolve().parents[1]
SHARED_DEMOS = ROOT.parent / "shared/data/adroit-demos/door-v0_demos.pickle"


def rendered(data: Path, demos: Path, size: int, max_demos: int | None) -> Path:
    """The episode file of the door demos at ``size`` px (the render stage's)."""
    overrides = {"demos.path": str(demos), "env.width": str(size), "env.height": str(size)}
    if max_demos:
        overrides["render.max_demos"] = str(max_demos)
    result = Runner(PipelineConfig().with_overrides(overrides), STAGES, data, log=print).run("render")
    return result.out_dir / result.summary["episodes_file"]


def render_cpu_seconds(demos: Path, size: int, steps: int) -> float:
    """Core-seconds per frame of a render worker's work: states replay and render, one camera."""
    from pipeline.envs.adroit import AdroitEnv
    from pipeline.envs.demos import load_demos
    from pipeline.envs.families import resolve_task_cameras
    from pipeline.envs.replay import replay_demo

    demo = load_demos(demos, "door")[0][0]
    env = AdroitEnv("door", cameras=resolve_task_cameras("door", ()), width=size, height=size)
    try:
        replay_demo(env, demo, 0, "states", 2)  # warm-up: the GL context, first frames
        start = time.process_time()
        episode = replay_demo(env, demo, 0, "states", steps)
        return (time.process_time() - start) / len(episode.actions)
    finally:
        env.close()


def episode(reader: EpisodeReader, index: int) -> Episode:
    lo, hi = int(reader.episode_ends[index] - reader.lengths[index]), int(reader.episode_ends[index])
    return Episode(frames={cam: reader.read_rows(cam, lo, hi) for cam in reader.cameras},
                   actions=reader.read_rows("actions", lo, hi),
                   rewards=reader.read_rows("rewards", lo, hi),
                   states=reader.read_rows("states", lo, hi),
                   proprio=reader.read_rows("obs/proprio", lo, hi),
                   observations=reader.read_rows("obs/state", lo, hi), attrs=reader.attrs(index))


def write_copies(source: Path, codecs: dict[str, FrameCodec], folder: Path) -> dict[str, float]:
    """Write every episode of ``source`` once per codec; CPU seconds spent in the writers."""
    seconds = dict.fromkeys(codecs, 0.0)
    with EpisodeReader(source) as reader:
        writers = {name: EpisodeWriter(folder / f"{name}.hdf5", reader.env_args,
                                       reader.source_sha256, tuple(reader.cameras),
                                       codec=codec) for name, codec in codecs.items()}
        for i in range(len(reader.names)):
            ep = episode(reader, i)
            for name, writer in writers.items():
                start = time.process_time()
                writer.write(i, ep)
                seconds[name] += time.process_time() - start
        for name, writer in writers.items():
            start = time.process_time()
            writer.close()
            seconds[name] += time.process_time() - start
    return seconds


def encode_pattern_seconds(path: Path, batch: int, workers: int) -> float:
    """CPU seconds to read every frame the way the encode stage's tasks do (see the docstring)."""
    readers = [EpisodeReader(path) for _ in range(workers)]
    try:
        start = time.process_time()
        for camera in readers[0].cameras:
            rows = readers[0].num_rows
            for task, lo in enumerate(range(0, rows, ROWS_PER_TASK)):
                reader, hi = readers[task % workers], min(lo + ROWS_PER_TASK, rows)
                for s in range(lo, hi, batch):
                    reader.read_rows(camera, s, min(hi, s + batch))
        return time.process_time() - start
    finally:
        for reader in readers:
            reader.close()


def check_identical(source: Path, copy: Path) -> None:
    with EpisodeReader(source) as a, EpisodeReader(copy) as b:
        assert list(a.episode_ends) == list(b.episode_ends), (source, copy)
        for cam in a.cameras:
            for end, length in zip(a.episode_ends, a.lengths, strict=True):
                lo = int(end - length)
                if not np.array_equal(a.read_rows(cam, lo, int(end)), b.read_rows(cam, lo, int(end))):
                    raise SystemExit(f"frames differ: {copy} {cam} rows {lo}..{end}")


def bench_size(args: argparse.Namespace, size: int) -> None:
    source = rendered(args.data, args.demos, size, args.max_demos)
    render = render_cpu_seconds(args.demos, size, args.render_steps)
    with EpisodeReader(source) as reader:
        frames = reader.num_rows * len(reader.cameras)
        shape = reader.frame_shape(reader.cameras[0])
        episodes = len(reader.names)
    codecs = {"lzf, 1 frame per chunk (before)": LEGACY,
              f"zstd-{ZSTD_LEVEL}, {args.chunk} frames per chunk": FrameCodec("zstd", args.chunk)}
    print(f"\ndoor demos at {size} px: {episodes} episodes, {frames} frames of {shape}; render "
          f"{1e3 * render:.1f} core-ms per frame; read: tasks of {ROWS_PER_TASK} rows, batches of "
          f"{args.batch}, {args.workers} readers; speeds in frames per CPU-second")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        files = {name: folder / f"{name}.hdf5" for name in codecs}
        write = write_copies(source, codecs, folder)
        rows = {}
        for name, path in files.items():
            read = min(encode_pattern_seconds(path, args.batch, args.workers)
                       for _ in range(args.repeats))
            check_identical(source, path)
            with EpisodeReader(path) as reader:
                pixels = sum(reader.stored_frame_bytes(cam) for cam in reader.cameras)
            rows[name] = (path.stat().st_size / frames, pixels / frames, frames / write[name],
                          frames / read)
    print(f"  {'codec':<36} {'file B/frame':>12} {'frames only':>11} {'write f/s':>10} "
          f"{'of render':>9} {'read f/s':>9}  pixels")
    for name, (bpf, ppf, wfps, rfps) in rows.items():
        print(f"  {name:<36} {bpf:12.0f} {ppf:11.0f} {wfps:10.0f} {100 / (render * wfps):8.1f}% "
              f"{rfps:9.0f}  identical")
    (base, new) = rows.values()
    print(f"  {'ratio new / before':<36} {new[0] / base[0]:12.3f} {new[1] / base[1]:11.3f} "
          f"{new[2] / base[2]:10.2f} {'':>9} {new[3] / base[3]:9.2f}")
    print(f"  file: 1/{base[0] / new[0]:.1f} of the bytes before; frames alone: "
          f"1/{base[1] / new[1]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,64", help="comma-separated frame sizes (pixels)")
    parser.add_argument("--demos", type=Path, default=SHARED_DEMOS)
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="workspace with renders")
    parser.add_argument("--max-demos", type=int, default=None, help="only the first N demos")
    parser.add_argument("--chunk", type=int, default=FrameCodec().chunk_frames,
                        help="frames per chunk of the new codec")
    parser.add_argument("--batch", type=int, default=EncodeConfig().batch_size)
    parser.add_argument("--workers", type=int, default=EncodeConfig().workers,
                        help="readers the encode tasks are dealt to (dask workers)")
    parser.add_argument("--repeats", type=int, default=3, help="read passes; the fastest counts")
    parser.add_argument("--render-steps", type=int, default=100,
                        help="steps of demo 0 rendered to time the render")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the copies")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    for size in (int(s) for s in args.sizes.split(",")):
        bench_size(args, size)
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
