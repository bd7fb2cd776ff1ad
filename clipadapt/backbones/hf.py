"""Hugging Face ``transformers`` (``pip install 'clipadapt[hf]'``): ``CLIPModel`` (both towers),
``CLIPVisionModel`` and ``CLIPTextModel`` (one each), their inner transformers, and SigLIP's
``SiglipModel`` / ``SiglipVisionModel``. Blocks are ``CLIPEncoderLayer``-like: ``layer_norm1``,
``self_attn`` (returns a tuple; ``q_proj``/``k_proj``/``v_proj``/``out_proj``), ``layer_norm2``,
``mlp``; tensors are batch-first.

SigLIP's visual tower fits (it has no class token: heads that read one refuse it); its text
tower (no causal mask, pooling at the last position through a ``head``) is refused by the text
encoder.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from clipadapt.backbones.base import BackboneSpec, Block, Tower, UnsupportedModelError, first_tensor, get_tower, has, import_family, load_state_file
from clipadapt.backbones.encoders import TextEncoder, VisualEncoder, parameters_of, project_with
from clipadapt.backbones.tiny import TinyConfig
from clipadapt.registry import register_backbone

BOS, EOS = 49406, 49407  # OpenAI BPE's start- and end-of-text ids


def hf_attend(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return attn.forward(hidden_states=x, attention_mask=None)[0]  # forward: skip the engine's hooks on attn


def hf_cross_attend(attn: nn.Module, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """The attention's own projections, queries from `query` ``(N, Lq, D)``, keys and values from
    `memory` ``(N, Lm, D)``, scaled dot-product attention with its ``scale``, ``out_proj``."""
    heads = attn.num_heads
    q = rearrange(attn.q_proj(query), "n l (h d) -> n h l d", h=heads)
    k = rearrange(attn.k_proj(memory), "n l (h d) -> n h l d", h=heads)
    v = rearrange(attn.v_proj(memory), "n l (h d) -> n h l d", h=heads)
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    return attn.out_proj(rearrange(out, "n h l d -> n l (h d)"))


def hf_block(layer: nn.Module) -> Block:
    attn = layer.self_attn
    return Block(
        module=layer,
        ln_1=layer.layer_norm1,
        attn=attn,
        attn_end=attn,
        ln_2=layer.layer_norm2,
        mlp=layer.mlp,
        attend=functools.partial(hf_attend, attn),
        cross_attend=functools.partial(hf_cross_attend, attn),
        projections=((attn.q_proj, "weight", ("q",)), (attn.k_proj, "weight", ("k",)),
                     (attn.v_proj, "weight", ("v",)), (attn.out_proj, "weight", ("o",))),
    )


def _is_layers(encoder) -> bool:
    layers = getattr(encoder, "layers", None)
    return layers is not None and len(layers) > 0 and has(layers[0], "layer_norm1", "self_attn", "layer_norm2", "mlp")


def _transformers(model: nn.Module) -> dict[str, nn.Module]:
    """Inner vision/text transformers, keyed by tower."""
    found = {}
    for tower, attr in (("visual", "vision_model"), ("text", "text_model")):
        inner = getattr(model, attr, None)
        while inner is not None and not _is_layers(getattr(inner, "encoder", None)) and hasattr(inner, attr):
            inner = getattr(inner, attr)  # CLIPVisionModel wraps a vision_model
        if inner is not None and _is_layers(getattr(inner, "encoder", None)):
            found[tower] = inner
    if not found and _is_layers(getattr(model, "encoder", None)) and has(model, "embeddings"):
        found["visual" if has(model.embeddings, "patch_embedding") else "text"] = model
    return found


class HFText(TextEncoder):
    """``embeddings``, ``encoder.layers`` under an explicit causal mask, ``final_layer_norm``,
    pooling at the end-of-text token, the model's ``text_projection`` (none on a bare text model)."""

    def __init__(self, model: nn.Module, tower: Tower):
        root = tower.module
        if has(root, "head"):
            raise UnsupportedModelError(
                f"the text tower {type(root).__name__} pools at the last position through a head without a causal "
                "mask (SigLIP); the text path needs a causal mask and end-of-text pooling, as CLIP's"
            )
        super().__init__(tower)
        self.root = root
        self.ln_final = root.final_layer_norm
        self.projection = getattr(model, "text_projection", None)
        self.embed_dim = self.projection.out_features if isinstance(self.projection, nn.Linear) else tower.width

    def frozen_inputs(self) -> list[torch.Tensor]:
        return list(self.root.embeddings.parameters())

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.root.embeddings(input_ids=ids)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        length = x.shape[1]
        mask = torch.full((length, length), float("-inf"), dtype=x.dtype, device=x.device).triu(1)[None, None]
        for block in self.tower.blocks[start:stop]:
            x = first_tensor(block.module(x, mask))
        return x

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return project_with(self.projection, pooled)

    def projection_parameters(self):
        return parameters_of(self.projection)


