"""ST-Adapter (Pan et al., NeurIPS 2022): a depthwise 3D convolution over time in a bottleneck.

Input ``x`` of shape ``(B·T, P+h·w, D)``, frames of a video contiguous, ``P`` prefix (class)
tokens. On the patch tokens only: Linear D→w, depthwise Conv3d with kernel ``(3, 1, 1)`` over
``(T, h, w)`` (``groups=w``, so each channel mixes a patch with the same patch in the
neighbouring frames), Linear w→D; no activation. Prefix tokens get a zero delta.

The convolution (weight and bias) and both linear biases start at zero, so a fresh adapter is an
exact identity. The authors' Kinetics-400 model puts one before the MLP (``pre_mlp``) of every
block; their Something-Something v2 model puts one at ``pre_attn`` and one at ``pre_mlp``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from clipadapt.inject import Adapter, AdapterContext
from clipadapt.registry import register_adapter


@register_adapter("st")
class STAdapter(Adapter):
    """ST-Adapter: ``up(conv3d_t(down(patches)))`` on patch tokens, zero on prefix tokens.

    Args:
        dim: the block width D.
        width: the bottleneck width w (384 in the paper's ViT-B/16 models).
        kernel_size: the convolution's kernel over ``(T, h, w)``; ``(3, 1, 1)`` mixes time only.

    Parameters per block: ``2·D·w + D + w`` (linears) ``+ w·kt·kh·kw + w`` (convolution);
    592,512 for D = 768, w = 384.

    Example:
        >>> clipadapt.inject(clip, "st", tower="visual", layers=range(12), site="pre_mlp", width=384)
    """

    sites = ("pre_mlp",)
    needs_frames = True

    def __init__(self, dim: int, width: int = 384, kernel_size: list[int] | tuple[int, int, int] = (3, 1, 1)):
        super().__init__()
        kernel_size = tuple(kernel_size)
        if len(kernel_size) != 3 or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel_size):
            raise ValueError(f"st kernel_size {kernel_size!r} must be three odd positive ints (time, height, width)")
        self.down = nn.Linear(dim, width)
        self.conv = nn.Conv3d(width, width, kernel_size, padding=tuple(k // 2 for k in kernel_size), groups=width)
        self.up = nn.Linear(width, dim)
        for param in (self.down.bias, self.up.bias, self.conv.weight, self.conv.bias):
            nn.init.zeros_(param)

    def forward(self, x: torch.Tensor, ctx: AdapterContext) -> torch.Tensor:
        num_frames = ctx.num_frames
        if x.shape[0] % num_frames:
            raise ValueError(f"batch of {x.shape[0]} frames is not a whole number of {num_frames}-frame videos")
        prefix = ctx.num_prefix_tokens
        grid_h, grid_w = ctx.grid(x.shape[1])
        h = rearrange(self.down(x[:, prefix:]), "(b t) (gh gw) c -> b c t gh gw", t=num_frames, gh=grid_h, gw=grid_w)
        h = rearrange(self.conv(h), "b c t gh gw -> (b t) (gh gw) c")
        return F.pad(self.up(h), (0, 0, prefix, 0))  # prefix (class) tokens get zero
