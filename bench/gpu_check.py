"""One command that measures a GPU machine and prints one table: ``make bench-gpu``.

    python bench/gpu_check.py            # under 8 minutes on 1 GPU and 16 cores

A GPU machine is lent for minutes, so everything worth measuring on one runs from this script,
each part a subprocess with its own time limit inside an overall budget (a part that hangs
costs its limit, not the machine), in this order:

1. system: ``nvidia-smi`` summary, torch / CUDA / cuDNN versions, cores;
2. ``make test-gpu`` (the command it runs: ``pytest -m gpu``);
3. a cold ``make features ENCODER=resnet34 WEIGHTS=random DEVICE=cuda`` on door (``rrl run
   encode`` in a fresh data folder, render workers = cores): wall time, and each stage's
   seconds from its manifest;
4. bench/encode.py on CUDA, resnet34 fp32 and bf16, on the episode file part 3 rendered:
   raw forward, encode stage, stage/raw;
5. bench/rollout.py on CUDA: batched sampler (default layout) and RRL-style samples/s, and the
   limit it prints;
6. bench/render.py: render frames/s with ``MUJOCO_GL=egl`` on the GPU's EGL device against
   software GL (Mesa's llvmpipe through EGL, else OSMesa), with the GL_RENDERER each got.

Without CUDA (or with ``--no-cuda``) the parts that need it print one ``skipped:`` line each and
the others run: part 3 on the CPU, part 6 software only. Sizes are arguments, so a test runs the
CPU path in seconds (tests/test_gpu_check.py). Each part's whole output is kept in ``--logs``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DEMOS = ROOT.parent / "shared/data/adroit-demos/door-v0_demos.pickle"
MESA_EGL = "/usr/share/glvnd/egl_vendor.d/50_mesa.json"  # glvnd's Mesa vendor file (Debian)
DEFAULT_BUDGET = 450.0  # seconds: 7.5 minutes, under the 8 a GPU check may take
RESERVE = 10.0  # seconds kept for printing the table after the last part
MIN_PART = 20.0  # seconds: a part that would get less is skipped, not started
# What the benches print (bench/encode.py, bench/rollout.py), read back into the table.
RAW, STAGE = r"raw forward:\s+([\d.]+)", r"encode stage:\s+([\d.]+)"
RATIO, HIT = r"ratio stage/raw:\s+([\d.]+)", r"cache-hit re-run:\s+([\d.]+)"
LIMIT = r"limit ([\d.]+) samples/s"
BATCHED = r"default \(.*?\)\s+([\d.]+) samples/s\s+([\d.]+) of limit"
RRL = r"RRL-style[^\n]*?\s([\d.]+) samples/s"
SPEEDUP = r"default / RRL-style: ([\d.]+)x"


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # part, measure, value
    skipped: list[str] = field(default_factory=list)

    def add(self, part: str, measure: str, value: str) -> None:
        self.rows.append((part, measure, value))

    def skip(self, part: str, why: str) -> None:
        self.skipped.append(f"skipped: {part}: {why}")

    def print(self, seconds: float) -> None:
        print("\n| part | measure | value |\n| --- | --- | --- |")
        for part, measure, value in self.rows:
            print(f"| {part} | {measure} | {value} |")
        print(f"| total | wall time | {seconds:.0f} s |")
        for line in self.skipped:
            print(line)


@dataclass
class Budget:
    """The seconds all parts share; each part's own limit grows with it (a slower machine given
    a larger budget gives every part proportionally more)."""

    seconds: float
    started: float = field(default_factory=time.perf_counter)

    def limit(self, seconds: float) -> float:
        return seconds * max(1.0, self.seconds / DEFAULT_BUDGET)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started) - RESERVE


def run(name: str, cmd: list[str], limit: float, budget: Budget, logs: Path,
        env: dict[str, str | None] | None = None) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, output, seconds) of ``cmd``; the output goes to logs/name.log.

    ``env`` adds to this process's environment; a None value removes that variable.
    """
    timeout = max(1.0, min(budget.limit(limit), budget.left()))
    merged = {**os.environ, **(env or {})}
    start = time.perf_counter()
    # Its own process group: a part that runs out of time is stopped with every process it
    # started (render pools, dask workers), not only the command itself.
    proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={k: v for k, v in merged.items() if v is not None})
    code: int | None
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out, _ = proc.communicate()
        code = None
        out = (out or "") + f"\n[gpu_check] stopped after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    (logs / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n{out}")
    return code, out, seconds


def stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop the process group ``proc`` leads: SIGTERM, then SIGKILL for whatever is left (a
    member still holding the output pipe would otherwise keep ``communicate`` waiting)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def no_time(report: Report, part: str, budget: Budget) -> bool:
    if budget.left() >= MIN_PART:
        return False
    report.skip(part, f"less than {MIN_PART:.0f} s of the budget left")
    return True


def failed(report: Report, part: str, code: int | None, seconds: float, logs: Path, name: str) -> bool:
    if code == 0:
        return False
    what = f"timed out after {seconds:.0f} s" if code is None else f"failed (exit {code})"
    report.add(part, "result", f"{what}, see {logs / name}.log")
    return True


def number(pattern: str, text: str, group: int = 1) -> str:
    found = re.search(pattern, text)
    return found.group(group) if found else "?"


def system(report: Report, cuda: bool) -> None:
    import torch

    report.add("system", "cores", str(os.cpu_count()))
    report.add("system", "torch / CUDA / cuDNN", f"{torch.__version__} / {torch.version.cuda} / "
               f"{torch.backends.cudnn.version() if cuda else '-'}")
    smi = shutil.which("nvidia-smi")
    if not smi:
        report.skip("nvidia-smi summary", "nvidia-smi not found")
        return
    query = "name,driver_version,memory.total,power.limit,pcie.link.gen.current"
    out = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=60)
    for i, line in enumerate(out.stdout.strip().splitlines()):
        report.add("system", f"GPU {i} (name, driver, memory, power, PCIe gen)", line.strip())


def test_gpu(report: Report, budget: Budget, logs: Path) -> None:
    if no_time(report, "make test-gpu", budget):
        return
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    code, out, seconds = run("test_gpu", cmd, 240, budget, logs)
    lines = [ln for ln in out.strip().splitlines() if re.search(r"\d+ (passed|failed|skipped)", ln)]
    report.add("make test-gpu", "pytest -m gpu", f"{lines[-1].strip('= ') if lines else '?'} "
               f"({'ok' if code == 0 else 'FAILED' if code else 'timed out'}, {seconds:.0f} s)")


def features(report: Report, args: argparse.Namespace, device: str, data: Path, budget: Budget,
             logs: Path) -> Path | None:
    """The cold features run; returns its episode file."""
    part = f"make features ({device}, cold)"
    if no_time(report, part, budget):
        return None
    cmd = [sys.executable, "-m", "stages", "--data", str(data), "--demos", str(args.demos_file),
           "--encoder", args.encoder, "--weights", "random", "--device", device,
           "--size", str(args.size), "--workers", str(args.workers)]
    if args.max_demos:
        cmd += ["--max-demos", str(args.max_demos)]
    cmd += [f"--set=render.max_steps={args.max_steps}"] if args.max_steps else []
    cmd += [f"--set=encode.resize={args.resize}"] if args.resize else []
    cmd += [f"--set=encode.crop={args.crop}"] if args.crop else []
    code, _, seconds = run("features", [*cmd, "run", "encode"], 300, budget, logs)
    if failed(report, part, code, seconds, logs, "features"):
        return None
    manifests = {}
    for stage in ("demos", "render", "encode"):
        found = glob.glob(str(data / stage / "*" / "manifest.json"))
        manifests[stage] = json.loads(Path(found[0]).read_text()) if found else {}
    staged = sum(m.get("seconds", 0.0) for m in manifests.values())
    render, encode = manifests["render"].get("summary", {}), manifests["encode"].get("summary", {})
    report.add(part, "wall time", f"{seconds:.1f} s ({args.encoder}, {args.size} px, "
               f"{render.get('frames_per_camera', '?')} frames, {args.workers} render workers)")
    report.add(part, "demos", f"{manifests['demos'].get('seconds', 0):.1f} s")
    report.add(part, "render", f"{manifests['render'].get('seconds', 0):.1f} s "
               f"({render.get('frames_per_second', '?')} frames/s)")
    report.add(part, "encode", f"{manifests['encode'].get('seconds', 0):.1f} s "
               f"({encode.get('frames_per_second', '?')} frames/s on "
               f"{', '.join(encode.get('device', {}).get('workers', [])) or '?'})")
    report.add(part, "outside the stages (start, imports, keys)", f"{seconds - staged:.1f} s")
    episodes = glob.glob(str(data / "render" / "*" / "episodes.hdf5"))
    return Path(episodes[0]) if episodes else None


