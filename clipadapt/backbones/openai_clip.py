"""OpenAI's ``clip`` package (and ``clip-anytorch``, ``pip install 'clipadapt[openai]'``): the open_clip
layout without layer scales, sequence-first ``(L, N, D)`` tensors, and the attention branch
ending at ``attn`` itself (``nn.MultiheadAttention``, whose output is a tuple)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch.nn as nn

from clipadapt.backbones.base import BackboneSpec, Block, Tower, get_tower, has, import_family, load_state_file
from clipadapt.backbones.encoders import TextEncoder, VisualEncoder
from clipadapt.backbones.open_clip import ResblockText, first_block, resblock, resblock_towers, resblock_visual
from clipadapt.backbones.tiny import TinyConfig
from clipadapt.registry import register_backbone


def openai_block(block: nn.Module, seq_first: bool = True) -> Block:
    return resblock(block, seq_first, block.attn)


def clip_package():
    """OpenAI's ``clip`` package (its import warns about ``pkg_resources``, which is not ours to fix)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_family("clip", "openai_clip", OpenAICLIPSpec.extra)


@register_backbone("openai_clip")
class OpenAICLIPSpec(BackboneSpec):
    """OpenAI's clip package / clip-anytorch (sequence-first, no layer scale)."""

    family = "openai_clip"
    extra = "openai"
    looks_for = (
        "visual.transformer.resblocks and/or transformer.resblocks whose blocks have ln_1, "
        "an nn.MultiheadAttention attn, ln_2 and mlp, and no layer scale"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        block = first_block(model)
        return (
            block is not None
            and has(block, "ln_1", "attn", "ln_2", "mlp")
            and not has(block, "ls_1")
            and isinstance(block.attn, nn.MultiheadAttention)
        )

    @classmethod
    def towers(cls, model: nn.Module) -> dict[str, Tower]:
        return resblock_towers(model, openai_block)

    @classmethod
    def visual(cls, model: nn.Module) -> VisualEncoder:
        return resblock_visual(model, get_tower(model, "visual"))

    @classmethod
    def text(cls, model: nn.Module) -> TextEncoder:
        return ResblockText(get_tower(model, "text"))

    @classmethod
    def build(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> nn.Module:
        """``clip.model.CLIP`` of `tiny`'s sizes, or ``clip.load(arch)`` (``weights: openai``, where
        the download is allowed) / a local OpenAI checkpoint file.

        Example:
            >>> OpenAICLIPSpec.build(None, tiny=TinyConfig())   # a random-weight tiny CLIP
        """
        clip = clip_package()
        model_module = __import__("clip.model", fromlist=["CLIP"])
        if tiny is not None:
            # OpenAI's CLIP fixes 64-wide visual heads; the tiny config's head count is kept instead
            model = model_module.CLIP(tiny.embed_dim, tiny.image_size, tiny.layers, tiny.width, tiny.patch_size,
                                      tiny.context_length, tiny.vocab_size, tiny.text_width, tiny.text_heads, tiny.text_layers)
            model.visual = model_module.VisionTransformer(tiny.image_size, tiny.patch_size, tiny.width, tiny.layers,
                                                          tiny.heads, tiny.embed_dim)
            if tiny.mlp_ratio != 4.0:
                raise ValueError(f"model.config.mlp_ratio {tiny.mlp_ratio}: OpenAI's clip builds MLPs of ratio 4 only")
            return load_state_file(model, weights) if weights else model.float()
        if weights is None:
            raise ValueError("model.family openai_clip builds named models with their weights only; give "
                             "model.weights (openai or a local file) or a tiny model.config")
        if weights != "openai" and not Path(weights).is_file():
            raise FileNotFoundError(f"model.weights {weights!r} does not exist (accepted: openai or a local OpenAI checkpoint)")
        name = arch if weights == "openai" else weights
        if weights == "openai" and arch not in clip.available_models():
            raise ValueError(f"model.arch {arch!r} is not an OpenAI clip model; accepted: {', '.join(clip.available_models())}")
        return clip.load(name, device="cpu", jit=False)[0].float()
