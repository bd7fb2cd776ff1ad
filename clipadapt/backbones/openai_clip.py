"""OpenAI's ``clip`` package (and ``clip-anytorch``): the open_clip layout without layer scales,
sequence-first ``(L, N, D)`` tensors, and the attention branch ending at ``attn`` itself
(``nn.MultiheadAttention``, whose output is a tuple)."""

from __future__ import annotations

import torch.nn as nn

from clipadapt.backbones.base import BackboneSpec, Block, Tower, has
from clipadapt.backbones.open_clip import first_block, mha_attend, resblock_towers
from clipadapt.registry import register_backbone


def openai_block(block: nn.Module, seq_first: bool) -> Block:
    return Block(
        module=block,
        ln_1=block.ln_1,
        attn=block.attn,
        attn_end=block.attn,
        ln_2=block.ln_2,
        mlp=block.mlp,
        attend=mha_attend(block.attn, seq_first),
    )


@register_backbone("openai_clip")
class OpenAICLIPSpec(BackboneSpec):
    """OpenAI's clip package / clip-anytorch (sequence-first, no layer scale)."""

    family = "openai_clip"
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
