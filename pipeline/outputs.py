"""How a stage finds what an upstream stage wrote: file names, the feature store, the training data.

Stages never import each other (a test walks the import graph); what one stage must know about
another's output lives here, once. Manifests name files relative to their output folder and
the data folder, never by absolute path, so a data folder can be moved or shared: everything
here resolves them against the data folder of the run that reads them.

Light on purpose (no numpy, torch or zarr): `rrl status` imports it through the stage modules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.envs.families import encode_source, task_facts
from pipeline.runner import StageResult

DEFAULT_STORE = "features.zarr"  # the feature store in a data folder, unless STORE= says else
DEMOS_FILE = "demos.pickle"  # the demos stage's verified copy
POLICY_FILE = "policy.pt"  # bc's and dapg's trained policy
# The dapg stage's files, read by the study layer (status, curves) as well.
CHECKPOINT = "checkpoint.pt"  # the trainer's per-iteration state (resume)
LOG, EVAL_LOG, BC_START = "log.csv", "eval.csv", "bc_start.json"
CURVE = "learning_curve.png"
# The rad stage's folder of replay episode files (kept until its outputs are written, to
# resume); its checkpoint, logs and curve have the names above, as dapg's.
RAD_REPLAY = "replay"
# RRL's own training logs (../shared beside a checkout): <task>-v0_<run>_seed<N>.log.csv
REFERENCE_LOGS = Path(__file__).resolve().parents[2] / "shared/data/rrl-reference-logs"


def reference_log_files(task: str, folder: Path = REFERENCE_LOGS) -> list[Path]:
    """RRL's training logs of ``task`` (its three seeds), sorted; empty where ../shared is absent."""
    return sorted(Path(folder).glob(f"{task}-v0_*.log.csv"))


@dataclass(frozen=True)
class DataSource:
    """Where a policy's training data came from; stored in the BC summary for later stages.

    As stored it names nothing by absolute path, so a data folder can be moved: ``demos_file``
    is relative to the data folder and ``store`` is None for the data folder's default store.
    ``located`` gives the copy that readers use.
    """

    task: str
    obs_mode: str
    demos_file: str | None = None  # state mode: the demos stage's verified copy
    demos_sha256: str | None = None  # its checksum, as the demos stage recorded it
    store: str | None = None  # vision modes: the feature store URL the user set, if any
    feature_key: str | None = None
    cameras: tuple[str, ...] = ()
    render: dict[str, Any] = field(default_factory=dict)  # width, height, shadows of the frames
    features: tuple[str, ...] = ()  # FEATURES= as given (policy.features); empty: all stored

    def to_json(self) -> dict[str, Any]:
        # Without features when none were chosen: summaries written before FEATURES= existed
        # and those written now with the default are the same JSON.
        out = {**self.__dict__, "cameras": list(self.cameras), "features": list(self.features)}
        return out if self.features else {k: v for k, v in out.items() if k != "features"}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DataSource:
        return cls(**{**d, "cameras": tuple(d.get("cameras", ())),
                      "features": tuple(d.get("features", ()))})

    def located(self, data_dir: Path, default_store: str) -> DataSource:
        """This source with the demos file under `data_dir` and the store resolved."""
        demos = str(Path(data_dir) / self.demos_file) if self.demos_file else None
        return dataclasses.replace(self, demos_file=demos, store=self.store or default_store)


def weights_label(weights: dict[str, Any] | None) -> str:
    """The one wording of an encoder's weights identity (store attrs, keys); random stands out."""
    if not weights:
        return "none (state observations)"
    kind = weights.get("kind", "?")
    if kind == "random":
        return "RANDOM weights (untrained encoder: no ImageNet knowledge)"
    if kind == "file":
        return f"weights file sha256 {str(weights.get('sha256', ''))[:12]}"
    return f"pretrained weights {weights.get('tag', '')}".rstrip()


def store_weights(src: DataSource) -> dict[str, Any] | None:
    """The weights identity a located source's features were encoded with (None: state)."""
    if src.obs_mode == "state" or not src.store or not src.feature_key:
        return None
    from pipeline.store.features import open_features  # zarr: only when a store is read

    return dict(open_features(src.store, src.feature_key).attrs.get("weights") or {})


def store_root(cfg: PipelineConfig, data_dir: Path) -> str:
    """The feature store a config reads and writes: STORE=, else the data folder's own."""
    return cfg.encode.store or str(Path(data_dir) / DEFAULT_STORE)


def result_store(result: StageResult) -> str:
    """The store an encode output lives in: the one configured, else its data folder's default.

    Manifests record ``None`` for the default, so a workspace can be moved or shared.
    """
    return result.summary.get("store") or str(result.out_dir.parents[1] / DEFAULT_STORE)


def policy_file(result: StageResult) -> Path:
    """The trained policy of a bc or dapg output."""
    return result.out_dir / result.summary["checkpoint"]


# encode.source -> the stage whose episode file is encoded (each records `episodes_file`)
EPISODE_STAGES = {"demos": "render", "rollouts": "rollouts"}


def episodes_stage(cfg: PipelineConfig) -> str:
    """The stage whose episode file encode reads under ``cfg`` (render or rollouts)."""
    return EPISODE_STAGES[encode_source(cfg)]


def observation_upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    """What a policy of ``cfg`` observes through: the features (encode), or the demos' states
    (demos), or nothing (the state of a task without demos: only its width is needed)."""
    if cfg.policy.obs_mode != "state":
        return ("encode",)
    return ("demos",) if task_facts(cfg.task).has_demos else ()


def data_source(cfg: PipelineConfig, data_dir: Path, upstream: dict[str, StageResult]) -> DataSource:
    """The training data of a policy of ``cfg``, as recorded in summaries (portable)."""
    mode = cfg.policy.obs_mode
    if mode == "state" and "demos" not in upstream:  # a task without demos: the env's width
        return DataSource(cfg.task, mode)
    if mode == "state":
        demos = upstream["demos"]
        demos_file = (demos.out_dir / DEMOS_FILE).relative_to(data_dir)
        return DataSource(cfg.task, mode, demos_file=str(demos_file),
                          demos_sha256=demos.summary["sha256"])
    enc = upstream["encode"]
    env = cfg.env  # rollouts must render frames the way the demo frames were rendered
    return DataSource(cfg.task, mode, store=cfg.encode.store, feature_key=enc.key,
                      cameras=tuple(enc.summary["cameras"]),
                      render={"width": env.width, "height": env.height, "shadows": env.shadows},
                      features=cfg.policy.features)


def locate(src: DataSource, cfg: PipelineConfig, data_dir: Path) -> DataSource:
    """``src`` with its demos file and feature store resolved against this run's data folder."""
    return src.located(data_dir, store_root(cfg, data_dir))


def trained_source(result: StageResult, cfg: PipelineConfig, data_dir: Path) -> DataSource:
    """The located DataSource of a bc or dapg output."""
    return locate(DataSource.from_json(result.summary["source"]), cfg, data_dir)
