"""open_clip 3.x: ``CLIP`` (text blocks on the model itself), ``CustomTextCLIP`` (``model.text``),
or a bare ``VisionTransformer`` / ``TextTransformer``. Blocks are ``ResidualAttentionBlock``
(``nn.MultiheadAttention``, batch-first) or ``CustomResidualAttentionBlock`` (open_clip's own
``Attention``); both end their attention branch with the layer scale ``ls_1``.

Covered: the OpenAI-layout configs (ViT-*, ViT-*-quickgelu, MetaCLIP's, DataComp's), and the
configs whose visual is a ``TimmModel`` around a timm ViT or Eva trunk (SigLIP, SigLIP2, EVA01/02,
PE-Core, MobileCLIP-B/2-B/2-L, ViTamin, the timm-named ViTs): their visual tower is the trunk's
blocks as `clipadapt.backbones.timm` lays them out, the image path is open_clip's own
(``encode_image``: trunk, its pooling and head, then ``TimmModel.head``). Other trunks (ConvNeXt,
FastViT, Swin) are refused with a message. Text towers: every ``TextTransformer`` pooling
(``argmax``, ``eos``, ``first``, ``last``, CoCa's appended class embedding), with or without a
causal mask; those not trained with OpenAI's BPE (SigLIP, CLIPA, MetaCLIP 2 worldwide) take their
tokenizer from the caller (`clipadapt.backbones.tokenizers`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
from pathlib import Path

import torch
import torch.nn as nn

from clipadapt.backbones.base import BackboneSpec, Block, Tower, UnsupportedModelError, get_tower, has, load_state_file
from clipadapt.backbones.encoders import POOLS, TextEncoder, VisualEncoder, parameters_of, project_with
from clipadapt.backbones.hub import open_clip_text_kwargs
from clipadapt.backbones.preprocess import Preprocess, from_config, side
from clipadapt.backbones.tiny import TinyConfig
from clipadapt.backbones.timm import clip_like_init, is_timm_vit, pooled_feature, timm_tower
from clipadapt.backbones.tokenizers import bpe_tokenizer
from clipadapt.registry import register_backbone

BPE_VOCABULARY = 49408  # OpenAI BPE's ids


def mha_attend(attn: nn.Module, seq_first: bool, x: torch.Tensor) -> torch.Tensor:
    """A batch-first ``(N, L, D) -> (N, L, D)`` call of a block's own attention module.

    It calls ``forward`` directly: the hooks the engine places on the module (``attn_out``,
    ``pre_mlp``) belong to the block's own call, not to an adapter re-using the attention.
    """
    if not isinstance(attn, nn.MultiheadAttention):
        return attn.forward(x)
    if seq_first or not attn.batch_first:
        x = x.transpose(0, 1)
        return attn.forward(x, x, x, need_weights=False)[0].transpose(0, 1)
    return attn.forward(x, x, x, need_weights=False)[0]


def mha_cross_attend(attn: nn.MultiheadAttention, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """``attn`` with queries from `query` ``(N, Lq, D)`` and keys/values from `memory` ``(N, Lm, D)``."""
    if not attn.batch_first:
        query, memory = query.transpose(0, 1), memory.transpose(0, 1)
    out = attn.forward(query, memory, memory, need_weights=False)[0]
    return out if attn.batch_first else out.transpose(0, 1)


def packed_projections(attn: nn.Module) -> tuple:
    """LoRA targets of an attention with a packed ``in_proj_weight`` and an ``out_proj`` Linear."""
    if isinstance(getattr(attn, "in_proj_weight", None), torch.Tensor) and isinstance(getattr(attn, "out_proj", None), nn.Linear):
        return ((attn, "in_proj_weight", ("q", "k", "v")), (attn.out_proj, "weight", ("o",)))
    return ()


def resblock(block: nn.Module, seq_first: bool, attn_end: nn.Module) -> Block:
    attn = block.attn
    return Block(
        module=block,
        ln_1=block.ln_1,
        attn=attn,
        attn_end=attn_end,
        ln_2=block.ln_2,
        mlp=block.mlp,
        attend=functools.partial(mha_attend, attn, seq_first),
        cross_attend=functools.partial(mha_cross_attend, attn) if isinstance(attn, nn.MultiheadAttention) else None,
        projections=packed_projections(attn),
    )


def open_clip_block(block: nn.Module, seq_first: bool = False) -> Block:
    return resblock(block, seq_first, block.ls_1)


def resblock_towers(model: nn.Module, make_block) -> dict[str, Tower]:
    """Towers of an open_clip/OpenAI-style model: ``visual.transformer.resblocks`` and the text
    ``transformer.resblocks`` on the model itself (or on ``model.text``)."""

    def tower(name: str, root: nn.Module, transformer: nn.Module) -> Tower:
        seq_first = not getattr(transformer, "batch_first", False)
        blocks = [make_block(b, seq_first) for b in transformer.resblocks]
        width = transformer.width if hasattr(transformer, "width") else blocks[0].ln_1.weight.shape[0]
        maker = functools.partial(make_block, seq_first=seq_first)
        if name == "visual":
            patch = root.conv1.kernel_size[0]
            grid = getattr(root, "grid_size", None)
            if grid is None:  # OpenAI clip's VisionTransformer
                grid = (root.input_resolution // patch,) * 2
            return Tower(name, root, blocks, width, seq_first, 0, 1, tuple(grid), make_block=maker,
                         image_size=int(grid[0]) * patch)
        # CoCa's positional embedding has one more row, for the class embedding after the context
        context = getattr(root, "context_length", root.positional_embedding.shape[0])
        return Tower(name, root, blocks, width, seq_first, make_block=maker, context_length=int(context))

    towers = {}
    if is_vision(model):
        return {"visual": tower("visual", model, model.transformer)}
    if is_timm_visual(model):
        return {"visual": timm_tower(model.trunk, root=model)}
    if has(model, "visual") and is_vision(model.visual):
        towers["visual"] = tower("visual", model.visual, model.visual.transformer)
    elif has(model, "visual") and is_timm_visual(model.visual):
        towers["visual"] = timm_tower(model.visual.trunk, root=model.visual)
    if has(model, "token_embedding", "transformer") and has(model.transformer, "resblocks"):
        towers["text"] = tower("text", model, model.transformer)
    elif has(model, "text") and has(model.text, "token_embedding", "transformer"):
        towers["text"] = tower("text", model.text, model.text.transformer)
    return towers


def is_vision(module: nn.Module) -> bool:
    return has(module, "conv1", "class_embedding", "transformer") and has(module.transformer, "resblocks")


def is_timm_visual(module: nn.Module) -> bool:
    """Whether `module` is open_clip's ``TimmModel`` (a timm ``trunk`` and a ``head``) around a
    timm ViT or Eva."""
    return has(module, "trunk", "head") and is_timm_vit(module.trunk)


def timm_visual(model: nn.Module, tower: Tower) -> VisualEncoder:
    """Frame embeddings by the model's ``encode_image`` (trunk, its pooling and head, then
    ``TimmModel.head``); the pooled feature and its norm as the trunk has them (`pooled_feature`)."""
    root = tower.module
    linears = [m for m in root.head.modules() if isinstance(m, nn.Linear)]
    last = linears[-1] if linears else root.trunk.head
    embed_dim = last.out_features if isinstance(last, nn.Linear) else root.trunk.num_features
    final_norm, pooled_at = pooled_feature(root.trunk)
    encode = model.encode_image if hasattr(model, "encode_image") else root
    return VisualEncoder(tower, encode, final_norm, embed_dim, pooled_at=pooled_at)


def first_block(model: nn.Module) -> nn.Module | None:
    for root in (model, getattr(model, "visual", None), getattr(model, "text", None)):
        transformer = getattr(root, "transformer", None)
        if transformer is not None and has(transformer, "resblocks") and len(transformer.resblocks):
            return transformer.resblocks[0]
    return None


def resblock_visual(model: nn.Module, tower: Tower) -> VisualEncoder:
    """Frame embeddings by the model's ``encode_image`` (or the bare visual tower), and the norm
    the model applies to the last block's class token: ``ln_post``, or, where an attention pool
    comes first (CoCa: ``ln_post`` then normalises the pooled queries, of the embedding width),
    the pool's own norm of the block outputs ``attn_pool.ln_k``."""
    root = tower.module
    encode = model.encode_image if hasattr(model, "encode_image") else root
    pool = getattr(root, "attn_pool", None)
    final_norm = pool.ln_k if pool is not None else root.ln_post
    return VisualEncoder(tower, encode, final_norm, root.output_dim)