def encode_bench(report: Report, args: argparse.Namespace, episodes: Path, budget: Budget,
                 logs: Path) -> None:
    for precision in ("fp32", "bf16"):
        name, part = f"encode_{precision}", f"bench/encode.py {args.encoder} {precision}"
        if no_time(report, part, budget):
            continue
        cmd = [sys.executable, "bench/encode.py", "--device", "cuda", "--encoder", args.encoder,
               "--precision", precision, "--episodes", str(episodes), "--frames",
               str(args.frames), "--workers", "1"]
        if precision == "bf16":
            cmd.append("--no-cache-hit")  # measured once, in the fp32 run
        code, out, seconds = run(name, cmd, 150, budget, logs)
        if failed(report, part, code, seconds, logs, name):
            continue
        report.add(part, "raw forward / encode stage",
                   f"{number(RAW, out)} / {number(STAGE, out)} frames/s")
        report.add(part, "stage / raw", number(RATIO, out))
        if precision == "fp32":
            report.add(part, "cache-hit re-run", f"{number(HIT, out)} s")


def rollout_bench(report: Report, args: argparse.Namespace, budget: Budget, logs: Path) -> None:
    part = f"bench/rollout.py {args.encoder} bf16, {args.envs} envs"
    if no_time(report, part, budget):
        return
    cmd = [sys.executable, "bench/rollout.py", "--device", "cuda", "--encoder", args.encoder,
           "--precision", "bf16", "--sizes", args.rollout_sizes, "--envs", str(args.envs),
           "--steps", str(args.steps)]
    code, out, seconds = run("rollout", cmd, 240, budget, logs)
    if failed(report, part, code, seconds, logs, "rollout"):
        return
    for block in re.split(r"\n(?=\d+ px:)", out)[1:]:
        size = block.split(" ", 1)[0]
        report.add(part, f"{size} px limit", f"{number(LIMIT, block)} samples/s")
        report.add(part, f"{size} px batched (default layout)",
                   f"{number(BATCHED, block)} samples/s, {number(BATCHED, block, 2)} of limit")
        report.add(part, f"{size} px RRL-style (1 env, frame at a time)",
                   f"{number(RRL, block)} samples/s; batched is {number(SPEEDUP, block)}x")


