"""timm vision transformers: ``VisionTransformer`` (e.g. ``vit_base_patch16_clip_224``, SigLIP's
``vit_base_patch16_siglip_224``) and ``Eva`` (``eva02_*``, ``vit_pe_core_*``; see
`clipadapt.backbones.eva`), as a bare model or as the trunk of open_clip's ``TimmModel``.

``VisionTransformer`` blocks are pre-norm ``Block``s with ``norm1``, ``attn`` (fused qkv), ``ls1``,
``drop_path1``, ``norm2``, ``mlp``; the attention branch ends at ``drop_path1`` (after the layer
scale). Prefix tokens (a class token where there is one, then register tokens) come before the
patch grid, ``num_prefix_tokens`` of them. After the blocks come the final ``norm``, the model's
pooling (the class token, an average, or SigLIP's attention pool ``attn_pool``, the MAP head),
``fc_norm`` and the head. Visual tower only: recipes on bare timm models use visual heads (``vc``)
and no text.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn

from clipadapt.backbones.base import BackboneSpec, Block, Tower, get_tower, has, load_state_file
from clipadapt.backbones.encoders import VisualEncoder
from clipadapt.backbones.eva import eva_block_maker, is_eva_block
from clipadapt.backbones.preprocess import Preprocess, from_config, side
from clipadapt.backbones.tiny import TinyConfig
from clipadapt.registry import register_backbone

RELATIVE_POSITION_REFUSAL = ("its attention adds a bias by relative patch position, and tokens along time "
                             "have none; inject aim with site=['attn_out', 'mlp_parallel']")


def timm_block(block: nn.Module, relative_position: bool = False) -> Block:
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
        refusals={"attend": RELATIVE_POSITION_REFUSAL} if relative_position else {},
    )


def is_vit_block(block: nn.Module) -> bool:
    return has(block, "norm1", "attn", "ls1", "drop_path1", "norm2", "mlp")


def is_timm_vit(model: nn.Module) -> bool:
    """Whether `model` is a timm ViT-like model this spec covers (``VisionTransformer`` or ``Eva``
    blocks after a patch embedding), by structure."""
    blocks = getattr(model, "blocks", None)
    return (
        has(model, "patch_embed", "num_prefix_tokens", "norm", "fc_norm")
        and isinstance(blocks, nn.Sequential | nn.ModuleList)
        and len(blocks) > 0
        and (is_vit_block(blocks[0]) or is_eva_block(blocks[0]))
    )


def block_maker(model: nn.Module):
    """The function that turns a block of `model` into a `Block`."""
    if is_eva_block(model.blocks[0]):
        return eva_block_maker(model)
    relative = getattr(model.blocks[0].attn, "rel_pos", None) is not None or getattr(model, "shared_rel_pos", None) is not None
    return functools.partial(timm_block, relative_position=relative)


def timm_tower(model: nn.Module, root: nn.Module | None = None) -> Tower:
    """The visual `Tower` of a timm ViT or Eva `model`; `root` is the tower's module (the model
    itself, or open_clip's ``TimmModel`` around it)."""
    make_block = block_maker(model)
    cls_index = 0 if getattr(model, "cls_token", None) is not None else None
    size = model.patch_embed.img_size
    return Tower("visual", root if root is not None else model, [make_block(b) for b in model.blocks], model.embed_dim,
                 False, cls_index, int(model.num_prefix_tokens), tuple(model.patch_embed.grid_size), make_block=make_block,
                 image_size=int(size[0] if isinstance(size, (tuple, list)) else size))


