"""State-mode (oracle) DAPG on door: BC on the door demos, then DAPG with DESIGN.md's constants.

    .venv/bin/python bench/state_dapg.py --out data/bench/state_dapg --iterations 150

Writes to --out: log.csv (RRL's columns), eval.csv (deterministic-policy success per iteration),
bc.json, summary.json and learning_curve.png. Re-running the same command resumes from the
checkpoint; raise --iterations to train further.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import BCConfig, DAPGConfig, PolicyConfig
from pipeline.envs.demos import load_demos
from pipeline.rl.bc import behaviour_clone
from pipeline.rl.policy import GaussianMLPPolicy, MLPBaseline
from pipeline.rl.sampler import ProcessSampler, evaluate
from pipeline.rl.trainer import train_dapg

DEFAULT_DEMOS = Path(__file__).resolve().parents[2] / "shared/data/adroit-demos/door-v0_demos.pickle"


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def plot(out: Path, bc: dict[str, float], final: dict[str, float] | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log, ev = read_csv(out / "log.csv"), read_csv(out / "eval.csv")
    it = [r["iteration"] for r in log]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(it, [r["success_rate"] for r in log], label="sampled (stochastic) trajectories")
    ax1.plot([r["iteration"] for r in ev], [r["eval_success_rate"] for r in ev],
             label="evaluation (mean action)")
    ax1.axhline(bc["success_rate"], color="grey", ls=":", label="BC only (mean action)")
    if final:
        ax1.axhline(final["success_rate"], color="k", ls="--",
                    label=f"final eval, {int(final['episodes'])} episodes")
    ax1.set(xlabel="DAPG iteration", ylabel="success rate (%)", ylim=(-2, 102),
            title="door, state DAPG: success")
    ax1.legend(fontsize=8)
    ax2.plot(it, [r["stoc_pol_mean"] for r in log], label="sampled return (stoc_pol_mean)")
    ax2.plot(it, [r["eval_score"] for r in log], label="eval_score (mean action)")
    ax2.set(xlabel="DAPG iteration", ylabel="return", title="door, state DAPG: return")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = out / "learning_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/bench/state_dapg"))
    parser.add_argument("--demos", type=Path, default=DEFAULT_DEMOS)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--trajectories", type=int, default=100, help="per iteration (RRL: 200)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--envs", type=int, default=10, help="envs per worker")
    parser.add_argument("--eval-episodes", type=int, default=25, help="per iteration (RRL: 25)")
    parser.add_argument("--final-episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (2 thrash when the cores are shared)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    pol_cfg, bc_cfg = PolicyConfig(obs_mode="state", seed=args.seed), BCConfig()
    dapg_cfg = DAPGConfig(iterations=args.iterations, trajectories=args.trajectories)
    demos, _ = load_demos(args.demos, "door")
    demo_obs = np.concatenate([d.observations for d in demos])
    demo_act = np.concatenate([d.actions for d in demos])

    t_start = time.perf_counter()
    policy = GaussianMLPPolicy(39, 28, hidden=pol_cfg.hidden, seed=pol_cfg.seed)
    # BC is deterministic, so on resume it is cheaper to redo it than to store it.
    bc_losses = behaviour_clone(policy, demo_obs, demo_act, epochs=bc_cfg.epochs,
                                batch_size=bc_cfg.batch_size, lr=bc_cfg.lr, seed=args.seed)
    baseline = MLPBaseline(39, batch_size=dapg_cfg.vf_batch, epochs=dapg_cfg.vf_epochs,
                           lr=dapg_cfg.vf_lr, seed=args.seed)
    bc_file = args.out / "bc.json"
    with ProcessSampler("door", workers=args.workers, n_envs=args.envs,
                        reward=dapg_cfg.reward) as sampler:
        if bc_file.exists() and not args.fresh:
            bc = json.loads(bc_file.read_text())
        else:
            t0 = time.perf_counter()
            bc = {**evaluate(policy, "door", args.final_episodes, seed=10**7, sampler=sampler),
                  "stochastic": evaluate(policy, "door", args.final_episodes, seed=10**7,
                                         deterministic=False, sampler=sampler),
                  "episodes": args.final_episodes, "losses": bc_losses,
                  "time_eval": time.perf_counter() - t0}
            bc_file.write_text(json.dumps(bc, indent=2))
        print(f"BC: {bc['success_rate']:.1f}% success, return {bc['mean_return']:.1f} "
              f"(mean action, {bc['episodes']} episodes)")

        t0 = time.perf_counter()
        train_dapg(policy, baseline, sampler, dapg_cfg, args.out, "door", demo_obs, demo_act,
                   seed=args.seed, eval_episodes=args.eval_episodes, resume=not args.fresh)
        time_train = time.perf_counter() - t0
        # A fresh seed range: these initial states were seen neither in training nor in eval.
        final = {**evaluate(policy, "door", args.final_episodes, seed=10**7, sampler=sampler),
                 "episodes": args.final_episodes}

    log = read_csv(args.out / "log.csv")
    summary = {
        "iterations": len(log), "trajectories_per_iteration": args.trajectories,
        "samples": int(sum(r["num_samples"] for r in log)),
        "bc_success_rate": bc["success_rate"], "final_success_rate": final["success_rate"],
        "final_mean_return": final["mean_return"], "final_episodes": args.final_episodes,
        "last_sampled_success_rate": log[-1]["success_rate"],
        "wall_time_this_call_s": time.perf_counter() - t_start,
        "train_time_this_call_s": time_train,
        "sum_logged_iteration_time_s": float(sum(r["time_sampling"] + r["time_vpg"] + r["time_npg"]
                                                 + r["time_VF"] for r in log)),
        "mean_sampling_steps_per_s": float(np.mean([r["num_samples"] / r["time_sampling"]
                                                    for r in log])),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    curve = plot(args.out, bc, final)
    print(json.dumps(summary, indent=2))
    print(f"curve: {curve}")


if __name__ == "__main__":
    main()
