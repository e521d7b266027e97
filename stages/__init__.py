"""One module per stage; ``STAGES`` lists them in pipeline order.

Stage modules import only light things at the top (config, runner, task facts), so computing keys
and status stays fast; heavy work is imported inside each stage's ``run``.
"""

from __future__ import annotations

from pipeline.runner import Stage
from stages import bc, dapg, demos, encode, evaluate, probe, rad, render, rollouts, vae

STAGES: dict[str, Stage] = {s.name: s for s in (demos.STAGE, render.STAGE, vae.STAGE, encode.STAGE, bc.STAGE, dapg.STAGE, evaluate.STAGE, rollouts.STAGE, probe.STAGE, rad.STAGE)}
