"""Backbone specs: everything a model family needs, one file per family.

A spec says where a family keeps its towers and blocks, how to encode images and text, where
the final norms are, how to run a block's own attention (and cross-attention), LoRA's
projection targets and how to build the family from plain arguments. Specs are tried in
registration order; the first whose structure matches wins.
"""

from clipadapt.backbones.base import (
    SITES,
    TOWERS,
    BackboneSpec,
    Block,
    Tower,
    UnsupportedModelError,
    describe,
    detect,
    fingerprint,
    get_tower,
    spec_of_family,
    towers_of,
)
from clipadapt.backbones.encoders import TextEncoder, TokenizedPrompts, VisualEncoder
from clipadapt.backbones.tiny import TinyConfig
from clipadapt.backbones import open_clip, openai_clip, hf, timm  # noqa: F401  (register the specs)

__all__ = [
    "SITES",
    "TOWERS",
    "BackboneSpec",
    "Block",
    "TextEncoder",
    "TinyConfig",
    "TokenizedPrompts",
    "Tower",
    "UnsupportedModelError",
    "VisualEncoder",
    "describe",
    "detect",
    "fingerprint",
    "get_tower",
    "spec_of_family",
    "towers_of",
]
