import pytest

import clipadapt
from clipadapt.registry import Registry, UnknownNameError


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(UnknownNameError) as err:
        clipadapt.ADAPTERS.get("tde")
    message = str(err.value)
    assert "bottleneck" in message and "ted" in message
    assert "Did you mean 'ted'?" in message


def test_registering_a_taken_name_is_an_error_unless_overridden():
    registry = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(float)
    registry.register("a", override=True)(float)
    assert registry.get("a") is float


def test_builtin_adapters_and_backbones_are_registered():
    assert {"ted", "bottleneck"} <= set(clipadapt.ADAPTERS.names())
    assert {"open_clip", "openai_clip", "hf", "timm"} <= set(clipadapt.BACKBONES.names())
