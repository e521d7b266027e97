from __future__ import annotations

import pytest

from pipeline.config import PipelineConfig, RenderConfig
from pipeline.errors import ConfigError, UnknownNameError
from pipeline.settings import key_dict


def test_overrides_parse_to_field_types() -> None:
    cfg = PipelineConfig().with_overrides({
        "render.width": "64", "render.shadows": "true", "render.cameras": "top,fixed",
        "render.max_demos": "none", "dapg.lam0": "0.02",
    })
    assert cfg.render.width == 64 and cfg.render.shadows is True
    assert cfg.render.cameras == ("top", "fixed") and cfg.render.max_demos is None
    assert cfg.dapg.lam0 == pytest.approx(0.02)


@pytest.mark.parametrize("override, words", [
    ({"render.width": "wide"}, ["render.width", "int"]),
    ({"render.replay": "backwards"}, ["render.replay", "states", "open_loop"]),
    ({"render.nope": "1"}, ["nope", "width"]),
    ({"nosection.x": "1"}, ["nosection", "render"]),
    ({"demos.task": "juggle"}, ["juggle", "door", "relocate"]),
    ({"render.width": "-5"}, ["render.width", "positive"]),
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
    assert key_dict(RenderConfig(width=64)) != key_dict(RenderConfig())


def test_each_section_is_named_after_its_class() -> None:
    # settings.validate_fields names a bad field "<section>.<field>" from the class name alone.
    from pipeline.config import SECTIONS

    for name, cls in SECTIONS.items():
        assert cls.__name__.removesuffix("Config").lower() == name
