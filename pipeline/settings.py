"""Config fields that know what a valid value is: `setting(...)` declares one, `validate_fields`
checks a dataclass against the declarations, `parse_value` reads one from the command line, and
`key_dict` keeps the fields that enter a stage's content key.

pipeline/config.py declares the fields; this module is the machinery, so that config.py reads as
the list of what can be set.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from typing import Any

from pipeline.errors import ConfigError, invalid_value, unknown_name

NOT_IN_KEY = {"key": False}
SHA256_PATTERN = r"^[0-9a-f]{64}$"


def setting(default: Any, *, key: bool | str = True, gt: float | None = None,
            ge: float | None = None, le: float | None = None,
            choices: tuple[str, ...] | None = None, pattern: str | None = None,
            legacy: Any = None) -> Any:
    """A config field and what a valid value for it is (checked by `validate_fields`).

    ``legacy`` (with ``key="unless_legacy"``): what the stage did before the field existed. The
    field enters the key unless it has that value, so outputs made before stay reachable by
    setting it explicitly, while the (new) default gets keys of its own.
    """
    if (key == "unless_legacy") != (legacy is not None):
        raise ValueError("key='unless_legacy' and legacy= go together")
    meta = {"key": key, "gt": gt, "ge": ge, "le": le, "choices": choices, "pattern": pattern,
            "legacy": legacy}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


def legacy_value(config: type, name: str) -> Any:
    """The ``legacy=`` of `config`'s field `name`: what outputs made before the field existed did."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    if name not in fields or "legacy" not in fields[name].metadata:
        raise KeyError(f"{config.__name__}.{name} has no legacy value")
    return fields[name].metadata["legacy"]


class Validated:
    """Base of the stage configs: checks every field on construction, then ``_check`` (if any)."""

    def __post_init__(self) -> None:
        validate_fields(self)
        self._check()

    def _check(self) -> None:
        """Rules that involve several fields."""


def field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def parse_value(tp: Any, raw: str, name: str) -> Any:
    """Parse a command-line string into the annotated type of a config field."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.strip().lower() in ("", "none", "null"):
            return None
        return parse_value(next(a for a in args if a is not type(None)), raw, name)
    if origin is tuple:
        if not raw.strip():
            return ()
        parts = [part.strip() for part in raw.split(",")]
        if not all(parts):  # "0,,1" must not quietly mean "0,1"
            raise ConfigError(f"invalid {name}={raw!r}: an empty item between commas. Fix: give "
                              f"comma-separated values with none left out, e.g. "
                              f"{','.join(p for p in parts if p) or '0,1'}")
        return tuple(parse_value(args[0], part, name) for part in parts)
    try:
        if tp is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return tp(raw)
    except ValueError:
        raise ConfigError(f"invalid {name}={raw!r}: expected a value of type {tp.__name__}") from None


def validate_fields(cfg: Any) -> None:
    """Check each field of a config dataclass against its type and its `setting` metadata."""
    # DemosConfig -> "demos": the section's name in PipelineConfig (a test checks they agree).
    section = type(cfg).__name__.removesuffix("Config").lower()
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        _check_value(f"{section}.{f.name}", getattr(cfg, f.name), hints[f.name], f.metadata)


def _check_value(name: str, value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> None:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None:
            return
        tp = next(a for a in args if a is not type(None))
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, tuple):
            raise invalid_value(name, value, f"a tuple of {args[0].__name__} values")
        for item in value:
            _check_value(name, item, args[0], meta)
        return
    if tp is bool:
        if not isinstance(value, bool):
            raise invalid_value(name, value, "true or false")
        return
    if tp is str:
        _check_text(name, value, meta)
        return
    # Numbers: bool is an int subclass, and an int is a fine float.
    ok_types = (int,) if tp is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise invalid_value(name, value, f"a number of type {tp.__name__}")
    if not math.isfinite(value):
        raise invalid_value(name, value, "a finite number")
    _check_range(name, value, meta)


def _check_text(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if not isinstance(value, str) or not value.strip():
        raise invalid_value(name, value, "a non-empty string")
    if "choices" in meta and value not in meta["choices"]:
        raise unknown_name(name, value, meta["choices"])
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        raise invalid_value(name, value, f"a string matching {meta['pattern']}"
                            + (" (64 lowercase hex digits)" if meta["pattern"] == SHA256_PATTERN else ""))


def _check_range(name: str, value: float, meta: typing.Mapping[str, Any]) -> None:
    rules = {"gt": (lambda v, b: v > b, "greater than {:g}"), "ge": (lambda v, b: v >= b, "at least {:g}"),
             "le": (lambda v, b: v <= b, "at most {:g}")}
    if all(ok(value, meta[k]) for k, (ok, _) in rules.items() if k in meta):
        return
    wanted = ["positive" if (k, meta[k]) == ("gt", 0) else text.format(meta[k])
              for k, (_, text) in rules.items() if k in meta]
    raise invalid_value(name, value, "a number that is " + " and ".join(wanted))


def key_dict(cfg: Any) -> dict[str, Any]:
    """The fields of a stage config that enter its content key, as plain JSON-able values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        key = f.metadata.get("key", True)
        value = getattr(cfg, f.name)
        if key is False or (key == "if_set" and value == f.default):
            continue
        if key == "unless_legacy" and value == f.metadata["legacy"]:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