class ResblockText(TextEncoder):
    """open_clip / OpenAI text: ``token_embedding`` + ``positional_embedding`` (and CoCa's class
    embedding ``cls_emb`` appended after the context), ``resblocks`` under the tower's own mask
    (causal or none; CoCa's and ``use_pad_mask`` towers add padding masks), ``ln_final``, pooling
    as the tower's ``pool_type`` / ``text_pool_type`` says (``eos`` at its ``eos_id``), then
    ``text_projection``."""

    def __init__(self, tower: Tower, tokenizer=None):
        root = tower.module
        with_cls = getattr(root, "cls_emb", None) is not None
        pool = "cls" if with_cls else getattr(root, "pool_type", getattr(root, "text_pool_type", "argmax"))
        if pool not in POOLS:
            raise UnsupportedModelError(f"this text tower pools by {pool!r}; the text path takes one sentence embedding "
                                        f"per prompt, pooled by one of {', '.join(POOLS)}")
        if with_cls and not hasattr(root, "_embeds"):
            raise UnsupportedModelError("this text tower appends a class embedding but has no _embeds (open_clip < 3); "
                                        "upgrade open_clip")
        self.pool = pool
        self.eos_id = getattr(root, "eos_id", getattr(root, "text_eos_id", None)) if pool == "eos" else None
        # open_clip keeps the causal mask on the tower (None without one), OpenAI's clip on every block
        self.causal = getattr(root, "attn_mask", getattr(tower.blocks[0].module, "attn_mask", None)) is not None
        self.vocab_size = root.token_embedding.num_embeddings
        super().__init__(tower, tokenizer)
        self.root = root
        self.ln_final = root.ln_final
        proj = root.text_projection
        self.embed_dim = proj.out_features if isinstance(proj, nn.Linear) else int(proj.shape[-1]) if proj is not None else tower.width

    def default_tokenizer(self):
        """OpenAI's BPE where the tower pools at ``argmax`` or has BPE's vocabulary (CoCa)."""
        if self.vocab_size == BPE_VOCABULARY:
            return bpe_tokenizer(self.context_length)
        return super().default_tokenizer()

    def frozen_inputs(self) -> list[torch.Tensor]:
        extra = [self.root.cls_emb] if self.pool == "cls" else []
        return [self.root.token_embedding.weight, self.root.positional_embedding, *extra]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_and_mask(ids)[0]

    def embed_and_mask(self, ids: torch.Tensor):
        if hasattr(self.root, "_embeds"):  # open_clip's TextTransformer: its own embeddings, class token and masks
            return self.root._embeds(ids)
        length = ids.shape[1]
        x = self.root.token_embedding(ids).to(self.dtype)
        return x + self.root.positional_embedding[:length].to(self.dtype), getattr(self.root, "attn_mask", None)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        blocks = self.tower.blocks[start:stop]
        length = x.shape[1]
        if self.tower.seq_first:  # OpenAI blocks hold their own causal mask
            x = x.transpose(0, 1)
            for block in blocks:
                x = block.module(x)
            return x.transpose(0, 1)
        mask = None if mask is None else mask[..., :length, :length]
        for block in blocks:
            x = block.module(x, attn_mask=mask)
        return x

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return project_with(self.root.text_projection, pooled)

    def projection_parameters(self):
        return parameters_of(self.root.text_projection)


