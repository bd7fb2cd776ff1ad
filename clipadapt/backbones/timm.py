"""timm ``VisionTransformer`` (e.g. ``vit_base_patch16_clip_224``): ``blocks`` of pre-norm
``Block``s with ``norm1``, ``attn`` (fused qkv), ``ls1``, ``drop_path1``, ``norm2``, ``mlp``.
The attention branch ends at ``drop_path1`` (after the layer scale). Visual tower only."""

from __future__ import annotations

import torch.nn as nn

from clipadapt.backbones.base import BackboneSpec, Block, Tower, has
from clipadapt.registry import register_backbone


def timm_block(block: nn.Module) -> Block:
    attn = block.attn
    return Block(
        module=block,
        ln_1=block.norm1,
        attn=attn,
        attn_end=block.drop_path1,
        ln_2=block.norm2,
        mlp=block.mlp,
        attend=lambda x: attn.forward(x),  # forward: skip hooks placed on attn
    )


@register_backbone("timm")
class TimmViTSpec(BackboneSpec):
    """timm VisionTransformer (visual tower only)."""

    family = "timm"
    looks_for = "blocks (norm1, attn, ls1, drop_path1, norm2, mlp), patch_embed.grid_size and num_prefix_tokens"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        blocks = getattr(model, "blocks", None)
        return (
            has(model, "patch_embed", "num_prefix_tokens")
            and blocks is not None
            and len(blocks) > 0
            and has(blocks[0], "norm1", "attn", "ls1", "drop_path1", "norm2", "mlp")
        )

    @classmethod
    def towers(cls, model: nn.Module) -> dict[str, Tower]:
        blocks = [timm_block(b) for b in model.blocks]
        prefix = model.num_prefix_tokens
        cls_index = 0 if getattr(model, "cls_token", None) is not None else None
        grid = tuple(model.patch_embed.grid_size)
        return {"visual": Tower("visual", model, blocks, model.embed_dim, False, cls_index, prefix, grid)}
