"""timm's ``Eva`` blocks (EVA01/02, EVA-CLIP, PE-Core: ``eva02_*``, ``vit_pe_core_*``) as `Block`s.

Two layouts, told apart by their attributes (``gamma_1``/``gamma_2`` exist only on the pre-norm one):

- ``EvaBlock`` (pre-norm): ``x + drop_path1(gamma_1 · attn(norm1(x), rope))``, then
  ``x + drop_path2(gamma_2 · mlp(norm2(x)))``. The layer scales ``gamma_1``/``gamma_2`` are plain
  parameters (or ``None``), applied before ``drop_path1``/``drop_path2``, so the attention branch
  ends at ``drop_path1`` as in timm's ``VisionTransformer``. The MLP is a GELU ``Mlp``, a packed
  SwiGLU (``GluMlp``) or a SwiGLU with its own norm (``SwiGLU``); the engine hooks it whole.
- ``EvaBlockPostNorm``: ``x + drop_path1(norm1(attn(x)))``, then ``x + drop_path2(norm2(mlp(x)))``.
  The attention reads the residual stream itself (``ln_1`` is an identity) and its branch still
  ends at ``drop_path1``. The MLP reads the residual stream with no norm and its output is
  normalised afterwards, so an adapter beside it (``mlp_parallel``) would be normalised with it:
  that site is refused.

The attention (``EvaAttention`` or ``AttentionRope``) takes the rotary embedding (RoPE) as an
argument of the block's call. Where the model has one, re-running the attention alone (AIM's
temporal part, on tokens of one patch position across frames) has no position to rotate by and
would not be the attention the block computes: it is refused. LoRA's targets are the fused
``qkv`` weight (its q/k biases are separate parameters) or ``q_proj``/``k_proj``/``v_proj``, and
``proj``.
"""

from __future__ import annotations

import functools

import torch.nn as nn

from clipadapt.backbones.base import Block, has

BLOCK_PARTS = ("norm1", "attn", "drop_path1", "norm2", "mlp", "drop_path2")

ROTARY_REFUSAL = ("its attention rotates queries and keys by their patch position (RoPE), and "
                  "tokens along time have none; inject aim with site=['attn_out', 'mlp_parallel']")
POST_NORM_MLP_REFUSAL = ("the post-norm block's MLP reads the residual stream with no norm of its own and "
                         "its output is normalised after it, so an adapter beside it would be normalised too")


def is_eva_block(block: nn.Module) -> bool:
    """Whether `block` is laid out as timm's ``EvaBlock`` or ``EvaBlockPostNorm``."""
    return has(block, *BLOCK_PARTS) and not has(block, "ls1") and has(block.attn, "proj")


def is_post_norm(block: nn.Module) -> bool:
    """``EvaBlockPostNorm`` normalises each branch's output; the pre-norm ``EvaBlock`` holds layer
    scales (``gamma_1``, ``gamma_2``, possibly ``None``) that the post-norm one has not."""
    return not has(block, "gamma_1", "gamma_2")


def attention_projections(attn: nn.Module) -> tuple:
    """LoRA's targets: the fused ``qkv`` weight, or the separate q/k/v projections, and ``proj``."""
    out = ((attn.proj, "weight", ("o",)),)
    if isinstance(getattr(attn, "qkv", None), nn.Linear):
        return ((attn.qkv, "weight", ("q", "k", "v")),) + out
    if all(isinstance(getattr(attn, name, None), nn.Linear) for name in ("q_proj", "k_proj", "v_proj")):
        return tuple((getattr(attn, f"{t}_proj"), "weight", (t,)) for t in "qkv") + out
    return ()


def eva_block(block: nn.Module, rotary: bool) -> Block:
    """The `Block` of an Eva block; `rotary`: whether the model passes it a rotary embedding."""
    post_norm = is_post_norm(block)
    refusals = {}
    if rotary:
        refusals["attend"] = ROTARY_REFUSAL
    if post_norm:
        refusals["mlp_parallel"] = POST_NORM_MLP_REFUSAL
    return Block(
        module=block,
        ln_1=nn.Identity() if post_norm else block.norm1,
        attn=block.attn,
        attn_end=block.drop_path1,
        ln_2=nn.Identity() if post_norm else block.norm2,
        mlp=block.mlp,
        attend=block.attn.forward,  # forward: skip hooks placed on attn
        projections=attention_projections(block.attn),
        refusals=refusals,
    )


def eva_block_maker(model: nn.Module):
    """`eva_block` for the blocks of `model` (an ``Eva``): rotary where the model has a RoPE."""
    return functools.partial(eva_block, rotary=getattr(model, "rope", None) is not None)
