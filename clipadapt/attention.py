"""A faster ``nn.MultiheadAttention`` for frozen towers that train adapters.

PyTorch runs ``nn.MultiheadAttention`` through its fused kernel only without autograd. With
adapters below a block, its input needs gradient, so every training step takes the general
path, which for a batch-first self-attention transposes the tokens to sequence-first,
multiplies them position by position (one small matrix product per token position), copies
q, k and v apart, and zero-fills their gradients in backward.

`SelfAttention` computes the same function the direct way: one matrix product for q, k and v,
views into it for ``scaled_dot_product_attention``, one for the output. It takes over only
plain self-attention under autograd (``query is key is value``, no key padding mask, no
attention weights returned, no or an additive float mask) and hands every other call to
``nn.MultiheadAttention.forward`` unchanged. Its parameters, ``state_dict`` keys, hooks and
``isinstance`` checks are those of the module it replaces. On a ViT-B/16 attention (16 × 197
tokens, CPU) forward plus backward is about 1.4× as fast (``benchmarks/bench_attention.py``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with a direct self-attention path under autograd.

    Not built directly: `efficient_attention` switches existing modules to it.
    """

    def _direct(self, query, key, value, key_padding_mask, need_weights, attn_mask, is_causal) -> bool:
        return (
            torch.is_grad_enabled()
            and query is key
            and key is value
            and query.dim() == 3
            and not need_weights
            and key_padding_mask is None
            and not is_causal
            and (attn_mask is None or attn_mask.is_floating_point())
            and self._qkv_same_embed_dim
            and self.in_proj_bias is not None
            and self.bias_k is None
            and not self.add_zero_attn
            and not query.is_nested
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        if not self._direct(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal):
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)
        x = query if self.batch_first else query.transpose(0, 1)
        batch, length, dim = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (N, L, 3D): one matrix product
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if attn_mask is not None and attn_mask.dim() == 3:  # (N·H, L, L), as nn.MultiheadAttention takes it
            attn_mask = attn_mask.view(batch, self.num_heads, length, length)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        out = F.linear(out.transpose(1, 2).reshape(batch, length, dim), self.out_proj.weight, self.out_proj.bias)
        return (out if self.batch_first else out.transpose(0, 1)), None


def efficient_attention(model: nn.Module, enable: bool = True) -> int:
    """Switch every ``nn.MultiheadAttention`` in `model` to `SelfAttention` (or back, with
    ``enable=False``), in place. Outputs and gradients are unchanged; returns how many modules
    were switched.

    Example:
        >>> clipadapt.efficient_attention(clip)      # before training adapters in a frozen CLIP
        24
    """
    source, target = (nn.MultiheadAttention, SelfAttention) if enable else (SelfAttention, nn.MultiheadAttention)
    switched = 0
    for module in model.modules():
        if type(module) is source:
            module.__class__ = target
            switched += 1
    return switched
