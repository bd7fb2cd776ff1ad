"""AIM (Yang et al., ICLR 2023): temporal, spatial and joint adaptation of a frozen image model.

One registered adapter, ``aim``, owns three sites; ``inject(model, "aim", layers=range(12))``
places all three parts in each block (``site=`` picks some of them). Each part is a bottleneck
``up(GELU(down(·)))`` of width ``ratio · D`` whose ``up`` starts at zero:

- temporal (``pre_attn``): the block's own frozen attention runs along time, on ``ln_1`` of the
  block input (the tokens at one position in the T frames form a sequence), then the
  bottleneck without skip; the result is added to the residual stream before the spatial
  attention.
- spatial (``attn_out``): the bottleneck with skip on the attention output,
  ``out + bottleneck(out)``.
- joint (``mlp_parallel``): ``x + mlp(ln_2(x)) + s · bottleneck(ln_2(x))`` with scale ``s``.

AIM also learns a temporal embedding (one vector per frame, zero at start) added to every token
before the first block. Here it belongs to the temporal part of one block,
``temporal_embedding_layer`` (0 by default), which adds it to that block's input. The authors
add it before ``ln_pre``; after ``ln_pre`` (here) it is the same learned per-frame offset of the
tokens, without the normalisation, and it stays an exact identity at injection.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange, repeat

from clipadapt.adapters.bottleneck import Bottleneck
from clipadapt.backbones import Tower
from clipadapt.inject import Adapter, AdapterContext
from clipadapt.registry import register_adapter


def aim_bottleneck(dim: int, ratio: float, activation: str) -> Bottleneck:
    """AIM's bottleneck: ``down`` truncated normal (std 0.02, zero bias), ``up`` zero."""
    width = int(dim * ratio)
    if width < 1:
        raise ValueError(f"aim ratio {ratio!r} gives a bottleneck of width {width} for dim {dim}; it must be at least 1")
    mlp = Bottleneck(dim, width, activation, init="zero")
    nn.init.trunc_normal_(mlp.down.weight, std=0.02)
    nn.init.zeros_(mlp.down.bias)
    return mlp


