"""Any open_clip config, or timm model name, built small: few blocks, narrow, random weights, offline.

`small_open_clip` keeps everything that makes a config what it is (the model class, the timm
trunk and its pooling, class and register tokens, the text tower's pooling, mask and vocabulary,
QuickGELU, the logit bias) and replaces only the sizes by those of a `TinyConfig`: block counts,
widths, heads, and the image side (a 4x4 patch grid). A timm trunk is built by
``timm.create_model`` with ``depth``, ``embed_dim``, ``num_heads``, ``img_size`` and
``patch_size`` overridden; a hybrid trunk whose convolutional stem fixes the width (ViTamin,
MobileCLIP-B) keeps its width and stem and gets the depth and an image side of four stem
strides instead.

Example:
    >>> clip = small_open_clip("ViT-B-16-SigLIP2")          # CustomTextCLIP, 2+2 blocks, width 64
    >>> clip.encode_image(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import contextlib
import copy
import difflib
from typing import Any, Iterator

import torch.nn as nn

from clipadapt.backbones.base import UnsupportedModelError
from clipadapt.backbones.tiny import TinyConfig

GRID = 4  # patches per side of a small model's image
HYBRID_IMAGE = 64  # image side of a hybrid trunk (stem stride 16: a 4x4 grid)


def timm_sizes(tiny: TinyConfig) -> dict[str, Any]:
    """The ``timm.create_model`` overrides that make a ViT or Eva as small as `tiny`'s visual tower."""
    return dict(depth=tiny.layers, embed_dim=tiny.width, num_heads=tiny.heads,
                img_size=GRID * tiny.patch_size, patch_size=tiny.patch_size)


def small_timm(name: str, tiny: TinyConfig | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name)`` at `tiny`'s visual sizes (random weights, nothing downloaded).

    Example:
        >>> small_timm("eva02_base_patch14_224").blocks[0].mlp      # a SwiGLU of width 64
    """
    import timm

    tiny = tiny or TinyConfig()
    try:
        return timm.create_model(name, pretrained=False, **{**kwargs, **timm_sizes(tiny)})
    except AssertionError:
        # a hybrid stem (ViTamin, MobileCLIP-B) fixes the token width: keep it, cut the depth
        return timm.create_model(name, pretrained=False, **{**kwargs, "depth": tiny.layers, "img_size": HYBRID_IMAGE})
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        kind = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
        raise UnsupportedModelError(
            f"{name!r} is a timm {kind} model, not a ViT or Eva: it takes no depth, embed_dim and num_heads "
            "to be built small, and clipadapt covers transformers of patch tokens only") from None


class _SmallTimm:
    """Stands in for the ``timm`` module inside ``open_clip.timm_model`` while a small model is
    built, so that ``TimmModel`` creates its trunk with `small_timm`."""

    def __init__(self, timm_module, tiny: TinyConfig):
        self._timm, self._tiny = timm_module, tiny

    def __getattr__(self, name: str):
        return getattr(self._timm, name)

    def create_model(self, name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"a small {name!r} is built with random weights (timm_model_pretrained must be false)")
        return small_timm(name, self._tiny, **kwargs)


@contextlib.contextmanager
def _small_timm_trunks(tiny: TinyConfig) -> Iterator[None]:
    from open_clip import timm_model

    real = timm_model.timm
    timm_model.timm = _SmallTimm(real, tiny)
    try:
        yield
    finally:
        timm_model.timm = real


def shrink_config(arch: str, tiny: TinyConfig | None = None) -> dict[str, Any]:
    """The ``embed_dim``, ``vision_cfg`` and ``text_cfg`` (and ``multimodal_cfg``) of open_clip's
    config `arch` with `tiny`'s sizes; the keyword arguments `small_open_clip` passes to
    ``open_clip.create_model``. The text tower keeps its context length and vocabulary (its
    tokenizer's).

    Example:
        >>> shrink_config("ViT-B-16")["vision_cfg"]["width"]
        64
    """
    import open_clip

    tiny = tiny or TinyConfig()
    config = open_clip.get_model_config(arch)
    if config is None:
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=1)
        raise ValueError(f"{arch!r} is not an open_clip config" + (f"; did you mean {close[0]!r}?" if close else ""))
    vision, text = copy.deepcopy(config["vision_cfg"]), copy.deepcopy(config.get("text_cfg", {}))
    embed_dim = tiny.embed_dim
    if vision.get("timm_model_name"):
        vision.update(timm_model_pretrained=False, image_size=GRID * tiny.patch_size)
        if vision.get("timm_proj") == "none":  # the trunk's pooled width is the embedding width (SigLIP)
            embed_dim = tiny.width
    elif isinstance(vision.get("layers"), (list, tuple)):  # ModifiedResNet: four stages, stride 32
        vision.update(layers=[1, 1, 1, 1], width=tiny.width, head_width=tiny.head_width, image_size=32 * GRID)
    else:
        vision.update(layers=tiny.layers, width=tiny.width, head_width=tiny.head_width,
                      patch_size=tiny.patch_size, image_size=GRID * tiny.patch_size)
        vision.pop("attn_pooler_heads", None)
    if text.get("hf_model_name"):
        raise UnsupportedModelError(f"{arch}: its text tower is the Hugging Face model {text['hf_model_name']!r}, "
                                    "which cannot be shrunk without its configuration")
    text.update(width=tiny.text_width, heads=tiny.text_heads, layers=tiny.text_layers)
    shrunk = {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text}
    if "multimodal_cfg" in config:
        shrunk["multimodal_cfg"] = {**config["multimodal_cfg"], "width": tiny.text_width,
                                    "heads": tiny.text_heads, "layers": tiny.text_layers}
    return shrunk


def small_open_clip(arch: str, tiny: TinyConfig | None = None) -> nn.Module:
    """open_clip's config `arch` built at `tiny`'s sizes (`shrink_config`) with random weights, in
    eval mode, offline.

    Example:
        >>> clip = small_open_clip("EVA02-B-16")
        >>> type(clip.visual.trunk).__name__, len(clip.visual.trunk.blocks)
        ('Eva', 2)
    """
    import open_clip

    from clipadapt.backbones.open_clip import quiet_root_logger

    tiny = tiny or TinyConfig()
    try:
        with _small_timm_trunks(tiny), quiet_root_logger():
            model = open_clip.create_model(arch, pretrained=None, **shrink_config(arch, tiny))
    except UnsupportedModelError as error:
        message = str(error)
        raise UnsupportedModelError(message if message.startswith(arch) else f"{arch}: {message}") from None
    return model.eval()


__all__ = ["shrink_config", "small_open_clip", "small_timm", "timm_sizes"]
