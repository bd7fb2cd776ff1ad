"""What an adapter knows besides its input: its `AdapterContext` (``ctx`` in ``forward(x, ctx)``)
and the `frames` block that tells temporal adapters T (and routes a mixed batch)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from clipadapt.backbones import Block
from clipadapt.sets import model_states
from clipadapt.sets import routing as make_routing
from clipadapt.sites import BlockState


class FramesError(RuntimeError):
    """Raised when a temporal adapter runs without a known number of frames."""


@dataclass(eq=False)
class AdapterContext:
    """What an adapter may need besides its input: ``ctx`` in ``forward(x, ctx)``.

    Attributes:
        tower: ``visual`` or ``text``.
        layer: index of the block in its tower.
        site: where the adapter sits.
        cls_index: position of the class token, or ``None``.
        num_prefix_tokens: tokens before the patch grid.
        block: the block's modules; ``block.attend(x)`` runs its own frozen attention.
    """

    tower: str
    layer: int
    site: str | None
    cls_index: int | None
    num_prefix_tokens: int
    block: Block
    native_grid: tuple[int, int] | None
    state: BlockState = field(repr=False)
    adapter_name: str = ""

    @property
    def num_frames(self) -> int:
        """T, the number of frames per video (N = B·T, frames of a video contiguous)."""
        frames = self.state.num_frames
        if frames is None:
            raise FramesError(
                f"adapter {self.adapter_name!r} in {self.tower} block {self.layer} needs the number of "
                "frames: run the forward inside `with clipadapt.frames(model, T):`"
            )
        return frames

    def grid(self, num_tokens: int) -> tuple[int, int]:
        """The patch grid ``(h, w)`` for a sequence of `num_tokens` tokens (prefix included)."""
        patches = num_tokens - self.num_prefix_tokens
        if self.native_grid and self.native_grid[0] * self.native_grid[1] == patches:
            return self.native_grid
        side = int(round(patches**0.5))
        if side * side != patches:
            raise ValueError(f"{patches} patch tokens in {self.tower} block {self.layer} do not form a square grid")
        return side, side


@contextlib.contextmanager
def frames(model: nn.Module, num_frames: int, sets: Sequence[str | Sequence[str] | None] | None = None) -> Iterator[nn.Module]:
    """Tell temporal adapters that batches hold videos of `num_frames` frames (video-major).

    Frames of one video must be contiguous: a ``(B, T, 3, H, W)`` batch is passed flattened to
    ``(B·T, 3, H, W)``. Each block records T on its input, so gradient checkpointing can
    recompute after the context has exited.

    `sets` makes a mixed batch: one entry per video, an adapter set (or a list of sets, stacked
    in that order, or ``None`` for the frozen model) that this video alone runs through,
    whatever the model's active sets. Each video gets what it would get alone with its sets
    active; videos of the same sets are gathered, so each adapter runs once per call. Sets
    holding weight adapters (LoRA), routed or active, are refused: their weights are shared.

    Example:
        >>> with clipadapt.frames(clip, 8):
        ...     f = clip.encode_image(video.flatten(0, 1))   # video: (B, 8, 3, 224, 224)
        >>> with clipadapt.frames(clip, 8, sets=["k400", "ssv2", "k400"]):   # B = 3
        ...     f = clip.encode_image(video.flatten(0, 1))
    """
    if isinstance(num_frames, torch.Tensor) and num_frames.numel() == 1:  # a traced `video.shape[1]`
        num_frames = int(num_frames)
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    states = model_states(model)
    routing = None if sets is None else make_routing(states, num_frames, sets)
    previous = [(s.num_frames, s.routing) for s in states]
    for s in states:
        s.num_frames = num_frames
        if routing is not None:
            s.routing = routing
    try:
        yield model
    finally:
        for s, (prev, route) in zip(states, previous):
            s.num_frames, s.routing = prev, route
