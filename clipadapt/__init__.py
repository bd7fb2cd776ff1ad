"""clipadapt: turn any CLIP into a video model with small trainable adapters.

Example:
    >>> import open_clip, clipadapt
    >>> clip = open_clip.create_model("ViT-B-16")
    >>> clipadapt.inject(clip, "ted", tower="visual", layers=range(12), width=384)
    >>> clipadapt.summary(clip)
"""

from clipadapt.registry import ADAPTERS, BACKBONES, HEADS, Registry, register_adapter, register_backbone, register_head
from clipadapt.registry import register_dataset, register_optimizer, register_pooling, register_transform
from clipadapt.backbones import BackboneSpec, Block, Tower, describe
from clipadapt.inject import (
    SITES,
    Adapter,
    AdapterContext,
    FramesError,
    Injection,
    eject,
    frames,
    inject,
    injections,
)
from clipadapt.inject import freeze_model as freeze
from clipadapt import adapters  # noqa: F401  (registers the built-in adapters)
from clipadapt.analysis.params import summary
from clipadapt.attention import efficient_attention
from clipadapt.saving import BackboneMismatchError, load_adapters, save_adapters

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS",
    "BACKBONES",
    "HEADS",
    "SITES",
    "Adapter",
    "AdapterContext",
    "BackboneMismatchError",
    "BackboneSpec",
    "Block",
    "FramesError",
    "Injection",
    "Registry",
    "Tower",
    "describe",
    "efficient_attention",
    "eject",
    "frames",
    "freeze",
    "inject",
    "injections",
    "load_adapters",
    "register_adapter",
    "register_backbone",
    "register_dataset",
    "register_head",
    "register_optimizer",
    "register_pooling",
    "register_transform",
    "save_adapters",
    "summary",
]
