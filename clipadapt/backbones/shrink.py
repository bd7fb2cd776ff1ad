"""Any open_clip config, or timm model name, built small: few blocks, narrow, random weights, offline.

`small_open_clip` keeps everything that makes a config what it is (the model class, the timm
trunk and its pooling, class and register tokens, the text tower's pooling, mask and vocabulary,
QuickGELU, the logit bias) and replaces only the sizes by those of a `TinyConfig`: block counts,
widths, heads, and the image side (a 4x4 patch grid). A timm trunk is built by
``timm.create_model`` with ``depth``, ``embed_dim``, ``num_heads``, ``img_size`` and
``patch_size`` overridden; ViTamin's convolutional stem is made as narrow (one block a stage,
ending at the tiny width); a hybrid trunk whose stem fixes the width otherwise (MobileCLIP-B)
keeps its width and stem and gets the depth and an image side of four stem strides instead.

Example:
    >>> clip = small_open_clip("ViT-B-16-SigLIP2")          # CustomTextCLIP, 2+2 blocks, width 64
    >>> clip.encode_image(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import tempfile
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
    module = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    if module == "vitamin":  # its convolutional stem (stride 16) sets the token width: make it as narrow
        sizes = dict(depth=tiny.layers, embed_dim=tiny.width, num_heads=tiny.heads, img_size=HYBRID_IMAGE)
        return timm.create_model(name, pretrained=False, **{**kwargs, **sizes, "embed_cfg": _small_vitamin_stem(tiny)})
    try:
        return timm.create_model(name, pretrained=False, **{**kwargs, **timm_sizes(tiny)})
    except AssertionError:
        # a hybrid stem (ViTamin, MobileCLIP-B) fixes the token width: keep it, cut the depth
        return timm.create_model(name, pretrained=False, **{**kwargs, "depth": tiny.layers, "img_size": HYBRID_IMAGE})
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        raise UnsupportedModelError(
            f"{name!r} is a timm {module} model, not a ViT or Eva: it takes no depth, embed_dim and num_heads "
            "to be built small, and clipadapt covers transformers of patch tokens only") from None


def _small_vitamin_stem(tiny: TinyConfig):
    """ViTamin's stem (a conv stem, two MBConv stages, a strided conv; stride 16) ending at `tiny`'s
    width, one block a stage, so that its trunk is as small as a ViT's."""
    from timm.models.vitamin import VitCfg, VitConvCfg

    narrow = max(tiny.width // 4, 8)
    return VitCfg(embed_dim=(narrow, 2 * narrow, tiny.width), depths=(1, 1, 1), stem_width=narrow,
                  conv_cfg=VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6), head_type="1d")


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