PREPROCESS_KEYS = ("mean", "std", "interpolation")


def pretrained_preprocess(arch: str, weights: str | None) -> tuple[dict, str]:
    """open_clip's preprocessing for `arch` with `weights`: the pretrained tag's config, or, for
    random weights or a local file, the one every tag of `arch` agrees on (SigLIP's 0.5 / 0.5);
    ``{}`` where none is known or the tags differ. Returns the config and its source in words."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights in tags:
        return open_clip.get_pretrained_cfg(arch, weights), f"open_clip's {arch} {weights} config"
    configs = [{key: open_clip.get_pretrained_cfg(arch, tag).get(key) for key in PREPROCESS_KEYS} for tag in tags]
    if configs and all(config == configs[0] for config in configs):
        agree = f"its pretrained tag {tags[0]!r}" if len(tags) == 1 else f"its {len(tags)} pretrained tags agree"
        return configs[0], f"open_clip's {arch} configs ({agree})"
    reason = "its pretrained tags differ" if configs else "it has no pretrained tag"
    return {}, f"open_clip's {arch} configs ({reason})"


@contextlib.contextmanager
def quiet_root_logger(level: int = logging.ERROR):
    """Raise the root logger's level for the duration of the block, then restore it."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, level))
    try:
        yield
    finally:
        root.setLevel(previous)