def pooled_feature(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """``(final_norm, pooled_at)`` of a timm ViT or Eva `model` for `VisualEncoder`.

    A model that pools by the class token: the class token of the last block, normalised by
    ``norm`` (``fc_norm`` where ``norm`` is an identity). Any other pooling (SigLIP's and PE-Core's
    attention pool, an average): the pooling's output, the input of ``fc_norm``, then ``fc_norm``.
    A model without pooling (``global_pool=''``, whose caller pools the tokens) has only its class
    token, if any.
    """
    class_token_norm = model.norm if not isinstance(model.norm, nn.Identity) else model.fc_norm
    pool = getattr(model, "global_pool", None)
    if pool == "token" and getattr(model, "cls_token", None) is not None:
        return class_token_norm, None
    if not pool and getattr(model, "attn_pool", None) is None:  # no pooling: the model returns its tokens
        return class_token_norm, None
    return model.fc_norm, model.fc_norm


def clip_like_init(model: nn.Module) -> nn.Module:
    """Give a random-weight ``VisionTransformer`` the random weights a random-weight CLIP's visual
    tower has (PyTorch's default ``Linear`` init; class token, position embeddings and output
    projection of std ``width ** -0.5``) instead of timm's from-scratch init (std 0.02, class
    token ~1e-6), under which a frozen tiny ViT's class token hardly depends on the image. A trunk
    with no norm before its first block (SigLIP, EVA) gets a variance-preserving patch embedding
    (std ``fan_in ** -0.5``), so that its tokens start at the scale CLIP's ``ln_pre`` gives them;
    at PyTorch's default scale the M2-CLIP of ``clipadapt run quickstart_siglip`` (20
    epochs) ended within 5 points of its frame-average baseline."""
    scale = model.embed_dim ** -0.5
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    with torch.no_grad():
        for parameter in (model.cls_token, model.pos_embed):
            if parameter is not None:
                parameter.normal_(0.0, scale)
        proj = getattr(model.patch_embed, "proj", None)
        if isinstance(getattr(model, "norm_pre", None), nn.Identity) and isinstance(proj, nn.Conv2d):
            proj.weight.normal_(0.0, proj.weight[0].numel() ** -0.5)
        if isinstance(model.head, nn.Linear):
            model.head.weight.normal_(0.0, scale)
            model.head.bias.zero_()
    return model


@register_backbone("timm")
class TimmViTSpec(BackboneSpec):
    """timm VisionTransformer or Eva (visual tower only)."""

    family = "timm"
    looks_for = ("blocks of VisionTransformer (norm1, attn, ls1, drop_path1, norm2, mlp) or Eva (norm1, attn, "
                 "drop_path1, norm2, mlp, drop_path2) layout, patch_embed.grid_size and num_prefix_tokens")

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return is_timm_vit(model)

    @classmethod
    def towers(cls, model: nn.Module) -> dict[str, Tower]:
        return {"visual": timm_tower(model)}

    @classmethod
    def visual(cls, model: nn.Module) -> VisualEncoder:
        """Frame embeddings are the model's output (``forward_head`` of ``forward_features``); the
        pooled feature and its norm are those of `pooled_feature`."""
        tower = get_tower(model, "visual")
        head = getattr(model, "head", None)
        embed_dim = head.out_features if isinstance(head, nn.Linear) else model.num_features
        final_norm, pooled_at = pooled_feature(model)
        return VisualEncoder(tower, model, final_norm, embed_dim, pooled_at=pooled_at)

    @classmethod
    def preprocess(cls, model: nn.Module) -> Preprocess:
        """timm's ``pretrained_cfg`` on the model (as ``timm.data.resolve_data_config`` reads it); a
        model without one (built from a config) gets CLIP's values, stated."""
        config = dict(getattr(model, "pretrained_cfg", None) or {})
        size = side(config.get("input_size")) or get_tower(model, "visual").image_size
        return from_config(config, size, "timm's pretrained_cfg on the model")

    @classmethod
    def preprocess_for(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> Preprocess:
        """timm's ``pretrained_cfg`` of `arch` (``timm.models.get_pretrained_cfg``, no download)."""
        import timm

        config = timm.models.get_pretrained_cfg(arch) if tiny is None and arch else None
        if config is None:
            return super().preprocess_for(arch, weights, tiny)
        config = config.to_dict()
        return from_config(config, side(config.get("input_size")), f"timm's pretrained_cfg of {arch}")

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
