"""Hugging Face ``transformers`` (``pip install 'clipadapt[hf]'``): ``CLIPModel``, ``SiglipModel``,
``Siglip2Model``, ``ChineseCLIPModel``, ``AltCLIPModel``, their one-tower models
(``CLIPVisionModel``, ``CLIPTextModel``, ``SiglipVisionModel``, ``Siglip2VisionModel``...) and inner
transformers. Blocks are ``CLIPEncoderLayer``-like: ``layer_norm1``, ``self_attn`` (returns a tuple;
``q_proj``/``k_proj``/``v_proj``/``out_proj``), ``layer_norm2``, ``mlp``; tensors are batch-first.

- SigLIP's visual tower has no class token and pools with its attention-pool (MAP) ``head``;
  its text tower has no causal mask and pools the last position through a linear ``head``.
- SigLIP 2 (NaFlex) takes patchified images with ``pixel_attention_mask`` and ``spatial_shapes``.
  Video frames are fixed-size and square: each frame ``(3, S, S)`` (S a multiple of the patch p)
  becomes ``(S/p)²`` patches, all real (the mask is all ones, no padding), so every frame of a
  video has the same token grid and temporal adapters line up; the position embeddings are
  resized to that grid by the model itself. See `naflex_inputs`.
- ChineseCLIP's and AltCLIP's visual towers are CLIP's; their text towers are post-norm
  BERT / XLM-R layers, on which the pre-norm sites are not exact: they are refused (`text_refusal`).
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
from clipadapt.backbones.hub import hf_config, hf_preprocess
from clipadapt.backbones.preprocess import Preprocess
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


def _inner(model: nn.Module, attr: str) -> nn.Module | None:
    """``model.<attr>``, unwrapped while it is a wrapper of another ``<attr>`` (CLIPVisionModel)."""
    inner = getattr(model, attr, None)
    while inner is not None and not _is_layers(getattr(inner, "encoder", None)) and hasattr(inner, attr):
        inner = getattr(inner, attr)
    return inner


def _transformers(model: nn.Module) -> dict[str, nn.Module]:
    """Inner vision/text transformers, keyed by tower."""
    found = {}
    for tower, attr in (("visual", "vision_model"), ("text", "text_model")):
        inner = _inner(model, attr)
        if inner is not None and _is_layers(getattr(inner, "encoder", None)):
            found[tower] = inner
    if not found and _is_layers(getattr(model, "encoder", None)) and has(model, "embeddings"):
        found["visual" if has(model.embeddings, "patch_embedding") else "text"] = model
    return found


def text_refusal(text: nn.Module | None) -> str:
    """Why a Hugging Face text model's tower is refused, ``""`` when `text` is not one.

    Post-norm BERT / XLM-R layers (``attention.output.LayerNorm`` after the residual add:
    ChineseCLIP, AltCLIP, open_clip's RoBERTa / XLM-R text towers) and other layouts (mT5, NLLB
    encoders inside open_clip's ``HFTextEncoder``) have no exact pre-norm sites.

    Example:
        >>> text_refusal(chinese_clip.text_model)
        'its text tower is a post-norm ChineseCLIPTextModel (ChineseCLIPTextLayer: ...'
    """
    transformer = getattr(text, "transformer", text)  # open_clip's HFTextEncoder wraps the HF model
    if not isinstance(transformer, nn.Module) or not hasattr(transformer, "config"):
        return ""
    name = type(transformer).__name__ + (" in open_clip's HFTextEncoder" if transformer is not text else "")
    refused = ("so text adapters and the text path are refused; the visual tower takes every adapter")
    layer = next((m for m in transformer.modules() if has(m, "attention", "intermediate", "output")), None)
    if layer is not None and has(getattr(layer.attention, "output", None), "LayerNorm"):
        return (f"its text tower is a post-norm {name} ({type(layer).__name__}: LayerNorm after each residual add, "
                f"BERT / XLM-R style); the sites are laid out on pre-norm blocks and would not be exact there, {refused}")
    return f"its text tower is a Hugging Face {name}, whose layers are not laid out as pre-norm CLIP blocks; {refused}"


# ---- images ------------------------------------------------------------------------------


def is_naflex(embeddings: nn.Module) -> bool:
    """Whether a visual tower takes patchified images (SigLIP 2's NaFlex): a linear patch embedding."""
    return isinstance(getattr(embeddings, "patch_embedding", None), nn.Linear)


def naflex_inputs(images: torch.Tensor, patch_size: int) -> dict[str, torch.Tensor]:
    """SigLIP 2's inputs for fixed-size square images ``(N, 3, S, S)``: every frame is cut into its
    ``(S/p)²`` patches in the order of the Hugging Face processor (rows of patches, each patch
    ``(p, p, 3)`` flattened), none padded, so the mask is all ones.

    Example:
        >>> inputs = naflex_inputs(torch.rand(8, 3, 256, 256), 16)
        >>> inputs["pixel_values"].shape, inputs["spatial_shapes"][0].tolist()
        (torch.Size([8, 256, 768]), [16, 16])
    """
    batch, _, height, width = images.shape
    if height % patch_size or width % patch_size or height != width:
        # adapters read the patch grid off the token count (a square), so a 64x16 frame would pass for 4x4 patches
        raise ValueError(f"SigLIP 2 frames of {height}x{width} pixels: clipadapt feeds square frames whose side is a "
                         f"multiple of the {patch_size}-pixel patch (adapters infer the patch grid from the token count)")
    rows, cols = height // patch_size, width // patch_size
    patches = rearrange(images, "n c (h p) (w q) -> n (h w) (p q c)", p=patch_size, q=patch_size)
    return {
        "pixel_values": patches,
        "pixel_attention_mask": torch.ones(batch, rows * cols, dtype=torch.int32, device=images.device),
        "spatial_shapes": torch.tensor([[rows, cols]] * batch, dtype=torch.long, device=images.device),
    }


def _encode_images(model: nn.Module, embeddings: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``get_image_features`` as a tensor, or a bare vision model's pooled output."""
    inputs = naflex_inputs(images, embeddings.patch_size) if is_naflex(embeddings) else {"pixel_values": images}
    out = model.get_image_features(**inputs) if hasattr(model, "get_image_features") else model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _visual_tower(inner: nn.Module) -> Tower:
    emb = inner.embeddings
    blocks = [hf_block(layer) for layer in inner.encoder.layers]
    if is_naflex(emb):  # SigLIP 2: the grid of its position embeddings, resized to each input
        side = int(emb.position_embedding_size)
    else:
        side = int(emb.image_size) // int(emb.patch_size)
    has_cls = getattr(emb, "class_embedding", None) is not None
    return Tower("visual", inner, blocks, blocks[0].ln_1.weight.shape[0], False, 0 if has_cls else None, int(has_cls),
                 (side, side), make_block=hf_block, image_size=side * int(emb.patch_size))


# ---- text --------------------------------------------------------------------------------


class HFText(TextEncoder):
    """``embeddings``, ``encoder.layers`` under an explicit causal mask, ``final_layer_norm``,
    pooling at the end-of-text token, the model's ``text_projection`` (none on a bare text model)."""

    def __init__(self, model: nn.Module, tower: Tower):
        super().__init__(tower)
        self.root = tower.module
        self.ln_final = self.root.final_layer_norm
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


class SiglipText(HFText):
    """SigLIP's (and SigLIP 2's) text tower in pieces: ``embeddings``, ``encoder.layers`` without a
    mask (every token sees every other, padding included, as SigLIP was trained: prompts padded
    to the full context), ``final_layer_norm``, pooling at the last position (``pool = "last"``,
    ``causal = False``), the text model's linear ``head`` as projection.

    Token ids come from SigLIP's own SentencePiece tokenizer (pad id = end-of-text id), which
    OpenAI's BPE is not: `tokenize` refuses until that tokenizer is given (``model.tokenizer``, a
    local ``tokenizer.json``; `clipadapt.backbones.tokenizers`).

    Example:
        >>> text = HFCLIPSpec.text(siglip)
        >>> text.encode(ids)          # ids (N, context_length): equals siglip.get_text_features(ids)
    """

    pool = "last"
    causal = False

    def __init__(self, model: nn.Module, tower: Tower):
        super().__init__(model, tower)
        self.projection = self.root.head
        self.embed_dim = self.projection.out_features

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self.tower.blocks[start:stop]:
            x = first_tensor(block.module(x, None))
        return x

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(N, E)`` of ids ``(N, L)`` padded to the context, as ``get_text_features``."""
        if ids.shape[1] != self.context_length:
            raise ValueError(f"SigLIP pools the last position: ids must be padded to the context of {self.context_length} "
                             f"tokens, got {ids.shape[1]}")
        states = self.ln_final(self.run_blocks(self.embed(ids)))
        return self.project(states[torch.arange(ids.shape[0], device=ids.device), self.pooled_positions(ids)])


def text_encoder(model: nn.Module, tower: Tower) -> TextEncoder:
    """The text encoder that fits the tower: SigLIP's (a ``head``, no causal mask) or CLIP's."""
    return SiglipText(model, tower) if has(tower.module, "head") else HFText(model, tower)


# ---- building ----------------------------------------------------------------------------

TINY_TYPES = ("clip", "siglip", "siglip2", "chinese_clip", "altclip")
"""Model types `HFCLIPSpec.build` makes at `TinyConfig` sizes (``model.arch`` beside ``model.config``)."""


def tiny_config(transformers, model_type: str, tiny: TinyConfig):
    """The transformers config of a `model_type` model at `tiny`'s sizes (random weights, offline)."""
    vision = dict(hidden_size=tiny.width, intermediate_size=tiny.mlp_width, num_hidden_layers=tiny.layers,
                  num_attention_heads=tiny.heads, patch_size=tiny.patch_size)
    text = dict(hidden_size=tiny.text_width, intermediate_size=tiny.text_mlp_width, num_hidden_layers=tiny.text_layers,
                num_attention_heads=tiny.text_heads, max_position_embeddings=tiny.context_length,
                vocab_size=tiny.vocab_size)
    side = tiny.image_size // tiny.patch_size
    if model_type == "clip":
        return transformers.CLIPConfig(text_config=dict(text, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0),
                                       vision_config=dict(vision, image_size=tiny.image_size), projection_dim=tiny.embed_dim)
    if model_type in ("siglip", "siglip2"):  # no visual projection: the joint width is the visual width, not embed_dim
        text = dict(text, projection_size=tiny.width)
        if model_type == "siglip":
            return transformers.SiglipConfig(text_config=text, vision_config=dict(vision, image_size=tiny.image_size))
        return transformers.Siglip2Config(text_config=text, vision_config=dict(vision, num_patches=side * side))
    if model_type == "chinese_clip":
        return transformers.ChineseCLIPConfig(text_config=text, vision_config=dict(vision, image_size=tiny.image_size),
                                              projection_dim=tiny.embed_dim)
    return transformers.AltCLIPConfig(text_config=dict(text, max_position_embeddings=tiny.context_length + 2,
                                                       project_dim=tiny.text_width),
                                      vision_config=dict(vision, image_size=tiny.image_size), projection_dim=tiny.embed_dim)


@register_backbone("hf")
class HFCLIPSpec(BackboneSpec):
    """Hugging Face CLIPModel, SiglipModel, Siglip2Model, ChineseCLIPModel, AltCLIPModel (+ vision/text models)."""

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
            if name == "visual":
                towers[name] = _visual_tower(inner)
            else:
                blocks = [hf_block(layer) for layer in inner.encoder.layers]
                towers[name] = Tower(name, inner, blocks, blocks[0].ln_1.weight.shape[0], make_block=hf_block,
                                     context_length=int(inner.embeddings.position_embedding.num_embeddings))
        return towers

    @classmethod
    def why_not(cls, model: nn.Module, tower: str) -> str:
        return text_refusal(getattr(model, "text_model", None)) if tower == "text" else ""

    @classmethod
    def visual(cls, model: nn.Module) -> VisualEncoder:
        """Frames through the model's own ``get_image_features`` (SigLIP 2: `naflex_inputs` first)."""
        tower = get_tower(model, "visual")
        root = tower.module
        if tower.cls_index is None and getattr(root, "head", None) is None:
            raise UnsupportedModelError(f"this {type(root).__name__} has no class token and no pooling head "
                                        "(vision_use_head=False): it gives no image embedding; build it with vision_use_head=True")
        projection = getattr(model, "visual_projection", None)
        embed_dim = projection.out_features if isinstance(projection, nn.Linear) else tower.width
        return VisualEncoder(tower, functools.partial(_encode_images, model, root.embeddings), root.post_layernorm, embed_dim)

    @classmethod
    def text(cls, model: nn.Module) -> TextEncoder:
        return text_encoder(model, get_tower(model, "text"))

    @classmethod
    def preprocess(cls, model: nn.Module) -> Preprocess:
        """The ``preprocessor_config.json`` of the directory or Hub id the model was loaded from
        (``config._name_or_path``), or the defaults of its type's image processor (SigLIP's mean
        and std 0.5, not CLIP's); the side is the model's own."""
        towers = cls.towers(model)
        size = towers["visual"].image_size if "visual" in towers else None
        config = model.config
        return hf_preprocess(getattr(config, "_name_or_path", None) or None, config.model_type, size)

    @classmethod
    def preprocess_for(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> Preprocess:
        """As `preprocess`, before the model is built: a tiny model's type (`TINY_TYPES`) gives its
        image processor's defaults at the tiny side; a local ``weights`` directory, else `arch`,
        its ``preprocessor_config.json``."""
        if tiny is not None:
            return hf_preprocess(None, arch if arch in TINY_TYPES else "clip", tiny.image_size)
        source = weights if weights not in (None, "pretrained") else arch
        try:
            config = hf_config(source, "model.weights" if source is weights else "model.arch")
        except (ValueError, OSError) as error:  # not at hand: validate still runs, building will refuse
            return Preprocess.clip_defaults(None, f"{source!r} is not at hand, its image processor is unknown: {error}")
        vision = getattr(config, "vision_config", config)
        size = getattr(vision, "image_size", None)
        return hf_preprocess(source, config.model_type, size if isinstance(size, int) else None)

    @classmethod
    def set_grad_checkpointing(cls, model: nn.Module, enable: bool = True) -> nn.Module:
        verb = "activation_checkpointing" if hasattr(model, "activation_checkpointing_enable") else "gradient_checkpointing"  # 5.x, 4.x
        if enable:
            getattr(model, f"{verb}_enable")({"use_reentrant": False})
        else:
            getattr(model, f"{verb}_disable")()
        return model

    @classmethod
    def build(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> nn.Module:
        """A random-weight model of `tiny`'s sizes whose type `arch` names (`TINY_TYPES`; any other
        name gives ``clip``: a ``CLIPModel`` with end-of-text id 49407, so OpenAI's BPE ids work), or the model
        `arch` names (a Hub id or a local directory): ``weights: pretrained`` (or a local directory)
        loads its weights, ``null`` gives random ones from its config.

        Example:
            >>> HFCLIPSpec.build("siglip", tiny=TinyConfig())   # a random-weight tiny SiglipModel
        """
        transformers = import_family("transformers", cls.family, cls.extra)
        transformers.logging.set_verbosity_error()
        if tiny is not None:
            if arch and "/" in arch:  # a Hub id or a directory: not what a tiny random model can be
                raise ValueError(f"model.arch {arch!r} names a Hugging Face model, but model.config builds a tiny random one: "
                                 f"drop model.config, or name a tiny model type: {', '.join(TINY_TYPES)}")
            model_type = arch if arch in TINY_TYPES else "clip"  # other names (the recipe's ViT-B-16) are ignored, as elsewhere
            model = transformers.AutoModel.from_config(tiny_config(transformers, model_type, tiny))
            return load_state_file(model, weights) if weights else model
        if not arch:
            raise ValueError("model.family hf needs model.arch (a Hub id such as openai/clip-vit-base-patch16, or a local directory)")
        if weights is None:
            return transformers.AutoModel.from_config(hf_config(arch, "model.arch"))
        if weights != "pretrained" and not Path(weights).exists():
            raise FileNotFoundError(f"model.weights {weights!r} does not exist (accepted: pretrained, null or a local model directory)")
        source = arch if weights == "pretrained" else weights
        hf_config(source, "model.arch" if weights == "pretrained" else "model.weights")
        return transformers.AutoModel.from_pretrained(source)
