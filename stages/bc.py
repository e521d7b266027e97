"""bc: behaviour cloning from the cached demo features (or the demo states in state mode)."""

from __future__ import annotations

from typing import Any

from pipeline.config import PipelineConfig, key_dict
from pipeline.runner import Stage, StageContext, StageResult

VERSION = "1"
CHECKPOINT = "policy.pt"


def upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    return ("demos",) if cfg.policy.obs_mode == "state" else ("encode",)


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    return {"task": cfg.task, "policy": key_dict(cfg.policy), "bc": key_dict(cfg.bc)}


def data_source(ctx: StageContext) -> Any:
    from pipeline.rl.data import DataSource

    mode = ctx.config.policy.obs_mode
    if mode == "state":
        demos = ctx.upstream["demos"]
        return DataSource(ctx.config.task, mode, demos_file=str(demos.out_dir / "demos.pickle"),
                          demos_sha256=demos.summary["sha256"])
    enc = ctx.upstream["encode"]
    r = ctx.config.render  # rollouts must render frames the way the demo frames were rendered
    return DataSource(
        ctx.config.task, mode, store=enc.summary["store"], feature_key=enc.key,
        cameras=tuple(enc.summary["cameras"]),
        render={"width": r.width, "height": r.height, "shadows": r.shadows},
    )


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    from pipeline.envs.tasks import task_spec
    from pipeline.rl.bc import behaviour_clone
    from pipeline.rl.data import demo_arrays
    from pipeline.rl.policy import GaussianMLPPolicy
    from pipeline.rl.trainer import save_checkpoint

    pcfg, bcfg = ctx.config.policy, ctx.config.bc
    src = data_source(ctx)
    obs, act = demo_arrays(src, pcfg)
    policy = GaussianMLPPolicy(obs.shape[1], task_spec(ctx.config.task).act_dim, hidden=pcfg.hidden,
                               seed=pcfg.seed)
    torch.set_num_threads(1)  # minibatches of 32: a second thread only waits
    losses = behaviour_clone(policy, obs, act, epochs=bcfg.epochs, batch_size=bcfg.batch_size,
                             lr=bcfg.lr, seed=pcfg.seed)
    save_checkpoint(ctx.out_dir / CHECKPOINT, {"policy": policy.state_dict(),
                                               "policy_config": policy.config()})
    ctx.log(f"[bc] {len(obs)} samples of {obs.shape[1]}-d ({pcfg.obs_mode}); loss per epoch "
            + ", ".join(f"{x:.4f}" for x in losses))
    return {"obs_mode": pcfg.obs_mode, "obs_dim": int(obs.shape[1]), "samples": len(obs),
            "losses": losses, "checkpoint": str(ctx.out_dir / CHECKPOINT), "source": src.to_json()}


def describe(result: StageResult) -> str:
    s = result.summary
    return (f"BC policy ({s['obs_mode']}, {s['obs_dim']}-d input, {s['samples']} demo samples): "
            f"loss {s['losses'][0]:.4f} -> {s['losses'][-1]:.4f}; checkpoint {s['checkpoint']}")


STAGE = Stage("bc", VERSION, upstream, inputs, run, describe)
