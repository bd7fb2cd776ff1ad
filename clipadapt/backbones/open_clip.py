"""open_clip 3.x: ``CLIP`` (text blocks on the model itself), ``CustomTextCLIP`` (``model.text``),
or a bare ``VisionTransformer`` / ``TextTransformer``. Blocks are ``ResidualAttentionBlock``
(``nn.MultiheadAttention``, batch-first) or ``CustomResidualAttentionBlock`` (open_clip's own
``Attention``); both end their attention branch with the layer scale ``ls_1``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from clipadapt.backbones.base import BackboneSpec, Block, Tower, has
from clipadapt.registry import register_backbone


def mha_attend(attn: nn.Module, seq_first: bool):
    """A batch-first ``(N, L, D) -> (N, L, D)`` call of a block's own attention module.

    It calls ``forward`` directly: the hooks the engine places on the module (``attn_out``,
    ``pre_mlp``) belong to the block's own call, not to an adapter re-using the attention.
    """
    if isinstance(attn, nn.MultiheadAttention):
        if seq_first or not attn.batch_first:

            def attend(x: torch.Tensor) -> torch.Tensor:
                x = x.transpose(0, 1)
                return attn.forward(x, x, x, need_weights=False)[0].transpose(0, 1)

        else:

            def attend(x: torch.Tensor) -> torch.Tensor:
                return attn.forward(x, x, x, need_weights=False)[0]

        return attend
    return lambda x: attn.forward(x)


def resblock_towers(model: nn.Module, make_block) -> dict[str, Tower]:
    """Towers of an open_clip/OpenAI-style model: ``visual.transformer.resblocks`` and the text
    ``transformer.resblocks`` on the model itself (or on ``model.text``)."""

    def tower(name: str, root: nn.Module, transformer: nn.Module) -> Tower:
        seq_first = not getattr(transformer, "batch_first", False)
        blocks = [make_block(b, seq_first) for b in transformer.resblocks]
        width = transformer.width if hasattr(transformer, "width") else blocks[0].ln_1.weight.shape[0]
        if name == "visual":
            grid = getattr(root, "grid_size", None)
            if grid is None:  # OpenAI clip's VisionTransformer
                patch = root.conv1.kernel_size[0]
                grid = (root.input_resolution // patch,) * 2
            return Tower(name, root, blocks, width, seq_first, 0, 1, tuple(grid))
        return Tower(name, root, blocks, width, seq_first)

    towers = {}
    if is_vision(model):
        return {"visual": tower("visual", model, model.transformer)}
    if has(model, "visual") and is_vision(model.visual):
        towers["visual"] = tower("visual", model.visual, model.visual.transformer)
    if has(model, "token_embedding", "transformer") and has(model.transformer, "resblocks"):
        towers["text"] = tower("text", model, model.transformer)
    elif has(model, "text") and has(model.text, "token_embedding", "transformer"):
        towers["text"] = tower("text", model.text, model.text.transformer)
    return towers


def is_vision(module: nn.Module) -> bool:
    return has(module, "conv1", "class_embedding", "transformer") and has(module.transformer, "resblocks")


def first_block(model: nn.Module) -> nn.Module | None:
    for root in (model, getattr(model, "visual", None), getattr(model, "text", None)):
        transformer = getattr(root, "transformer", None)
        if transformer is not None and has(transformer, "resblocks") and len(transformer.resblocks):
            return transformer.resblocks[0]
    return None


def open_clip_block(block: nn.Module, seq_first: bool) -> Block:
    return Block(
        module=block,
        ln_1=block.ln_1,
        attn=block.attn,
        attn_end=block.ls_1,
        ln_2=block.ln_2,
        mlp=block.mlp,
        attend=mha_attend(block.attn, seq_first),
    )


@register_backbone("open_clip")
class OpenCLIPSpec(BackboneSpec):
    """open_clip CLIP, CustomTextCLIP, VisionTransformer or TextTransformer (batch-first)."""

    family = "open_clip"
    looks_for = (
        "visual.transformer.resblocks and/or transformer.resblocks (or text.transformer.resblocks) "
        "whose blocks have ln_1, attn, ls_1, ln_2, mlp, ls_2"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        block = first_block(model)
        return block is not None and has(block, "ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2")

    @classmethod
    def towers(cls, model: nn.Module) -> dict[str, Tower]:
        return resblock_towers(model, open_clip_block)
