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
    preprocess_of,
    spec_of_family,
    towers_of,
)
from clipadapt.backbones.encoders import TextEncoder, TokenizedPrompts, VisualEncoder
from clipadapt.backbones.preprocess import Preprocess
from clipadapt.backbones.tiny import TinyConfig
from clipadapt.backbones.tokenizers import Tokenizer, load_tokenizer
from clipadapt.backbones import open_clip, openai_clip, hf, timm  # noqa: F401  (register the specs)

__all__ = [
    "SITES",
    "TOWERS",
    "BackboneSpec",
    "Block",
    "Preprocess",
    "Tokenizer",
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
    "load_tokenizer",
    "preprocess_of",
    "spec_of_family",
    "towers_of",
]