def render_bench(report: Report, args: argparse.Namespace, cuda: bool, budget: Budget,
                 logs: Path) -> None:
    cmd = [sys.executable, "bench/render.py", "--size", str(args.size), "--demos",
           str(args.render_demos), "--workers", str(args.workers), "--file", str(args.demos_file)]
    cmd += ["--max-steps", str(args.render_steps)] if args.render_steps else []
    software: dict[str, str | None] = {"MUJOCO_GL": "egl", "__EGL_VENDOR_LIBRARY_FILENAMES": MESA_EGL,
                "CUDA_VISIBLE_DEVICES": ""} if Path(MESA_EGL).is_file() else \
        {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    runs: dict[str, dict[str, str | None]] = {"software GL": software}
    if cuda:
        runs = {"EGL on the GPU": {"MUJOCO_GL": "egl"}, **runs}
    else:
        report.skip("render with MUJOCO_GL=egl on the GPU", "no CUDA device")
    fps = {}
    for label, env in runs.items():
        name = "render_" + label.split()[0].lower()
        # A fresh probe in each: the parent's verdicts must not carry over to another backend.
        env = {**env, "RRL_MUJOCO_GL_VERIFIED": None, "RRL_EGL_GPUS": None}
        part = f"render door {args.size} px, {args.workers} workers"
        if no_time(report, f"{part}, {label}", budget):
            continue
        code, out, seconds = run(name, cmd, 150, budget, logs, env)
        if failed(report, f"{part}, {label}", code, seconds, logs, name):
            continue
        result = json.loads(out.strip().splitlines()[-1])
        fps[label] = result["steady_fps"]
        report.add(part, f"{label}: {result['renderer']}",
                   f"{result['steady_fps']} frames/s steady ({result['overall_fps']} overall, "
                   f"pool start {result['start_seconds']} s)")
    if len(fps) == 2:
        report.add(f"render door {args.size} px", "GPU / software", f"{fps['EGL on the GPU'] / fps['software GL']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help="seconds for all parts (each part's limit scales with it)")
    parser.add_argument("--no-cuda", action="store_true", help="run the CPU path even with CUDA")
    parser.add_argument("--demos-file", type=Path, default=SHARED_DEMOS)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--size", type=int, default=256, help="frame size of features and render")
    parser.add_argument("--max-demos", type=int, default=None, help="features: first N demos")
    parser.add_argument("--max-steps", type=int, default=None, help="features: steps per demo")
    parser.add_argument("--resize", type=int, default=None, help="encoder input resize")
    parser.add_argument("--crop", type=int, default=None, help="encoder input crop")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="render worker processes")
    parser.add_argument("--frames", type=int, default=2048, help="bench/encode.py frames")
    parser.add_argument("--envs", type=int, default=os.cpu_count() or 1,
                        help="bench/rollout.py envs")
    parser.add_argument("--steps", type=int, default=25, help="bench/rollout.py steps")
    parser.add_argument("--rollout-sizes", default="256", help="bench/rollout.py --sizes")
    parser.add_argument("--render-demos", type=int, default=8, help="bench/render.py demos")
    parser.add_argument("--render-steps", type=int, default=None, help="bench/render.py steps")
    parser.add_argument("--logs", type=Path, default=None, help="folder for each part's output")
    parser.add_argument("--keep", action="store_true", help="keep the features data folder")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available() and not args.no_cuda
    budget, report = Budget(args.budget), Report()
    logs = args.logs or Path(tempfile.mkdtemp(prefix="gpu_check_logs_"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"bench-gpu: {'CUDA' if cuda else 'no CUDA: CPU parts only'}, budget {args.budget:.0f} s,"
          f" logs in {logs}", flush=True)
    system(report, cuda)
    if cuda:
        test_gpu(report, budget, logs)
    else:
        report.skip("make test-gpu", "no CUDA device (every gpu test would skip)")
    data = Path(tempfile.mkdtemp(prefix="gpu_check_data_"))
    try:
        episodes = features(report, args, "cuda" if cuda else "cpu", data, budget, logs)
        if not cuda:
            report.skip("bench/encode.py on CUDA (fp32, bf16)", "no CUDA device; "
                        "`make bench` measures the CPU")
        elif episodes is not None:
            encode_bench(report, args, episodes, budget, logs)
        else:
            report.skip("bench/encode.py on CUDA", "no episode file: the features run failed")
        if cuda:
            rollout_bench(report, args, budget, logs)
        else:
            report.skip("bench/rollout.py on CUDA", "no CUDA device; `make bench` measures the CPU")
        render_bench(report, args, cuda, budget, logs)
    finally:
        if args.keep:
            print(f"features data kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    report.print(time.perf_counter() - budget.started)


if __name__ == "__main__":
    main()
