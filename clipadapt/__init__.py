"""clipadapt: turn any CLIP into a video model with small trainable adapters.

Example:
    >>> import open_clip, clipadapt
    >>> clip = open_clip.create_model("ViT-B-16")
    >>> clipadapt.inject(clip, "ted", tower="visual", layers=range(12), width=384)
    >>> clipadapt.summary(clip)
"""

import importlib
import importlib.util
import sys
import types

from clipadapt.registry import ADAPTERS, BACKBONES, HEADS, Registry, register_adapter, register_backbone, register_head
from clipadapt.registry import register_dataset, register_optimizer, register_pooling, register_transform

# The rest of the public API is imported on first use (PEP 562), so `import clipadapt` and the
# command line start without torch: {public name: (module, name there)}.
_LAZY = {
    **{name: ("clipadapt.backbones", name) for name in ("BackboneSpec", "Block", "Tower", "describe")},
    **{name: ("clipadapt.inject", name) for name in ("SITES", "Adapter", "AdapterContext", "FramesError", "Injection",
                                                      "eject", "frames", "inject", "injections")},
    "freeze": ("clipadapt.inject", "freeze_model"),
    **{name: ("clipadapt.sets", name) for name in ("activate", "active_sets", "adapter_sets", "disabled")},
    "summary": ("clipadapt.analysis.params", "summary"),
    "efficient_attention": ("clipadapt.attention", "efficient_attention"),
    **{name: ("clipadapt.saving", name) for name in ("BackboneMismatchError", "load_adapters", "save_adapters")},
    "VideoCLIP": ("clipadapt.models", "VideoCLIP"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a subpackage: clipadapt.adapters.ted...
    raise AttributeError(f"module 'clipadapt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(globals().keys() | _LAZY.keys())


class _Package(types.ModuleType):
    """This package's module type: importing the submodule ``clipadapt.inject`` sets the package
    attribute ``inject`` to that module; the public ``clipadapt.inject`` stays the function."""

    def __setattr__(self, name, value):
        if name == "inject" and isinstance(value, types.ModuleType):
            value = value.inject
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
