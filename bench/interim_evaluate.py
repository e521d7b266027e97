"""Score a DAPG run that is still going: its latest checkpoint, as `make evaluate` would score it.

The evaluate stage scores only a finished run. For a long run (hours), this takes the policy the
run's per-iteration checkpoint holds now and plays `evaluate.episodes` held-out seeded episodes
with the mean action at level 0, through the same sampler and seeds as the evaluate stage. It
writes nothing. Pass the run's settings as `section.name=value` pairs, e.g. the motion-weighted
VAE cell of experiments/vision_door.toml at budget cpu300:

    python bench/interim_evaluate.py env.width=64 env.height=64 encode.encoder=vae \\
        encode.weights=0af020b942cf dapg.iterations=300 dapg.trajectories=20 \\
        dapg.eval_episodes=5 dapg.horizon_value=bootstrap
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("settings", nargs="*", help="the run's settings, section.name=value")
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--envs", type=int, default=8, help="envs stepped in parallel")
    args = parser.parse_args()

    from pipeline.config import PipelineConfig
    from pipeline.outputs import CHECKPOINT, policy_file, trained_source
    from pipeline.rl.checkpoints import load_checkpoint, load_policy
    from pipeline.rl.scoring import score_policy
    from pipeline.runner import Runner
    from pipeline.vae.resolve import resolve_trained_weights
    from stages import STAGES

    overrides = dict(s.split("=", 1) for s in args.settings)
    cfg = resolve_trained_weights(PipelineConfig().with_overrides(overrides), args.data)
    runner = Runner(cfg, STAGES, args.data)
    bc, run_dir = runner.result("bc"), runner.out_dir("dapg")
    if bc is None or not (run_dir / CHECKPOINT).exists():
        raise SystemExit(f"no bc output, or no DAPG checkpoint in {run_dir}: are these the run's settings?")
    policy = load_policy(policy_file(bc))  # the architecture and input normalisation DAPG starts from
    with tempfile.TemporaryDirectory() as tmp:  # a copy: the run replaces its checkpoint each iteration
        shutil.copy(run_dir / CHECKPOINT, Path(tmp) / CHECKPOINT)
        state = load_checkpoint(Path(tmp) / CHECKPOINT)
    policy.load_state_dict(state["policy"])
    result, _ = score_policy(cfg, trained_source(bc, cfg, args.data), policy, envs=args.envs)
    samples = sum(int(row["num_samples"]) for row in state["rows"])
    print(f"dapg {runner.key('dapg')[:12]}, checkpoint after {state['iteration']} iterations "
          f"({samples:,} samples): success {result['success_rate']:.1f}% over {result['episodes']} "
          f"held-out episodes (evaluate.seed {cfg.evaluate.seed}), mean return "
          f"{result['mean_return']:.1f}")


if __name__ == "__main__":
    main()
