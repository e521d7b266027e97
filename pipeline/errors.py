"""One exception hierarchy for the whole pipeline.

Every message says what was wrong, where (file, field) and how to fix it. Code raises these with
the helpers below instead of formatting its own sentences, so the wording stays consistent.
"""

from __future__ import annotations

import difflib
from pathlib import Path


class PipelineError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(PipelineError, ValueError):
    """A configuration value is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup (task, encoder, stage, camera) named something that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DemoValidationError(PipelineError):
    """A demonstration file is malformed, corrupt or not the expected one."""


class DemoUnavailableError(PipelineError):
    """No demonstration file was given and it cannot be downloaded."""


class RenderBackendError(PipelineError):
    """Offscreen OpenGL could not be initialised."""


class StoreError(PipelineError):
    """A store (episodes or features) is missing, incomplete or does not match its key."""


class WeightsError(PipelineError):
    """Encoder weights could not be loaded."""


class StageLockedError(PipelineError):
    """Another process holds the lock for the same stage output."""


class NonFiniteError(PipelineError):
    """A stage produced NaN or infinite numbers (losses, parameters, returns); nothing was saved."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UnknownNameError:
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    fix = f"did you mean {close[0]!r}?" if close else f"use one of the valid {kind}s"
    return UnknownNameError(
        f"unknown {kind} {name!r}; valid {kind}s are: {', '.join(sorted(valid))}. Fix: {fix}"
    )


def invalid_value(field: str, value: object, expected: str) -> ConfigError:
    fix = "" if "Fix:" in expected else f". Fix: set {field} to {expected}"
    return ConfigError(f"invalid {field}={value!r}: expected {expected}{fix}")


def bad_demo(path: str | Path, field: str, problem: str, fix: str) -> DemoValidationError:
    return DemoValidationError(f"{path}: field {field!r}: {problem}. Fix: {fix}")


def bad_store(location: str, problem: str, fix: str) -> StoreError:
    return StoreError(f"{location}: {problem}. Fix: {fix}")
