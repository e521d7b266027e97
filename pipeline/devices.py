"""Which torch device a stage computes on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

The device is not part of any content key. That is safe only because fp32 on CUDA runs with
TF32 off (`fp32_exact`), so CUDA features agree with CPU ones to float16 rounding, the precision
the feature store keeps; bf16 is a separate precision setting, and that one is in the key.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.errors import invalid_value

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


def resolve_device(spec: str) -> str:
    """The concrete device for ``spec``: ``auto`` is CUDA when present, else the CPU."""
    if not re.fullmatch(DEVICE_PATTERN, spec):
        raise invalid_value("device", spec, "auto, cpu, cuda or cuda:N")
    if spec == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        return "cuda:0" if available else "cpu"
    index = int(spec.partition(":")[2] or 0)
    if index >= available:
        raise invalid_value("device", spec, f"cpu or auto: this machine has {available} CUDA "
                            "device(s). Fix: DEVICE=auto picks CUDA only where it exists")
    return f"cuda:{index}"


def fp32_exact() -> None:
    """Make fp32 mean fp32 on CUDA: no TF32 in matmuls or convolutions (process-wide)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def cuda_device_count() -> int:
    """CUDA devices visible to this process (0 without CUDA), for dask worker resources."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe(device: str) -> dict[str, Any]:
    """What a summary records about the device that computed it."""
    if not device.startswith("cuda"):
        return {"device": "cpu"}
    import torch

    return {"device": device, "name": torch.cuda.get_device_name(device)}
