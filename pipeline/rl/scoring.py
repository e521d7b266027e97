"""Score a policy as the evaluate stage does: mean-action episodes from held-out seeds, at one
distractor level. Shared by ``stages/evaluate.py`` and ``bench/interim_evaluate.py`` (which scores
a run that is still going), so the two can only agree.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from pipeline.envs.families import horizon
from pipeline.rl.data import make_sampler
from pipeline.rl.distracted import env_factory
from pipeline.rl.rollouts import Rollout, summarize

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig
    from pipeline.outputs import DataSource
    from pipeline.rl.rollouts import SampledPolicy


def score_policy(cfg: PipelineConfig, src: DataSource, policy: SampledPolicy, level: int = 0,
                 envs: int | None = None) -> tuple[dict[str, Any], list[Rollout]]:
    """`summarize` of ``cfg.evaluate.episodes`` mean-action episodes at distractor `level`
    (episode i resets with ``evaluate.seed + i`` in the scene ``DistractorSpec(level, seed + i)``),
    and the rollouts. `envs` defaults to ``dapg.envs``."""
    e = cfg.evaluate
    factory = env_factory(level) if level else None
    with contextlib.closing(make_sampler(src, cfg.policy, cfg.env.reward,
                                         envs if envs is not None else cfg.dapg.envs,
                                         cfg.encode.device, env_factory=factory)) as sampler:
        rollouts = sampler.sample(policy, e.episodes, horizon(cfg), e.seed, deterministic=True)
    return summarize(rollouts, cfg.task), rollouts
