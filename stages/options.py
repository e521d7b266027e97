"""The one table of user-facing options: each is a `--flag` of `rrl` and a `make` variable.

An option sets one or more config fields (``size`` sets width and height). Its type, its valid
values and its parsing come from the config field itself, so adding an option is one line here:
the CLI flag, the Make variable (``--obs-mode`` is ``OBS_MODE=``), the help text and the checks all
follow from it. Any other field can still be set with ``--set section.name=value`` (``SET=``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.config import PipelineConfig, config_field
from pipeline.errors import ConfigError, unknown_name


@dataclass(frozen=True)
class Option:
    name: str  # the CLI flag without dashes; the Make variable is its upper-case form
    fields: tuple[str, ...]  # dotted config fields it sets
    help: str

    def __post_init__(self) -> None:
        for dotted in self.fields:
            config_field(dotted)  # an unknown field fails at import, listing the valid ones

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def make_var(self) -> str:
        return self.name.upper().replace("-", "_")

    @property
    def param(self) -> str:
        return self.name.replace("-", "_")

    def describe(self) -> str:
        """The help text, with the valid choices and the default taken from the config."""
        f = config_field(self.fields[0])
        section = self.fields[0].split(".")[0]
        default = getattr(getattr(PipelineConfig(), section), f.name)
        extra = []
        if "choices" in f.metadata:
            extra.append(" | ".join(f.metadata["choices"]))
        if default not in (None, ()):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            extra.append(f"default {shown}")
        return self.help + (f" ({'; '.join(extra)})" if extra else "")


OPTIONS: tuple[Option, ...] = (
    Option("task", ("env.task",), "Adroit or DeepMind Control task"),
    Option("demos", ("demos.path",), "local demo pickle (else downloaded and checked)"),
    Option("demos-sha256", ("demos.sha256",), "accept a demo file with this sha256"),
    Option("replay", ("render.replay",), "how demos are replayed for rendering"),
    Option("cameras", ("env.cameras",), "comma-separated camera names (rrl cameras)"),
    Option("size", ("env.width", "env.height"), "rendered frame width and height, pixels"),
    Option("shadows", ("env.shadows",), "render shadows and reflections (1/0)"),
    Option("max-demos", ("render.max_demos",), "render only the first N demos"),
    Option("encoder", ("encode.encoder",), "encoder name (rrl encoders)"),
    Option("weights", ("encode.weights",),
           "pretrained | random | path to .pth/.safetensors | a vae key (ENCODER=vae)"),
    Option("precision", ("encode.precision",), "encoder arithmetic"),
    Option("store", ("encode.store",), "feature store: a path or s3://, gs:// URL"),
    Option("scheduler", ("encode.scheduler",), "dask scheduler address (tcp://host:8786)"),
    Option("device", ("encode.device",),
           "where frames are encoded, by encode and in vision rollouts (auto: CUDA when "
           "present); not part of any key"),
    Option("workers", ("render.workers", "encode.workers", "rollouts.workers", "dapg.envs",
                       "rollouts.envs"),
           "worker processes (render, encode, rollouts) and parallel envs (dapg, rollouts)"),
    Option("vae-latent", ("vae.latent",), "VAE latent width: the vae encoder's feature size"),
    Option("vae-epochs", ("vae.epochs",), "VAE training epochs"),
    Option("vae-beta", ("vae.beta",), "weight of the VAE's KL term"),
    Option("obs-mode", ("policy.obs_mode",), "what the policy sees"),
    Option("iters", ("dapg.iterations",), "DAPG iterations"),
    Option("traj", ("dapg.trajectories",), "trajectories per DAPG iteration"),
    Option("horizon", ("env.horizon",),
           "env steps per episode (unset: the task's own, Adroit 200, DMC 1000 // action repeat)"),
    Option("reward", ("env.reward",), "reward of the environment"),
    Option("seed", ("policy.seed",), "policy seed"),
    Option("policy", ("rollouts.policy",),
           "policy to roll out: bc | dapg (this config's checkpoint), random (uniform actions), "
           "a checkpoint file, or auto (dapg; random on DMC tasks, which have no demos)"),
    Option("episodes", ("rollouts.episodes",), "rollout episodes per distractor level"),
    Option("distractors", ("rollouts.distractors", "evaluate.distractors"),
           "distractor levels 0-3, comma-separated: rollouts and evaluate run each level"),
    Option("source", ("encode.source",),
           "episodes encode reads: the rendered demos, or the rollouts stage's episodes (random "
           "actions', or a state policy's: with a vision OBS_MODE, bc and dapg would train on the "
           "features of their own rollouts, a circle that is refused); auto: the demos, or on DMC "
           "tasks (no demos) the rollouts"),
)
BY_NAME = {o.param: o for o in OPTIONS}
BY_MAKE_VAR = {o.make_var: o for o in OPTIONS}
# Make variables that are not config options: the Makefile handles them itself.
MAKE_ONLY = ("FORCE", "URL", "PYTHON", "VENV", "DATA", "SET", "NAME", "STATUS", "KEY", "BUDGET", "N",
             "LEVELS", "RELEASE")


def overrides(values: dict[str, str | None], sets: list[str]) -> dict[str, str]:
    """Dotted-field overrides from option values (unset ones skipped) and ``--set`` items."""
    out: dict[str, str] = {}
    for param, value in values.items():
        if value is None or value == "":
            continue
        for dotted in BY_NAME[param].fields:
            out[dotted] = str(value)
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"invalid --set {item!r}: expected section.name=value, "
                              "e.g. env.width=64")
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def check_make_vars(names: list[str]) -> None:
    """Refuse a Make variable that is neither an option nor one the Makefile uses itself.

    A misspelt ``ENCDOER=resnet18`` would otherwise be ignored and the default encoder used.
    """
    for name in names:
        if name not in BY_MAKE_VAR and name not in MAKE_ONLY:
            raise unknown_name("make variable", name, [*BY_MAKE_VAR, *MAKE_ONLY])


def field_names() -> list[str]:
    """Every dotted config field, for `--set` help."""
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(PipelineConfig)
            for f in dataclasses.fields(s.default_factory)]  # type: ignore[arg-type]