# with a recipe's model.config, these arch values give the plain tiny open_clip.CLIP (ViT-B-16's
# layout; the schema's default arch); any other open_clip config is built small in its own layout
PLAIN_TINY_ARCHS = (None, "ViT-B-16")


@register_backbone("open_clip")
class OpenCLIPSpec(BackboneSpec):
    """open_clip CLIP, CustomTextCLIP, VisionTransformer or TextTransformer, visual timm ViT/Eva trunks (SigLIP, EVA, PE-Core)."""

    family = "open_clip"
    looks_for = (
        "visual.transformer.resblocks and/or transformer.resblocks (or text.transformer.resblocks) "
        "whose blocks have ln_1, attn, ls_1, ln_2, mlp, ls_2, or a visual TimmModel (trunk, head) "
        "around a timm VisionTransformer or Eva"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        block = first_block(model)
        if block is not None and has(block, "ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2"):
            return True
        return is_timm_visual(model) or (has(model, "visual", "encode_image") and is_timm_visual(model.visual))

    @classmethod
    def towers(cls, model: nn.Module) -> dict[str, Tower]:
        return resblock_towers(model, open_clip_block)

    @classmethod
    def why_not(cls, model: nn.Module, tower: str) -> str:
        visual = getattr(model, "visual", None)
        if tower == "visual" and visual is not None and not is_vision(visual) and not is_timm_visual(visual):
            trunk = getattr(visual, "trunk", None)
            inner = f" around a timm {type(trunk).__name__}" if trunk is not None else ""
            return (f"its visual is a {type(visual).__name__}{inner}, not a transformer of patch tokens; "
                    "covered are open_clip's VisionTransformer (resblocks) and timm trunks of "
                    "VisionTransformer or Eva blocks")
        if tower == "text":  # a Hugging Face text model (open_clip's HFTextEncoder: RoBERTa, XLM-R, mT5, NLLB)
            from clipadapt.backbones.hf import text_refusal

            return text_refusal(getattr(model, "text", None))
        return ""

    @classmethod
    def visual(cls, model: nn.Module) -> VisualEncoder:
        tower = get_tower(model, "visual")
        return timm_visual(model, tower) if is_timm_visual(tower.module) else resblock_visual(model, tower)

    @classmethod
    def text(cls, model: nn.Module) -> TextEncoder:
        return ResblockText(get_tower(model, "text"))

    @classmethod
    def preprocess(cls, model: nn.Module) -> Preprocess:
        """open_clip's ``preprocess_cfg`` on the model (``open_clip.get_model_preprocess_cfg``),
        which ``create_model`` sets; a model built from a config dict has only its size there."""
        import open_clip

        config = open_clip.get_model_preprocess_cfg(model)
        return from_config(config, side(config.get("size")), "open_clip's preprocess_cfg on the model")

    @classmethod
    def preprocess_for(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> Preprocess:
        """The ``preprocess_cfg`` `build` gives the model: the pretrained tag's, or for random
        weights the one all of `arch`'s tags agree on; a tiny config's side with CLIP's values."""
        if tiny is not None and arch in PLAIN_TINY_ARCHS:  # before importing open_clip: `validate` stays light
            return super().preprocess_for(arch, weights, tiny)
        if tiny is not None:  # `arch` made small: its own statistics at the small build's side
            from clipadapt.backbones.shrink import small_image_size

            found, source = pretrained_preprocess(arch, weights)
            return from_config(found, side(small_image_size(arch, tiny)), source)
        import open_clip

        arch = arch or "ViT-B-16"
        config = open_clip.get_model_config(arch)
        if config is None:
            return super().preprocess_for(arch, weights, tiny)
        found, source = pretrained_preprocess(arch, weights)
        return from_config(found, side(config["vision_cfg"].get("image_size")), source)

    @classmethod
    def set_grad_checkpointing(cls, model: nn.Module, enable: bool = True) -> nn.Module:
        model.set_grad_checkpointing(enable)  # one block per checkpoint, use_reentrant=False
        return model

    @classmethod
    def build(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> nn.Module:
        """``open_clip.CLIP`` of `tiny`'s sizes, or ``open_clip.create_model(arch, pretrained=weights)``.

        With `tiny`, an `arch` other than ``ViT-B-16`` (whose layout the plain tiny CLIP already
        has, and which is the recipes' default) is that open_clip config built at `tiny`'s sizes
        by `clipadapt.backbones.shrink.small_open_clip` (its trunk, pooling, mask and text
        tower kept; `tiny`'s context length and vocabulary; a 4x4 patch grid; the mean, std and
        interpolation its pretrained tags agree on). ``weights: openai`` loads OpenAI's weights into
        the ``-quickgelu`` variant of `arch` (OpenAI's weights were trained with QuickGELU).

        Example:
            >>> OpenCLIPSpec.build(None, tiny=TinyConfig())   # a random-weight tiny CLIP
            >>> OpenCLIPSpec.build("ViT-B-16-SigLIP", tiny=TinyConfig())   # a random-weight small SigLIP
        """
        import open_clip

        if tiny is not None and arch not in PLAIN_TINY_ARCHS:
            from clipadapt.backbones.shrink import small_open_clip

            clip = small_open_clip(arch, tiny, own_tokens=False).train()
            found, _ = pretrained_preprocess(arch, weights)  # its own statistics (SigLIP's 0.5), not CLIP's
            clip.visual.preprocess_cfg.update({key: found[key] for key in PREPROCESS_KEYS if found.get(key) is not None})
            if weights:
                return load_state_file(clip, weights)
            trunk = getattr(clip.visual, "trunk", None)
            if trunk is not None:  # a timm trunk: a CLIP's random init, not timm's from-scratch one
                clip_like_init(trunk)
            return clip
        if tiny is not None:
            clip = open_clip.CLIP(
                embed_dim=tiny.embed_dim,
                vision_cfg=dict(image_size=tiny.image_size, patch_size=tiny.patch_size, width=tiny.width,
                                layers=tiny.layers, head_width=tiny.head_width, mlp_ratio=tiny.mlp_ratio),
                text_cfg=dict(context_length=tiny.context_length, vocab_size=tiny.vocab_size, width=tiny.text_width,
                              layers=tiny.text_layers, heads=tiny.text_heads, mlp_ratio=tiny.mlp_ratio),
            )
            return load_state_file(clip, weights) if weights else clip
        arch = arch or "ViT-B-16"
        if weights == "openai" and not arch.endswith("-quickgelu") and f"{arch}-quickgelu" in open_clip.list_models():
            arch = f"{arch}-quickgelu"
        if arch not in open_clip.list_models():
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=1)
            raise ValueError(f"model.arch {arch!r} is not an open_clip config" + (f"; did you mean {close[0]!r}?" if close else ""))
        if weights and Path(str(weights)).suffix and not Path(str(weights)).is_file():
            raise FileNotFoundError(f"model.weights {weights!r} does not exist")
        found, _ = pretrained_preprocess(arch, weights)
        preprocess = {key: found[key] for key in PREPROCESS_KEYS if found.get(key) is not None}
        text_kwargs = open_clip_text_kwargs(arch, weights)  # a Hugging Face text tower: its config at hand, offline
        with quiet_root_logger():  # open_clip warns when it builds random weights, which is what was asked
            return open_clip.create_model(arch, pretrained=weights or None, force_preprocess_cfg=preprocess, **text_kwargs)
