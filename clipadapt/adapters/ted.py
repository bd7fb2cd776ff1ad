"""TED-Adapter (M2-CLIP): temporal enhancement + temporal difference, one per visual block.

Input ``x`` of shape ``(B·T, 1+h·w, D)``, frames of a video contiguous.

- TE, on every token: Linear D→w, depthwise Conv1d over time (kernel 3, padding 1), Linear w→D.
- TD, on patch tokens only (the class token gets zero): ``d_t = x_t − x_{t−1}``, Linear D→w,
  per-frame depthwise 3×3 conv on the patch grid, Linear w→D; the first frame gets zero.

The delta is ``TE(x) + TD(x)`` (``mode="parallel"``) or ``TE(x) + TD(x + TE(x))``
(``mode="sequential"``). Both convolutions start at zero, so a fresh adapter is an exact identity.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from clipadapt.inject import Adapter, AdapterContext
from clipadapt.registry import register_adapter

PARTS = ("te", "td")
MODES = ("parallel", "sequential")


def zero_(module: nn.Module) -> nn.Module:
    for param in module.parameters():
        nn.init.zeros_(param)
    return module


class _Projections(nn.Module):
    def __init__(self, dim: int, width: int):
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)


@register_adapter("ted")
class TEDAdapter(Adapter):
    """M2-CLIP's TED-Adapter: temporal enhancement plus temporal difference, in a bottleneck.

    Args:
        dim: the block width D.
        width: the bottleneck width w (384 in M2-CLIP).
        mode: ``parallel`` (the paper's) or ``sequential``.
        parts: ``("te", "td")``, or one of them alone (paper Fig. 4a).
        shared_projections: one down/up pair for both branches (the paper's eq. 6–7 read
            literally); by default each branch has its own, as the authors' release.
        kernel_size: the temporal (TE) and spatial (TD) kernel size.
        zero_first_frame: the first frame has no predecessor, so its TD delta is zero. With
            ``False``, ``d_0 = 0`` is fed through the branch as the release does, where the
            branch's biases give frame 0 a constant delta once trained.

    Example:
        >>> clipadapt.inject(clip, "ted", tower="visual", layers=range(12), site="pre_mlp", width=384)
    """

    sites = ("pre_mlp",)
    needs_frames = True

    def __init__(
        self,
        dim: int,
        width: int = 384,
        mode: str = "parallel",
        parts: list[str] | tuple[str, ...] = PARTS,
        shared_projections: bool = False,
        kernel_size: int = 3,
        zero_first_frame: bool = True,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"ted mode {mode!r} is not one of {MODES}")
        parts = tuple(parts)
        if not parts or any(p not in PARTS for p in parts) or len(set(parts)) != len(parts):
            raise ValueError(f"ted parts {parts!r} must be a non-empty subset of {PARTS}")
        self.mode, self.parts, self.zero_first_frame = mode, parts, zero_first_frame
        padding = kernel_size // 2
        shared = _Projections(dim, width) if shared_projections else None
        if "te" in parts:
            self.te = shared or _Projections(dim, width)
            self.te_conv = zero_(nn.Conv1d(width, width, kernel_size, padding=padding, groups=width))
        if "td" in parts:
            self.td = shared or _Projections(dim, width)
            self.td_conv = zero_(nn.Conv2d(width, width, kernel_size, padding=padding, groups=width))

    def temporal_enhancement(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = rearrange(self.te.down(x), "(b t) l c -> b c t l", t=num_frames)  # a channels-last view
        weight = self.te_conv.weight.unsqueeze(-1)  # the (3,) temporal kernel as (3, 1): no layout copies
        h = F.conv2d(h, weight, self.te_conv.bias, padding=(self.te_conv.padding[0], 0), groups=h.shape[1])
        return self.te.up(rearrange(h, "b c t l -> (b t) l c").contiguous())

    def temporal_difference(self, x: torch.Tensor, num_frames: int, ctx: AdapterContext) -> torch.Tensor:
        """TD's delta for the patch tokens, ``(B, T', P, D)``: T' = T − 1 frames from the second
        on, or all T with ``zero_first_frame=False``."""
        gh, gw = ctx.grid(x.shape[1])
        patches = rearrange(x[:, ctx.num_prefix_tokens :], "(b t) p d -> b t p d", t=num_frames)
        diff = patches[:, 1:] - patches[:, :-1]  # (B, T-1, P, D)
        if not self.zero_first_frame:  # d_0 = 0 goes through the branch (its biases reach frame 0)
            diff = F.pad(diff, (0, 0, 0, 0, 1, 0))
        frames_out = diff.shape[1]
        h = rearrange(self.td.down(diff), "b t (gh gw) c -> (b t) c gh gw", gh=gh, gw=gw)  # channels-last view
        h = rearrange(self.td_conv(h), "(b t) c gh gw -> b t (gh gw) c", t=frames_out)
        return self.td.up(h.contiguous())

    def forward(self, x: torch.Tensor, ctx: AdapterContext) -> torch.Tensor:
        num_frames = ctx.num_frames
        if x.shape[0] % num_frames:
            raise ValueError(f"batch of {x.shape[0]} frames is not a whole number of {num_frames}-frame videos")
        te = self.temporal_enhancement(x, num_frames) if "te" in self.parts else None
        if "td" not in self.parts:
            return te
        if num_frames == 1 and self.zero_first_frame:  # a single frame has no difference
            return te if te is not None else torch.zeros_like(x)
        td_input = x + te if (self.mode == "sequential" and te is not None) else x
        td = self.temporal_difference(td_input, num_frames, ctx)
        # write TD into the patch tokens of the frames it covers; prefix tokens (and the first
        # frame, with zero_first_frame) keep TE alone. `delta` is a fresh tensor that autograd
        # has not saved, so the in-place add is safe.
        delta = te.clone() if te is not None else torch.zeros_like(x)
        view = rearrange(delta, "(b t) l d -> b t l d", t=num_frames)
        view[:, num_frames - td.shape[1] :, ctx.num_prefix_tokens :] += td
        return delta
