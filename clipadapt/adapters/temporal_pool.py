"""Temporal pooling of per-frame embeddings: a plain mean, or M2-CLIP's pooling adapter.

The adapter (spec §2, from the authors' release) works on per-frame embeddings after
``ln_post`` and the projection, ``(B, T, E)``: Linear E→w, depthwise Conv1d over T (kernel 3,
padding 1), Linear w→E, residual; then the mean over T. As in the release, the conv and both
linear biases start at zero (the linear weights keep PyTorch's init), so a fresh adapter is an
exact identity and the video embedding is the plain frame mean.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from clipadapt.registry import register_pooling

MODES = ("mean", "conv")


class TemporalPooling(nn.Module):
    """Pool ``(B, T, E)`` per-frame embeddings into ``(B, E)``; also returns the per-frame outputs.

    Args:
        dim: the embedding width E.
        mode: ``mean`` (no parameters) or ``conv`` (the pooling adapter; w = E/2 by default).
        width: bottleneck width of the ``conv`` mode.

    Example:
        >>> pool = TemporalPooling(512, "conv")
        >>> frames, video = pool(torch.randn(2, 8, 512))   # (2, 8, 512), (2, 512)
    """

    def __init__(self, dim: int, mode: str = "mean", width: int | None = None, kernel_size: int = 3):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"pooling {mode!r} is not one of {MODES}")
        self.mode = mode
        if mode == "conv":
            width = width or dim // 2
            self.down = nn.Linear(dim, width)
            self.conv = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
            self.up = nn.Linear(width, dim)
            for param in (self.conv.weight, self.conv.bias, self.down.bias, self.up.bias):
                nn.init.zeros_(param)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, E)`` per-frame embeddings -> (per-frame outputs ``(B, T, E)``, their mean ``(B, E)``)."""
        if self.mode == "conv":
            h = rearrange(self.down(frames), "b t c -> b c t")
            h = rearrange(self.conv(h), "b c t -> b t c")
            frames = frames + self.up(h)
        return frames, frames.mean(dim=1)


@register_pooling("mean")
def mean_pooling(dim: int, width: int | None = None) -> TemporalPooling:
    """The mean over frames (no parameters)."""
    return TemporalPooling(dim, "mean")


@register_pooling("conv")
def conv_pooling(dim: int, width: int | None = None) -> TemporalPooling:
    """M2-CLIP's temporal pooling adapter (Linear, depthwise Conv1d over T, Linear, residual), then the mean."""
    return TemporalPooling(dim, "conv", width)
