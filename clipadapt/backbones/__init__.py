"""Backbone specs: where a model family keeps its towers and blocks. One file per family.

Specs are tried in registration order; the first whose structure matches wins.
"""

from clipadapt.backbones.base import (
    TOWERS,
    BackboneSpec,
    Block,
    Tower,
    UnsupportedModelError,
    describe,
    detect,
    fingerprint,
    get_tower,
    towers_of,
)
from clipadapt.backbones import open_clip, openai_clip, hf, timm  # noqa: F401  (register the specs)

__all__ = [
    "TOWERS",
    "BackboneSpec",
    "Block",
    "Tower",
    "UnsupportedModelError",
    "describe",
    "detect",
    "fingerprint",
    "get_tower",
    "towers_of",
]
