"""Which frames of a video make a clip: dense (fixed stride) and TSN segment sampling.

Both samplers return the indices of ``num_clips`` clips as a LongTensor of shape (K, T). In
training they draw one random clip (K = 1) from the generator they are given; at test they are
deterministic and spread the K clips evenly over the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["dense_indices", "segment_indices", "FrameSampler", "SAMPLING_MODES"]

SAMPLING_MODES = ("dense", "segment")
DENSE_SPAN = 128  # frames covered by a K400 clip: 8 x 16 = 16 x 8 = 32 x 4


def _check(video_frames: int, num_frames: int, num_clips: int) -> None:
    if video_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {video_frames}")
    if num_frames < 1 or num_clips < 1:
        raise ValueError(f"num_frames and num_clips must be >= 1, got {num_frames} and {num_clips}")


def dense_indices(
    video_frames: int,
    num_frames: int,
    stride: int,
    *,
    train: bool,
    num_clips: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frames ``start, start + stride, ...`` of ``num_clips`` clips, as a (K, T) LongTensor.

    Training draws one clip with a uniformly random start (K must be 1). At test the K clip
    starts are the centres of K equal bins of the possible starts, so clips spread evenly in
    time. A video shorter than the clip span repeats its last frame.

    Example:
        >>> dense_indices(100, 4, 8, train=False).tolist()
        [[38, 46, 54, 62]]
        >>> dense_indices(10, 4, 4, train=False).tolist()
        [[0, 4, 8, 9]]
    """
    _check(video_frames, num_frames, num_clips)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    span = (num_frames - 1) * stride + 1
    max_start = max(0, video_frames - span)
    if train:
        if num_clips != 1:
            raise ValueError(f"training samples one clip per video, got num_clips={num_clips}")
        starts = torch.randint(0, max_start + 1, (1,), generator=generator)
    else:
        bin_width = (max_start + 1) / num_clips
        starts = ((torch.arange(num_clips) + 0.5) * bin_width).floor().long()
    offsets = torch.arange(num_frames) * stride
    return (starts[:, None] + offsets[None, :]).clamp(max=video_frames - 1)


def segment_indices(
    video_frames: int,
    num_frames: int,
    *,
    train: bool,
    num_clips: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """TSN sampling: split the video into ``num_frames`` equal segments, take one frame from each.

    Training takes a random frame of each segment (K must be 1). At test clip k takes the frame
    at fraction (k + 0.5) / K of every segment, so one clip takes the segment centres. A video
    with fewer frames than segments repeats frames.

    Example:
        >>> segment_indices(80, 4, train=False).tolist()
        [[10, 30, 50, 70]]
        >>> segment_indices(3, 4, train=False).tolist()
        [[0, 1, 1, 2]]
    """
    _check(video_frames, num_frames, num_clips)
    segment = video_frames / num_frames
    starts = torch.arange(num_frames) * segment
    if train:
        if num_clips != 1:
            raise ValueError(f"training samples one clip per video, got num_clips={num_clips}")
        fractions = torch.rand(1, num_frames, generator=generator, dtype=torch.float64)
    else:
        fractions = ((torch.arange(num_clips, dtype=torch.float64) + 0.5) / num_clips)[:, None]
        fractions = fractions.expand(num_clips, num_frames)
    positions = starts[None, :] + fractions * segment
    return positions.floor().long().clamp(0, video_frames - 1)


@dataclass(frozen=True)
class FrameSampler:
    """A sampling rule bound to its settings: ``sampler(video_frames, train=..., generator=...)``.

    ``mode`` is ``"dense"`` (``stride`` frames apart; ``None`` keeps the K400 span of 128
    frames, i.e. stride 16 for 8 frames) or ``"segment"`` (TSN). ``num_clips`` is the number of
    temporal views at test.

    Example:
        >>> FrameSampler(num_frames=8, mode="segment")(64, train=False).shape
        torch.Size([1, 8])
    """

    num_frames: int = 8
    mode: str = "dense"
    stride: int | None = None
    num_clips: int = 1

    def __post_init__(self):
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling mode {self.mode!r}; accepted: {', '.join(SAMPLING_MODES)}")

    @property
    def dense_stride(self) -> int:
        return self.stride if self.stride is not None else max(1, DENSE_SPAN // self.num_frames)

    def __call__(
        self, video_frames: int, *, train: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        num_clips = 1 if train else self.num_clips
        if self.mode == "dense":
            return dense_indices(
                video_frames, self.num_frames, self.dense_stride,
                train=train, num_clips=num_clips, generator=generator,
            )
        return segment_indices(
            video_frames, self.num_frames, train=train, num_clips=num_clips, generator=generator
        )