def shrink_config(arch: str, tiny: TinyConfig | None = None, own_tokens: bool = True,
                  hf_text: str | None = None) -> dict[str, Any]:
    """The ``embed_dim``, ``vision_cfg`` and ``text_cfg`` (and ``multimodal_cfg``) of open_clip's
    config `arch` with `tiny`'s sizes; the keyword arguments `small_open_clip` passes to
    ``open_clip.create_model``. The text tower keeps its context length and vocabulary (its
    tokenizer's), or with ``own_tokens=False`` takes `tiny`'s (for a tokenizer other than the
    config's, e.g. OpenAI's BPE on a random-weight SigLIP). A text tower that is a Hugging Face
    model becomes the one whose ``config.json`` lies in the directory `hf_text`
    (`small_hf_text_config`), random weights; without `hf_text` it is refused.

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
        name = text["hf_model_name"]
        if hf_text is None:
            raise UnsupportedModelError(f"{arch}: its text tower is the Hugging Face model {name!r}, which is not built small; "
                                        f"build {arch} at full size (a recipe without model.config) with {name}'s config.json "
                                        f"at hand (`hf download {name} config.json`, read from the cache offline)")
        text.update(hf_model_name=hf_text, hf_model_pretrained=False)
    else:
        text.update(width=tiny.text_width, heads=tiny.text_heads, layers=tiny.text_layers)
    if not own_tokens:
        text.update(context_length=tiny.context_length, vocab_size=tiny.vocab_size)
    shrunk = {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text}
    if "multimodal_cfg" in config:
        shrunk["multimodal_cfg"] = {**config["multimodal_cfg"], "width": tiny.text_width,
                                    "heads": tiny.text_heads, "layers": tiny.text_layers,
                                    **({} if own_tokens else {"vocab_size": tiny.vocab_size, "context_length":
                                        config["multimodal_cfg"]["context_length"] - config["text_cfg"]["context_length"]
                                        + tiny.context_length})}
    return shrunk


def small_image_size(arch: str, tiny: TinyConfig | None = None) -> int:
    """The image side in `shrink_config`'s ``vision_cfg`` of `arch` at `tiny`'s sizes (what a
    recipe's preprocessing needs before anything is built; no text tower is looked at).

    Example:
        >>> small_image_size("ViT-B-16-SigLIP")
        32
    """
    return shrink_config(arch, tiny, hf_text="(not built: only the visual sizes are read)")["vision_cfg"]["image_size"]


# open_clip's Hugging Face text models (text_cfg.hf_model_name) by the word in their name that
# gives their transformers model type; open_clip.hf_configs.arch_dict names each type's size keys
HF_TEXT_TYPES = (("xlm-roberta", "xlm-roberta"), ("roberta", "roberta"), ("mt5", "mt5"), ("nllb", "m2m_100"),
                 ("bert", "bert"))


def small_hf_text_config(name: str, tiny: TinyConfig | None = None):
    """A random-weight stand-in for the Hugging Face text model `name` at `tiny`'s text sizes: the
    ``transformers`` config of its model type (read from its name: `HF_TEXT_TYPES`) with the
    width, heads and layers that open_clip's ``arch_dict`` names for that type, `tiny`'s
    vocabulary, and the type's other defaults; an unknown name is refused in one line.

    Example:
        >>> small_hf_text_config("xlm-roberta-base").model_type, small_hf_text_config("xlm-roberta-base").hidden_size
        ('xlm-roberta', 64)
    """
    from open_clip.hf_configs import arch_dict
    from transformers import AutoConfig

    tiny = tiny or TinyConfig()
    model_type = next((kind for word, kind in HF_TEXT_TYPES if word in name.lower()), None)
    if model_type is None:
        raise UnsupportedModelError(f"the Hugging Face text model {name!r} is not built small (its type is not one of "
                                    f"{', '.join(word for word, _ in HF_TEXT_TYPES)}): give its config.json")
    keys = arch_dict[model_type]["config_names"]
    sizes = {keys["width"]: tiny.text_width, keys["heads"]: tiny.text_heads, keys["layers"]: tiny.text_layers,
             "vocab_size": tiny.vocab_size}
    if model_type == "m2m_100":  # an encoder-decoder: open_clip keeps the encoder; a small decoder too
        sizes.update(decoder_layers=1, decoder_attention_heads=tiny.text_heads, encoder_ffn_dim=tiny.text_mlp_width,
                     decoder_ffn_dim=tiny.text_mlp_width)
    elif model_type == "mt5":
        sizes.update(d_ff=tiny.text_mlp_width, d_kv=tiny.text_width // tiny.text_heads, num_decoder_layers=1)
    else:
        sizes.update(intermediate_size=tiny.text_mlp_width)
    return AutoConfig.for_model(model_type, **sizes)


def small_open_clip(arch: str, tiny: TinyConfig | None = None, own_tokens: bool = True) -> nn.Module:
    """open_clip's config `arch` built at `tiny`'s sizes (`shrink_config`, `own_tokens` as there)
    with random weights, in eval mode, offline. A Hugging Face text tower (RoBERTa, XLM-R, mT5,
    NLLB) is a random-weight model of its type at the tiny text sizes (`small_hf_text_config`).

    Example:
        >>> clip = small_open_clip("EVA02-B-16")
        >>> type(clip.visual.trunk).__name__, len(clip.visual.trunk.blocks)
        ('Eva', 2)
    """
    import open_clip

    from clipadapt.backbones.open_clip import quiet_root_logger

    tiny = tiny or TinyConfig()
    name = (open_clip.get_model_config(arch) or {}).get("text_cfg", {}).get("hf_model_name")
    try:
        with tempfile.TemporaryDirectory() as folder, _small_timm_trunks(tiny), quiet_root_logger():
            if name:
                small_hf_text_config(name, tiny).save_pretrained(folder)
            sizes = shrink_config(arch, tiny, own_tokens, hf_text=folder if name else None)
            model = open_clip.create_model(arch, pretrained=None, **sizes)
    except UnsupportedModelError as error:
        message = str(error)
        raise UnsupportedModelError(message if message.startswith(arch) else f"{arch}: {message}") from None
    return model.eval()


__all__ = ["shrink_config", "small_hf_text_config", "small_image_size", "small_open_clip", "small_timm", "timm_sizes"]
