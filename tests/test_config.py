from __future__ import annotations

import pytest

from pipeline.config import PipelineConfig, RenderConfig
from pipeline.errors import ConfigError, UnknownNameError
from pipeline.settings import key_dict


def test_overrides_parse_to_field_types() -> None:
    cfg = PipelineConfig().with_overrides({
        "env.width": "64", "env.shadows": "true", "env.cameras": "top,fixed",
        "render.max_demos": "none", "dapg.lam0": "0.02",
    })
    assert cfg.env.width == 64 and cfg.env.shadows is True
    assert cfg.env.cameras == ("top", "fixed") and cfg.render.max_demos is None
    assert cfg.dapg.lam0 == pytest.approx(0.02)


@pytest.mark.parametrize("override, words", [
    ({"env.width": "wide"}, ["env.width", "int"]),
    ({"render.replay": "backwards"}, ["render.replay", "states", "open_loop"]),
    ({"render.nope": "1"}, ["nope", "replay"]),
    ({"nosection.x": "1"}, ["nosection", "render"]),
    ({"env.task": "juggle"}, ["juggle", "door", "relocate"]),
    ({"env.width": "-5"}, ["env.width", "positive"]),
])
def test_bad_values_fail_early_with_names(override: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineConfig().with_overrides(override)
    for word in words:
        assert word in str(info.value)


def test_unknown_name_is_a_config_error() -> None:
    with pytest.raises(UnknownNameError):
        RenderConfig(replay="nope")


def test_key_dict_leaves_out_worker_counts() -> None:
    assert "workers" not in key_dict(RenderConfig())
    assert key_dict(RenderConfig(workers=7)) == key_dict(RenderConfig(workers=1))
    assert key_dict(RenderConfig(replay="open_loop")) != key_dict(RenderConfig())


def test_each_section_is_named_after_its_class() -> None:
    # settings.validate_fields names a bad field "<section>.<field>" from the class name alone.
    from pipeline.config import SECTIONS

    for name, cls in SECTIONS.items():
        assert cls.__name__.removesuffix("Config").lower() == name


def test_legacy_value_is_what_a_field_declares_and_only_that() -> None:
    from pipeline.config import DAPGConfig
    from pipeline.settings import legacy_value

    # The trainer resumes checkpoints from before dapg.horizon_value with this value.
    assert legacy_value(DAPGConfig, "horizon_value") == "bootstrap"
    with pytest.raises(KeyError, match=r"DAPGConfig\.iterations has no legacy value"):
        legacy_value(DAPGConfig, "iterations")
