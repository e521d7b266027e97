"""``ENCODER=vae WEIGHTS=<vae key>`` (or ``ENCODER=rad WEIGHTS=<rad key>``): find the output of
the stage that trained the encoder, by that key, in a data folder.

Used by the CLI for its config and by experiments for each cell's, so that an encoder trained
here is named by its key in both. Each such stage has the encoder's name and records
``encoder_file`` and ``encoder_sha256`` in its summary.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.encoders.weights import weights_sha256
from pipeline.errors import WeightsError
from pipeline.manifests import read_manifest
from pipeline.runner import MANIFEST

_KEY_PREFIX = re.compile(r"[0-9a-f]{12,64}")
# Encoders trained by a stage of the same name, whose outputs a key can name.
TRAINED_ENCODERS = ("vae", "rad")


def resolve_trained_weights(cfg: PipelineConfig, data_dir: Path) -> PipelineConfig:
    """``WEIGHTS=<key or prefix>`` of a trained encoder: the config with that output's weights file.

    The file must still be the one the stage wrote (its sha256 is in the manifest).
    """
    e = cfg.encode
    name = e.encoder
    if name not in TRAINED_ENCODERS or not _KEY_PREFIX.fullmatch(e.weights) or Path(e.weights).exists():
        return cfg
    folder = Path(data_dir) / name
    manifests = [m | {"_dir": path.parent}
                 for path in sorted(folder.glob(f"{e.weights[:12]}*/{MANIFEST}"))
                 if (m := read_manifest(path)) is not None]
    found = [m for m in manifests if str(m.get("key", "")).startswith(e.weights)]
    if len(found) != 1:
        raise WeightsError(f"WEIGHTS={e.weights} names {len(found)} finished {name} outputs in "
                           f"{folder}. Fix: run `make {name}` (same DATA=) and pass the key it "
                           "prints, or pass the path of its encoder.safetensors")
    summary, out_dir = found[0]["summary"], found[0]["_dir"]
    path = out_dir / summary["encoder_file"]
    if not path.is_file() or weights_sha256(path) != summary["encoder_sha256"]:
        raise WeightsError(f"{path}: missing, or not the file the {name} stage wrote (sha256 "
                           f"{summary['encoder_sha256']}). Fix: run `make {name} FORCE=1` with the "
                           "same settings, then encode again")
    return dataclasses.replace(cfg, encode=dataclasses.replace(e, weights=str(path)))


