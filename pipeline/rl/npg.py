"""Returns, GAE, conjugate gradient, Fisher-vector products and the NPG/DAPG update (as mjrl).

mjrl references: `utils/process_samples.py` (returns, GAE), `utils/cg_solve.py`,
`algos/npg_cg.py` (HVP, normalized step) and `algos/dapg.py` (demo-augmented gradient).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch.func import functional_call, jvp, vjp

from pipeline.rl.policy import Array, GaussianMLPPolicy

Avp = Callable[[torch.Tensor], torch.Tensor]


def discounted_returns(rewards: Array, gamma: float, terminal: float = 0.0) -> Array:
    """y[t] = x[t] + gamma * y[t+1], with y[T] = terminal (mjrl's discount_sum)."""
    out = np.empty(len(rewards), dtype=np.float64)
    running = float(terminal)
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        out[t] = running
    return out


def gae(rewards: Array, values: Array, gamma: float, lam: float, terminal_value: float) -> Array:
    """Generalised advantage estimates of one path.

    `terminal_value` is V after the last step: 0 if the episode ended, else a bootstrap value
    (mjrl's is values[-1]; trainer.advantages_and_returns says which applies).
    """
    v = np.append(np.asarray(values, dtype=np.float64), terminal_value)
    deltas = np.asarray(rewards, dtype=np.float64) + gamma * v[1:] - v[:-1]
    return discounted_returns(deltas, gamma * lam)


def conjugate_gradient(
    avp: Avp, b: torch.Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> torch.Tensor:
    """Approximately solve A x = b for SPD A given only x -> A x; starts at x = 0 as mjrl."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r.dot(r)
    for _ in range(iters):
        z = avp(p)
        step = rr / p.dot(z)
        x += step * p
        r -= step * z
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        if rr < residual_tol:
            break
    return x


def fisher_vector_product(policy: GaussianMLPPolicy, obs: torch.Tensor, damping: float) -> Avp:
    """v -> (F + damping I) v, F the Hessian of the mean KL at the current policy.

    mjrl differentiates the KL twice. At old == new that Hessian is exactly the Fisher matrix
    J^T diag(1/sigma^2) J / N for the mean network plus 2 I for log-std (the second-derivative
    terms of the network vanish there), so we compute it with one jvp and one vjp per product,
    about half the cost of double backprop. Tests check it against the double-backprop Hessian.
    """
    names = [name for name, _ in policy.net.named_parameters()]
    params = tuple(p.detach() for p in policy.net.parameters())
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    x = policy.obs_norm(obs).detach()
    scale = policy.act_scale

    def mean_fn(*ps: torch.Tensor) -> torch.Tensor:
        return functional_call(policy.net, dict(zip(names, ps, strict=True)), (x,)) * scale

    pullback = vjp(mean_fn, *params)[1]
    weight = torch.exp(-2 * policy.log_std.detach()) / len(obs)
    n_net = sum(sizes)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        v32 = v.to(torch.float32)
        tangents = tuple(t.view(s) for t, s in zip(v32[:n_net].split(sizes), shapes, strict=True))
        with warnings.catch_warnings():
            # torch's first forward-mode call scripts its jvp decompositions with the deprecated
            # torch.jit.script and says so; nothing here to act on.
            warnings.simplefilter("ignore", FutureWarning)
            jv = jvp(mean_fn, params, tangents)[1]
        grads = pullback(jv * weight)
        fv = torch.cat([*(g.reshape(-1) for g in grads), 2.0 * v32[n_net:]])
        return fv.to(v.dtype) + damping * v

    return fvp


def _tensor(x: Array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


@torch.no_grad()
def _surrogate(policy: GaussianMLPPolicy, obs: torch.Tensor, act: torch.Tensor,
               adv: torch.Tensor, old_ll: torch.Tensor) -> float:
    """mjrl's CPI surrogate mean(pi_new / pi_old * A)."""
    return float((torch.exp(policy.log_likelihood(obs, act) - old_ll) * adv).mean())


def npg_step(
    policy: GaussianMLPPolicy,
    obs: Array,
    act: Array,
    advantages: Array,
    demo_obs: Array | None = None,
    demo_act: Array | None = None,
    demo_weight: float = 0.0,
    step_size: float = 0.05,
    cg_iters: int = 10,
    damping: float = 1e-4,
) -> dict[str, float]:
    """One NPG update, or DAPG when demos are given with `demo_weight` = lam0 * lam1**k.

    As mjrl's DAPG: advantages are whitened; the vanilla gradient is taken over the RL samples
    and the demo samples (each demo pair weighted `demo_weight`), scaled by N_all / N_rl; the
    Fisher metric uses the RL samples only; the step is alpha * F^-1 g with
    alpha = sqrt(step_size / g^T F^-1 g), so the second-order KL of a step is step_size / 2.
    """
    adv = np.asarray(advantages, dtype=np.float64)
    adv = (adv - adv.mean()) / (adv.std() + 1e-6)
    obs_t, act_t, adv_t = _tensor(obs), _tensor(act), _tensor(adv)
    n_rl = len(adv)
    use_demos = demo_obs is not None and demo_act is not None and demo_weight > 0
    if use_demos:
        assert demo_obs is not None and demo_act is not None
        # mjrl re-divides by the std and scales everything by 1e-2. The NPG step is invariant to
        # the scale of g, but CG's absolute residual_tol is not, so we keep mjrl's numbers.
        all_adv = 1e-2 * np.concatenate([adv / (adv.std() + 1e-8),
                                         np.full(len(demo_obs), demo_weight)])
        all_obs = torch.cat([obs_t, _tensor(demo_obs)])
        all_act = torch.cat([act_t, _tensor(demo_act)])
        all_adv_t = _tensor(all_adv)
    else:
        all_obs, all_act, all_adv_t = obs_t, act_t, adv_t

    with torch.no_grad():
        old_mean = policy.mean(obs_t)
        old_log_std = policy.log_std.detach().clone()
        old_ll = policy.log_likelihood(obs_t, act_t, mean=old_mean)
    surr_before = _surrogate(policy, obs_t, act_t, adv_t, old_ll)

    t0 = time.perf_counter()
    params = policy.trainable()
    # d/dtheta of (N_all/N_rl) * mean(pi/pi_old * A) at theta_old is sum(grad log pi * A) / N_rl.
    objective = (policy.log_likelihood(all_obs, all_act) * all_adv_t).sum() / n_rl
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(objective, params)]).double()
    time_vpg = time.perf_counter() - t0

    t0 = time.perf_counter()
    fvp = fisher_vector_product(policy, obs_t, damping)
    direction = conjugate_gradient(fvp, grad, iters=cg_iters)
    time_npg = time.perf_counter() - t0

    alpha = float(np.sqrt(abs(step_size / (float(grad.dot(direction)) + 1e-20))))
    policy.set_flat(policy.get_flat().double() + alpha * direction)
    with torch.no_grad():
        kl = float(policy.mean_kl(old_mean, old_log_std, obs_t))
    surr_after = _surrogate(policy, obs_t, act_t, adv_t, old_ll)
    return {"alpha": alpha, "delta": step_size, "time_vpg": time_vpg, "time_npg": time_npg,
            "kl_dist": kl, "surr_improvement": surr_after - surr_before}
