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
from clipadapt.sets import activate, active_sets, adapter_sets, disabled
from clipadapt import adapters  # noqa: F401  (registers the built-in adapters)
from clipadapt.analysis.params import summary
from clipadapt.attention import efficient_attention
from clipadapt.saving import BackboneMismatchError, load_adapters, save_adapters


def __getattr__(name: str):
    if name == "VideoCLIP":  # the video model, imported on first use (models import heads and adapters)
        from clipadapt.models import VideoCLIP

        return VideoCLIP
    raise AttributeError(f"module 'clipadapt' has no attribute {name!r}")

__version__ = "0.1.0"


def load_trained(path, classnames=None):
    """The trained video model of a run, ready for inference (in eval mode).

    `path` is a run directory (``runs/quickstart/m2clip``: its best checkpoint, else its last), a
    training checkpoint (``.pt``), or an adapter file written by ``clipadapt export``
    (``.safetensors``, whose stored recipe builds the backbone). Works for every model family.

    Example:
        >>> model = clipadapt.load_trained("runs/quickstart/m2clip")   # doctest: +SKIP
        >>> model(video)["fused"].argmax(-1)                             # video: (B, T, 3, H, W)
    """
    from clipadapt.engine.tasks import load_trained as load

    return load(path, classnames)


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
    "activate",
    "active_sets",
    "adapter_sets",
    "describe",
    "disabled",
    "efficient_attention",
    "eject",
    "frames",
    "freeze",
    "inject",
    "injections",
    "load_adapters",
    "load_trained",
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
