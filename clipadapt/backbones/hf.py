"""Hugging Face ``transformers``: ``CLIPModel`` (both towers), ``CLIPVisionModel`` and
``CLIPTextModel`` (one each), or their inner ``CLIP*Transformer``. Blocks are
``CLIPEncoderLayer``: ``layer_norm1``, ``self_attn`` (returns a tuple), ``layer_norm2``, ``mlp``;
tensors are batch-first."""

from __future__ import annotations

import torch.nn as nn

from clipadapt.backbones.base import BackboneSpec, Block, Tower, has
from clipadapt.registry import register_backbone


def hf_block(layer: nn.Module) -> Block:
    attn = layer.self_attn
    return Block(
        module=layer,
        ln_1=layer.layer_norm1,
        attn=attn,
        attn_end=attn,
        ln_2=layer.layer_norm2,
        mlp=layer.mlp,
        attend=lambda x: attn.forward(hidden_states=x)[0],  # forward: skip the engine's hooks on attn
    )


def _is_layers(encoder) -> bool:
    layers = getattr(encoder, "layers", None)
    return layers is not None and len(layers) > 0 and has(layers[0], "layer_norm1", "self_attn", "layer_norm2", "mlp")


def _transformers(model: nn.Module) -> dict[str, nn.Module]:
    """Inner vision/text transformers, keyed by tower."""
    found = {}
    for tower, attr in (("visual", "vision_model"), ("text", "text_model")):
        inner = getattr(model, attr, None)
        if inner is not None and _is_layers(getattr(inner, "encoder", None)):
            found[tower] = inner
    if not found and _is_layers(getattr(model, "encoder", None)) and has(model, "embeddings"):
        found["visual" if has(model.embeddings, "patch_embedding") else "text"] = model
    return found


@register_backbone("hf")
class HFCLIPSpec(BackboneSpec):
    """Hugging Face CLIPModel, CLIPVisionModel, CLIPTextModel."""

    family = "hf"
    looks_for = "vision_model.encoder.layers and/or text_model.encoder.layers of CLIPEncoderLayer-like blocks"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return bool(_transformers(model))

    @classmethod
    def towers(cls, model: nn.Module) -> dict[str, Tower]:
        towers = {}
        for name, inner in _transformers(model).items():
            blocks = [hf_block(layer) for layer in inner.encoder.layers]
            width = blocks[0].ln_1.weight.shape[0]
            if name == "visual":
                emb = inner.embeddings
                side = emb.image_size // emb.patch_size
                towers[name] = Tower(name, inner, blocks, width, False, 0, 1, (side, side))
            else:
                towers[name] = Tower(name, inner, blocks, width)
        return towers
