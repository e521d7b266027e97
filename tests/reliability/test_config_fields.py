"""Every config field refuses bad values (wrong type, NaN, inf, empty, out of range) with a
ConfigError that names the field, whether the value comes from the command line or from code.

The cases are generated from the dataclasses themselves, so a field added later is covered too.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from pipeline.config import SECTIONS, PipelineConfig
from pipeline.errors import ConfigError
from pipeline.settings import field_type


def _base(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed)."""
    args = typing.get_args(tp)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def bad_raw_values(dotted: str) -> list[str]:
    """Command-line strings that must be refused for the field ``dotted``."""
    section, name = dotted.split(".")
    f = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name)
    tp, optional = _base(field_type(SECTIONS[section], name))
    meta = f.metadata
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if item is str:
            return []  # names in tuples (cameras) are checked by their stage
        return [f"1,{bad}" for bad in _bad_numbers(item, meta, optional=True)]
    if tp is bool:
        return ["maybe", "2"]
    if tp is str:
        out = [] if optional else [" "]
        if "choices" in meta:
            out.append("no-such-choice")
        if "pattern" in meta:
            out.append("not-hex")
        return out
    return _bad_numbers(tp, meta, optional)


def _bad_numbers(tp: type, meta: Any, optional: bool) -> list[str]:
    out = ["abc", "nan", "inf", "-inf"]
    if not optional:
        out.append("")
    if tp is int:
        out.append("1.5")
    if "gt" in meta:
        out.append(str(meta["gt"]))
    if "ge" in meta:
        out.append(str(meta["ge"] - 1))
    if "le" in meta:
        out.append(str(meta["le"] * 2 + 1))
    return out


ALL_FIELDS = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
CASES = [(dotted, raw) for dotted in ALL_FIELDS for raw in bad_raw_values(dotted)]


def test_every_field_has_cases_or_is_free_text() -> None:
    free_text = {"demos.path", "encode.store", "encode.scheduler", "env.cameras"}
    uncovered = {d for d in ALL_FIELDS if not bad_raw_values(d)}
    assert uncovered == free_text
    assert len(CASES) > 150  # the systematic pass, not a sample


@pytest.mark.parametrize("dotted, raw", CASES)
def test_bad_command_line_value_names_the_field(dotted: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineConfig().with_overrides({dotted: raw})
    assert dotted in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), "0.1", None, True])
@pytest.mark.parametrize("dotted", ["dapg.step_size", "bc.lr", "policy.proprio_noise", "dapg.gamma"])
def test_bad_python_value_names_the_field(dotted: str, value: Any) -> None:
    section, name = dotted.split(".")
    with pytest.raises(ConfigError) as info:
        SECTIONS[section](**{name: value})
    assert dotted in str(info.value)


def test_sections_must_be_their_dataclass() -> None:
    with pytest.raises(ConfigError, match="dapg"):
        PipelineConfig(dapg={"iterations": 3})  # type: ignore[arg-type]


def test_defaults_and_boundaries_are_valid() -> None:
    cfg = PipelineConfig().with_overrides({
        "dapg.gamma": "1", "dapg.gae_lambda": "0", "dapg.lam0": "0", "policy.proprio_noise": "0",
        "evaluate.video_episodes": "0", "render.max_steps": "none", "policy.hidden": "",
    })
    assert cfg.dapg.gamma == 1.0 and cfg.policy.hidden == ()