def _encode_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``get_image_features`` as a tensor, or a bare vision model's pooled output."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=images)
    else:
        out = model(pixel_values=images)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@register_backbone("hf")
class HFCLIPSpec(BackboneSpec):
    """Hugging Face CLIPModel, CLIPVisionModel, CLIPTextModel, SiglipModel."""

    family = "hf"
    extra = "hf"
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
                has_cls = getattr(emb, "class_embedding", None) is not None
                towers[name] = Tower(name, inner, blocks, width, False, 0 if has_cls else None, int(has_cls), (side, side),
                                     make_block=hf_block, image_size=int(emb.image_size))
            else:
                towers[name] = Tower(name, inner, blocks, width, make_block=hf_block,
                                     context_length=int(inner.embeddings.position_embedding.num_embeddings))
        return towers

    @classmethod
    def visual(cls, model: nn.Module) -> VisualEncoder:
        tower = get_tower(model, "visual")
        projection = getattr(model, "visual_projection", None)
        embed_dim = projection.out_features if isinstance(projection, nn.Linear) else tower.width
        return VisualEncoder(tower, functools.partial(_encode_images, model), tower.module.post_layernorm, embed_dim)

    @classmethod
    def text(cls, model: nn.Module) -> TextEncoder:
        return HFText(model, get_tower(model, "text"))

    @classmethod
    def build(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> nn.Module:
        """A ``CLIPModel`` of `tiny`'s sizes (end-of-text id 49407, so OpenAI's BPE ids work), or
        the model `arch` names (a Hub id or a local directory): ``weights: pretrained`` (or a local
        directory) loads its weights, ``null`` gives random ones from its config.

        Example:
            >>> HFCLIPSpec.build(None, tiny=TinyConfig())   # a random-weight tiny CLIPModel
        """
        transformers = import_family("transformers", cls.family, cls.extra)
        transformers.logging.set_verbosity_error()
        if tiny is not None:
            config = transformers.CLIPConfig(
                text_config=dict(hidden_size=tiny.text_width, intermediate_size=tiny.text_mlp_width,
                                 num_hidden_layers=tiny.text_layers, num_attention_heads=tiny.text_heads,
                                 max_position_embeddings=tiny.context_length, vocab_size=tiny.vocab_size,
                                 bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0),
                vision_config=dict(hidden_size=tiny.width, intermediate_size=tiny.mlp_width, num_hidden_layers=tiny.layers,
                                   num_attention_heads=tiny.heads, image_size=tiny.image_size, patch_size=tiny.patch_size),
                projection_dim=tiny.embed_dim,
            )
            model = transformers.CLIPModel(config)
            return load_state_file(model, weights) if weights else model
        if not arch:
            raise ValueError("model.family hf needs model.arch (a Hub id such as openai/clip-vit-base-patch16, or a local directory)")
        if weights is None:
            return transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(arch))
        if weights != "pretrained" and not Path(weights).exists():
            raise FileNotFoundError(f"model.weights {weights!r} does not exist (accepted: pretrained, null or a local model directory)")
        return transformers.AutoModel.from_pretrained(arch if weights == "pretrained" else weights)
