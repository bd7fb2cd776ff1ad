"""timm ``VisionTransformer`` (e.g. ``vit_base_patch16_clip_224``): ``blocks`` of pre-norm
``Block``s with ``norm1``, ``attn`` (fused qkv), ``ls1``, ``drop_path1``, ``norm2``, ``mlp``.
The attention branch ends at ``drop_path1`` (after the layer scale). Visual tower only: recipes
on timm use visual heads (``vc``) and no text."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from clipadapt.backbones.base import BackboneSpec, Block, Tower, get_tower, has, load_state_file
from clipadapt.backbones.encoders import VisualEncoder
from clipadapt.backbones.tiny import TinyConfig
from clipadapt.registry import register_backbone


def timm_block(block: nn.Module) -> Block:
    attn = block.attn
    fused = isinstance(getattr(attn, "qkv", None), nn.Linear) and isinstance(getattr(attn, "proj", None), nn.Linear)
    return Block(
        module=block,
        ln_1=block.norm1,
        attn=attn,
        attn_end=block.drop_path1,
        ln_2=block.norm2,
        mlp=block.mlp,
        attend=attn.forward,  # forward: skip hooks placed on attn
        projections=((attn.qkv, "weight", ("q", "k", "v")), (attn.proj, "weight", ("o",))) if fused else (),
    )


def clip_like_init(model: nn.Module) -> nn.Module:
    """Give a random-weight ``VisionTransformer`` the random weights a random-weight CLIP's visual
    tower has (PyTorch's default ``Linear`` init; class token, position embeddings and output
    projection of std ``width ** -0.5``) instead of timm's from-scratch init (std 0.02, class
    token ~1e-6), under which a frozen tiny ViT's class token hardly depends on the image."""
    scale = model.embed_dim ** -0.5
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    with torch.no_grad():
        for parameter in (model.cls_token, model.pos_embed):
            if parameter is not None:
                parameter.normal_(0.0, scale)
        if isinstance(model.head, nn.Linear):
            model.head.weight.normal_(0.0, scale)
            model.head.bias.zero_()
    return model


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
        size = model.patch_embed.img_size
        return {"visual": Tower("visual", model, blocks, model.embed_dim, False, cls_index, prefix, grid,
                                make_block=timm_block, image_size=int(size[0] if isinstance(size, (tuple, list)) else size))}

    @classmethod
    def visual(cls, model: nn.Module) -> VisualEncoder:
        """Frame embeddings are the model's output (``forward_head`` of ``forward_features``); the
        class token's final norm is ``norm`` (``fc_norm`` where ``norm`` is an identity)."""
        tower = get_tower(model, "visual")
        norm = model.norm if not isinstance(model.norm, nn.Identity) else model.fc_norm
        head = getattr(model, "head", None)
        embed_dim = head.out_features if isinstance(head, nn.Linear) else model.num_features
        return VisualEncoder(tower, model, norm, embed_dim)

    @classmethod
    def set_grad_checkpointing(cls, model: nn.Module, enable: bool = True) -> nn.Module:
        model.set_grad_checkpointing(enable)  # one block per checkpoint, use_reentrant=False
        return model

    @classmethod
    def build(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> nn.Module:
        """A ``VisionTransformer`` of `tiny`'s visual sizes (CLIP-like: pre-norm, class-token
        pooling, a linear head to ``embed_dim``), or ``timm.create_model(arch)``: ``weights:
        pretrained`` for timm's weights, a local file, or ``null`` for random ones.

        Example:
            >>> TimmViTSpec.build(None, tiny=TinyConfig())   # a random-weight tiny ViT
        """
        import timm
        from timm.models.vision_transformer import VisionTransformer

        if tiny is not None:
            model = VisionTransformer(img_size=tiny.image_size, patch_size=tiny.patch_size, embed_dim=tiny.width,
                                      depth=tiny.layers, num_heads=tiny.heads, mlp_ratio=tiny.mlp_ratio,
                                      num_classes=tiny.embed_dim, pre_norm=True, global_pool="token")
            return load_state_file(model, weights) if weights else clip_like_init(model)
        if not arch or not timm.is_model(arch.split(".")[0]):
            raise ValueError(f"model.arch {arch!r} is not a timm model name (e.g. vit_base_patch16_clip_224.openai)")
        if weights not in (None, "pretrained") and not Path(weights).is_file():
            raise FileNotFoundError(f"model.weights {weights!r} does not exist (accepted: pretrained, null or a local file)")
        checkpoint = weights if weights not in (None, "pretrained") else None
        return timm.create_model(arch, pretrained=weights == "pretrained", checkpoint_path=checkpoint, num_classes=0)
