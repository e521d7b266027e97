"""RAD: soft actor-critic from stacked pixel frames, trained on randomly cropped replay batches.

Laskin, Lee, Stooke, Pinto, Abbeel, Srinivas, "Reinforcement Learning with Augmented Data"
(NeurIPS 2020). Follows ``curl_sac.py`` of github.com/MishaLaskin/rad (``RadSacAgent``: its
``update``, ``update_critic``, ``update_actor_and_alpha``, ``select_action``, ``sample_action``)
with ``data_augs=crop``; the networks are in ``rad_nets.py``, the replay memory and the crops in
``rad_replay.py``, the loop in ``rad_train.py``. One update:

- critic, every env step: the target is r + discount * (min of the target critic's two Qs at the
  next observation and an action the current actor samples there, minus alpha times its
  log-probability); both Qs regress on it (summed MSE). Its gradient trains the convolutions:
  the encoder is shared, and no other loss reaches it.
- actor and temperature, every ``actor_update_every`` steps: the actor maximises min(Q1, Q2)
  minus alpha log pi on the convolutions' output with the gradient stopped before them (RAD's
  ``detach_encoder=True``); alpha's loss drives the policy's entropy towards -|A|.
- targets, every ``target_update_every`` steps: moving averages of the Q-functions
  (``critic_tau``) and of the encoder (``encoder_tau``).

RAD runs the convolutions on the updated weights once for the actor and once for the critic in
the actor's step; they are the same numbers, computed here once. The actor's sampling noise
comes from a generator of its own, so a checkpoint (``state_dict``) resumes the exact stream.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import RADConfig
from pipeline.encoders.rad_architecture import RADArchitecture
from pipeline.rl.rad_nets import ActorHead, Critic, RADEncoder, soft_update
from pipeline.rl.rad_replay import Batch

Array = np.ndarray


def to_float(frames: Array | torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1], as RAD feeds its encoder."""
    return torch.as_tensor(np.asarray(frames)).to(torch.float32) / 255.0


class RADAgent:
    def __init__(self, cfg: RADConfig, act_dim: int, seed: int) -> None:
        self.cfg, self.act_dim = cfg, act_dim
        self.arch = RADArchitecture.from_config(cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.critic = Critic(self.arch, act_dim, cfg.hidden)
            self.actor = ActorHead(self.arch, act_dim, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.noise = torch.Generator().manual_seed(seed + 1)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, betas=(0.9, 0.999))
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr,
                                           betas=(0.9, 0.999))
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, betas=(0.5, 0.999))

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @property
    def convs(self) -> torch.nn.Module:
        return self.critic.encoder.convs

    def conv_features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic.encoder.conv_features(obs)

    @torch.no_grad()
    def act(self, obs: Array, deterministic: bool) -> Array:
        """Actions for uint8 stacks (N, 3k, crop, crop): the mean (``select_action``) or a sample
        (``sample_action``)."""
        h = self.conv_features(to_float(obs))
        mu, pi, _, _ = self.actor(h, None if deterministic else self.noise)
        out = mu if deterministic else pi
        assert out is not None
        return out.numpy().astype(np.float64)

    @torch.no_grad()
    def actor_features(self, obs: Array) -> Array:
        """What the actor sees of uint8 stacks (N, 3k, crop, crop): the frozen encoder's output."""
        return self.actor.features(self.conv_features(to_float(obs))).numpy()

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        cfg = self.cfg
        obs, next_obs = to_float(batch.obs), to_float(batch.next_obs)
        action, reward = torch.as_tensor(batch.actions), torch.as_tensor(batch.rewards)
        with torch.no_grad():
            _, next_pi, next_log_pi, _ = self.actor(self.conv_features(next_obs), self.noise)
            assert next_pi is not None and next_log_pi is not None
            h_target = self.critic_target.encoder.conv_features(next_obs)
            target_q1, target_q2 = self.critic_target(h_target, next_pi)
            target_v = torch.min(target_q1, target_q2) - self.alpha * next_log_pi
            target_q = reward + cfg.discount * target_v
        q1, q2 = self.critic(self.conv_features(obs), action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        out = {"critic_loss": critic_loss.item()}
        if step % cfg.actor_update_every == 0:
            out.update(self._update_actor_and_alpha(obs))
        if step % cfg.target_update_every == 0:
            soft_update(self.critic.q1, self.critic_target.q1, cfg.critic_tau)
            soft_update(self.critic.q2, self.critic_target.q2, cfg.critic_tau)
            soft_update(self.critic.encoder, self.critic_target.encoder, cfg.encoder_tau)
        return out

    def _update_actor_and_alpha(self, obs: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():  # the actor's loss stops before the shared convolutions
            h = self.conv_features(obs)
        _, pi, log_pi, _ = self.actor(h, self.noise)
        assert pi is not None and log_pi is not None
        q1, q2 = self.critic(h, pi)
        actor_loss = (self.alpha.detach() * log_pi - torch.min(q1, q2)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = (self.alpha * (-log_pi - self.target_entropy).detach()).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": actor_loss.item(), "alpha": self.alpha.item(),
                "entropy": -log_pi.mean().item()}

    def encoder(self) -> RADEncoder:
        """The encoder the actor acts through, as one module: the frozen ``rad`` encoder."""
        enc = RADEncoder(self.arch)
        enc.load_state_dict(self.encoder_state(), strict=True)
        return enc.eval().requires_grad_(False)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """RADEncoder's state dict: the shared convolutions and the actor's linear + LayerNorm."""
        state = {f"convs.{k}": v for k, v in self.convs.state_dict().items()}
        state.update({f"{part}.{k}": v for part in ("fc", "ln")
                      for k, v in getattr(self.actor, part).state_dict().items()})
        return {k: v.detach().clone().contiguous() for k, v in state.items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything the next update depends on, as tensors and plain values."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.noise.set_state(state["noise"])
