"""bc: behaviour cloning from the cached demo features (or the demo states in state mode).

With ``dapg.use_demos=false`` (plain NPG, the paper's no-demos baseline) nothing is cloned: the
stage writes the freshly initialised policy, with identity input normalization, so that no
demonstration reaches the learner through its starting point (mjrl's NPG starts the same way).
On a task without demonstrations (DeepMind Control) the feature store holds random-policy
rollouts, so NPG from features standardizes its inputs with the store's feature statistics
(``normalizes_from_store``): no demonstration is involved, and untrained-encoder features, which
vary little around a large mean, reach the policy's first layer on a usable scale. NPG from the
state needs only the observation width there, so it has no upstream stage.

The summary names files relative to the stage's folder and the data folder (never absolute
paths), so a data folder can be moved; later stages resolve them with
``pipeline.outputs.trained_source`` and ``StageResult.out_dir``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.envs.families import check_task_config, require_demos, task_facts
from pipeline.errors import NonFiniteError
from pipeline.outputs import POLICY_FILE, data_source, locate, observation_upstream, policy_file
from pipeline.rl.data import demo_arrays
from pipeline.runner import Stage, StageContext, StageResult
from pipeline.settings import key_dict

VERSION = "2"  # 2: portable summary (relative names), refuses non-finite losses and parameters


def clones(cfg: PipelineConfig) -> bool:
    """Whether the policy is cloned from the demos (DAPG) or starts fresh (NPG)."""
    return cfg.dapg.use_demos


def normalizes_from_store(cfg: PipelineConfig) -> bool:
    """Whether the fresh NPG policy's inputs are standardized with the feature store's statistics:
    on features of a task whose store holds no demonstrations (else identity, see above)."""
    return not clones(cfg) and cfg.policy.obs_mode != "state" and not task_facts(cfg.task).has_demos


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    check_task_config(cfg)
    if not clones(cfg):  # a different output: in the key (DAPG keys stay as they were)
        fresh = {"task": cfg.task, "policy": key_dict(cfg.policy), "clone": False}
        return {**fresh, "input_normalization": "feature store"} if normalizes_from_store(cfg) else fresh
    return {"task": cfg.task, "policy": key_dict(cfg.policy), "bc": key_dict(cfg.bc)}


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    from pipeline.rl.bc import behaviour_clone
    from pipeline.rl.checkpoints import require_finite_policy, save_checkpoint
    from pipeline.rl.policy import GaussianMLPPolicy, ObsNormalizer

    pcfg, bcfg = ctx.config.policy, ctx.config.bc
    facts = task_facts(ctx.config.task)
    if clones(ctx.config):
        require_demos(facts.name, "dapg.use_demos=true clones the policy from them (bc)")
    src = data_source(ctx.config, ctx.data_dir, ctx.upstream)
    if src.obs_mode == "state" and src.demos_file is None:
        obs, act = np.zeros((0, facts.obs_dim), dtype=np.float32), np.zeros((0, facts.act_dim))
    else:  # NPG needs only the input width (and, normalizes_from_store, the features)
        obs, act = demo_arrays(locate(src, ctx.config, ctx.data_dir), pcfg)
    policy = GaussianMLPPolicy(obs.shape[1], facts.act_dim, hidden=pcfg.hidden, seed=pcfg.seed)
    normalization = "identity"
    if normalizes_from_store(ctx.config):
        policy.set_normalization(ObsNormalizer.from_data(obs))
        normalization = f"feature store ({len(obs)} rows of random-policy rollouts)"
    torch.set_num_threads(1)  # minibatches of 32: a second thread only waits
    losses = behaviour_clone(policy, obs, act, epochs=bcfg.epochs, batch_size=bcfg.batch_size,
                             lr=bcfg.lr, seed=pcfg.seed) if clones(ctx.config) else []
    fix = "lower bc.lr, and check the demo data for NaN or infinite values"
    if not all(math.isfinite(x) for x in losses):
        raise NonFiniteError(f"{ctx.out_dir}: BC losses per epoch {losses} are not all finite; "
                             f"no checkpoint was written. Fix: {fix}")
    require_finite_policy(policy, f"{ctx.out_dir}: BC", fix)
    save_checkpoint(ctx.out_dir / POLICY_FILE, {"policy": policy.state_dict(),
                                               "policy_config": policy.config()})
    if losses:
        ctx.log(f"[bc] {len(obs)} samples of {obs.shape[1]}-d ({pcfg.obs_mode}); loss per epoch "
                + ", ".join(f"{x:.4f}" for x in losses))
    else:
        ctx.log(f"[bc] dapg.use_demos=false: no cloning, NPG starts from a fresh policy "
                f"(input normalization: {normalization})")
    return {"obs_mode": pcfg.obs_mode, "obs_dim": int(obs.shape[1]),
            "samples": len(obs) if losses else 0, "cloned": bool(losses), "losses": losses,
            "checkpoint": POLICY_FILE, "source": src.to_json(),
            **({"input_normalization": normalization} if not losses else {})}


def describe(result: StageResult) -> str:
    s = result.summary
    if not s["losses"]:
        norm = s.get("input_normalization", "identity")
        return (f"fresh policy for NPG ({s['obs_mode']}, {s['obs_dim']}-d input, not cloned: "
                f"dapg.use_demos=false; input normalization: {norm}); checkpoint {policy_file(result)}")
    return (f"BC policy ({s['obs_mode']}, {s['obs_dim']}-d input, {s['samples']} demo samples): "
            f"loss {s['losses'][0]:.4f} -> {s['losses'][-1]:.4f}; checkpoint {policy_file(result)}")


STAGE = Stage(
    name="bc",
    version=VERSION,
    upstream=observation_upstream,
    inputs=inputs,
    run=run,
    describe=describe,
)
