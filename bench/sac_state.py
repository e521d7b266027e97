"""RAD's SAC core checked alone: the same agent, learning from the task's state instead of pixels.

    python bench/sac_state.py --task cartpole-swingup --batch 128 --control-steps 100000

RAD on cartpole-swingup scores far below its paper here (docs/rad_dmc.md). This separates the two
halves of the agent: it runs ``RADAgent`` (pipeline/rl/rad.py: the critic and actor updates, the
squashed Gaussian, the temperature, the target averages) and RAD's loop (uniform actions for
``init_steps`` env steps, then one update per env step), with the pixel encoder's convolutions
replaced by the identity on the state vector; the linear layer and LayerNorm after them stay, so
that only the convolutions differ from the pixel agent. No crop, no frames. A SAC core that works
reaches the published state-SAC score at 100k control steps; CURL's Table 1 (Srinivas et al.
2020, "100K step scores") gives SAC from the state 835 +- 22 on cartpole-swingup.

Prints a line per 10 episodes and after the last (control steps, the training episode's sampled
return, the mean of ``--eval-episodes`` mean-action episodes on seeds the training resets never
use), then the last evaluation's mean and spread. One torch thread; the replay is a plain array of transitions.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch

from pipeline.config import RADConfig
from pipeline.envs.dmc import DMCEnv
from pipeline.rl import rad, rad_nets
from pipeline.rl.rad_replay import Batch
from pipeline.rl.rollouts import evaluation_seed


class StateEncoder(rad_nets.RADEncoder):
    """RADEncoder whose convolutions are the identity: the state vector goes to the linear layer."""

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        return x


def state_agent(cfg: RADConfig, obs_dim: int, act_dim: int, seed: int) -> rad.RADAgent:
    """A RADAgent on state vectors: its architecture has no convolutions (``conv_layers=0``, the
    flattened 'conv output' is the state) and its inputs are not divided by 255."""
    arch = SimpleNamespace(flat_features=obs_dim, feature_dim=cfg.feature_dim, conv_layers=0,
                           channels=obs_dim, filters=cfg.filters, crop=1)
    with ExitStack() as patches:
        patches.enter_context(mock.patch.object(rad.RADArchitecture, "from_config",
                                                lambda _cfg: arch))
        patches.enter_context(mock.patch.object(rad_nets, "RADEncoder", StateEncoder))
        return rad.RADAgent(cfg, act_dim, seed)


@contextmanager
def float_inputs() -> Iterator[None]:
    """rad.py divides what it is given by 255 (uint8 pixels); state vectors go in as they are."""
    with mock.patch.object(rad, "to_float", lambda x: torch.as_tensor(np.asarray(x, np.float32))):
        yield


def evaluate(agent: rad.RADAgent, env: DMCEnv, episodes: int, seed: int) -> list[float]:
    returns = []
    for i in range(episodes):
        obs, total = env.reset(seed=evaluation_seed(seed) + i), 0.0
        for _ in range(env.horizon):
            obs, reward, _, _ = env.step(agent.act(obs[None].astype(np.float32), True)[0])
            total += reward
        returns.append(total)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--control-steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env, eval_env = DMCEnv(args.task), DMCEnv(args.task)
    obs_dim, act_dim, horizon = env.spec.obs_dim, env.spec.act_dim, env.horizon
    cfg = RADConfig(batch_size=args.batch)
    with float_inputs():
        agent = state_agent(cfg, obs_dim, act_dim, args.seed)
        run(agent, cfg, env, eval_env, args, obs_dim, act_dim, horizon)


def run(agent: rad.RADAgent, cfg: RADConfig, env: DMCEnv, eval_env: DMCEnv,
        args: argparse.Namespace, obs_dim: int, act_dim: int, horizon: int) -> None:
    repeat = env.spec.action_repeat
    total = args.control_steps // repeat
    obs_mem = np.zeros((total, obs_dim), np.float32)
    next_mem, act_mem = np.zeros_like(obs_mem), np.zeros((total, act_dim), np.float32)
    reward_mem = np.zeros((total, 1), np.float32)
    rng = np.random.default_rng(args.seed)
    print(f"SAC core from state: {args.task}, {args.control_steps:,} control steps "
          f"(action repeat {repeat}), batch {args.batch}, seed {args.seed}", flush=True)
    step, episode, started = 0, 0, time.perf_counter()
    while step < total:
        obs, ret = env.reset(seed=args.seed + episode), 0.0
        for _ in range(min(horizon, total - step)):
            if step < cfg.init_steps:
                action = rng.uniform(-1.0, 1.0, act_dim)
            else:
                action = agent.act(obs[None].astype(np.float32), False)[0]
                picks = rng.integers(0, step, args.batch)
                agent.update(Batch(obs_mem[picks], act_mem[picks], reward_mem[picks],
                                   next_mem[picks]), step)
            nxt, reward, _, _ = env.step(action)
            obs_mem[step], act_mem[step], reward_mem[step], next_mem[step] = obs, action, reward, nxt
            obs, ret, step = nxt, ret + reward, step + 1
        episode += 1
        if episode % 10 == 0 or step >= total:  # always after the last episode
            final = evaluate(agent, eval_env, args.eval_episodes, args.seed)
            print(f"control steps {step * repeat:7d}  train return {ret:6.1f}  "
                  f"eval {np.mean(final):6.1f}  alpha {agent.alpha.item():.3f}  "
                  f"{time.perf_counter() - started:5.0f} s", flush=True)
    reference = ("; CURL's Table 1, SAC from state at 100k: 835 +- 22"
                 if args.task == "cartpole-swingup" else "")
    print(f"final: {np.mean(final):.1f} +- {np.std(final):.1f} over {len(final)} mean-action "
          f"episodes{reference}")


if __name__ == "__main__":
    main()