class AIMTemporal(Adapter):
    """AIM's temporal part: ``bottleneck(attend_t(ln_1(x)))``, attention along the frames.

    Args:
        dim: the block width D.
        ratio: bottleneck width over D.
        activation: see `Bottleneck`.
        num_frames: rows of the temporal embedding (the most frames a video may have), or 0
            for no embedding (every block but `AIMAdapter`'s ``temporal_embedding_layer``).

    Example:
        >>> clipadapt.inject(clip, "aim", layers="all", site="pre_attn")
    """

    sites = ("pre_attn",)
    needs_frames = True

    def __init__(self, dim: int, ratio: float = 0.25, activation: str = "gelu", num_frames: int = 0):
        super().__init__()
        self.mlp = aim_bottleneck(dim, ratio, activation)
        self.temporal_embedding = nn.Parameter(torch.zeros(num_frames, dim)) if num_frames else None

    def forward(self, x: torch.Tensor, ctx: AdapterContext) -> torch.Tensor:
        num_frames = ctx.num_frames
        if x.shape[0] % num_frames:
            raise ValueError(f"batch of {x.shape[0]} frames is not a whole number of {num_frames}-frame videos")
        embedding = None
        if self.temporal_embedding is not None:
            if num_frames > self.temporal_embedding.shape[0]:
                raise ValueError(
                    f"aim in {ctx.tower} block {ctx.layer} has a temporal embedding for at most "
                    f"{self.temporal_embedding.shape[0]} frames, got {num_frames}; inject it with num_frames={num_frames}"
                )
            embedding = repeat(self.temporal_embedding[:num_frames], "t d -> (b t) 1 d", b=x.shape[0] // num_frames)
            x = x + embedding
        sequences = rearrange(x, "(b t) l d -> (b l) t d", t=num_frames)  # (B·L, T, D)
        frozen_dtype = next(ctx.block.attn.parameters(), sequences).dtype
        attended = ctx.block.attend(ctx.block.ln_1(sequences.to(frozen_dtype))).to(x.dtype)
        delta = self.mlp(rearrange(attended, "(b l) t d -> (b t) l d", l=x.shape[1]))
        return delta if embedding is None else delta + embedding


class AIMSpatial(Adapter):
    """AIM's spatial part: the attention output becomes ``out + bottleneck(out)``.

    Example:
        >>> clipadapt.inject(clip, "aim", layers="all", site="attn_out")
    """

    sites = ("attn_out",)

    def __init__(self, dim: int, ratio: float = 0.25, activation: str = "gelu"):
        super().__init__()
        self.mlp = aim_bottleneck(dim, ratio, activation)

    def forward(self, x: torch.Tensor, ctx: AdapterContext) -> torch.Tensor:
        return self.mlp(x)


class AIMJoint(Adapter):
    """AIM's joint part: ``scale · bottleneck(ln_2(x))`` beside the MLP.

    Example:
        >>> clipadapt.inject(clip, "aim", layers="all", site="mlp_parallel", scale=0.5)
    """

    sites = ("mlp_parallel",)

    def __init__(self, dim: int, ratio: float = 0.25, activation: str = "gelu", scale: float = 0.5):
        super().__init__()
        self.mlp = aim_bottleneck(dim, ratio, activation)
        self.scale = scale

    def forward(self, x: torch.Tensor, ctx: AdapterContext) -> torch.Tensor:
        return self.scale * self.mlp(x)


@register_adapter("aim")
class AIMAdapter(Adapter):
    """AIM: temporal (``pre_attn``), spatial (``attn_out``) and joint (``mlp_parallel``) bottlenecks.

    ``build`` returns the part for each site (see the module docstring).

    Options (passed to `clipadapt.inject`):
        ratio: bottleneck width over D (0.25).
        activation: ``gelu`` (exact, default) or another of `Bottleneck`'s.
        scale: the joint part's scale s (0.5 for Kinetics-400, 1.0 for Something-Something v2).
        num_frames: rows of the temporal embedding, the most frames a video may have (8).
        temporal_embedding_layer: the block (an index, negative allowed) whose temporal part
            holds the temporal embedding, or ``None`` for none. Keep it the lowest injected
            block: with ``layers=range(6, 12)`` pass ``temporal_embedding_layer=6``.

    Parameters per block: ``3 · (2·D·w + w + D)`` with ``w = ratio · D``, plus
    ``num_frames · D`` once; 887,616 per block and 6,144 once on ViT-B/16.

    Example:
        >>> clipadapt.inject(clip, "aim", tower="visual", layers=range(12), scale=0.5, num_frames=8)
    """

    sites = ("pre_attn", "attn_out", "mlp_parallel")
    needs_frames = True

    @classmethod
    def build(
        cls,
        dim: int,
        *,
        site: str | None,
        tower: Tower,
        layer: int,
        ratio: float = 0.25,
        activation: str = "gelu",
        scale: float = 0.5,
        num_frames: int = 8,
        temporal_embedding_layer: int | None = 0,
    ) -> nn.Module:
        if site == "pre_attn":
            tower.blocks[layer].refuse("attend", f"aim's temporal part (site pre_attn) in {tower.name} block {layer}")
            if temporal_embedding_layer is not None and not -len(tower.blocks) <= temporal_embedding_layer < len(tower.blocks):
                raise ValueError(
                    f"aim temporal_embedding_layer={temporal_embedding_layer} is not a block of the "
                    f"{tower.name} tower (0..{len(tower.blocks) - 1}, negative allowed, or None)"
                )
            holds_embedding = temporal_embedding_layer is not None and layer == temporal_embedding_layer % len(tower.blocks)
            if holds_embedding and (not isinstance(num_frames, int) or num_frames < 1):
                raise ValueError(f"aim num_frames={num_frames!r} must be a positive int")
            return AIMTemporal(dim, ratio, activation, num_frames if holds_embedding else 0)
        if site == "attn_out":
            return AIMSpatial(dim, ratio, activation)
        if site == "mlp_parallel":
            return AIMJoint(dim, ratio, activation, scale)
        raise ValueError(f"aim has no part for site {site!r}; its sites are {', '.join(cls.sites)}")
