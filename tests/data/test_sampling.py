import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipadapt.data import FrameSampler, dense_indices, segment_indices

video_lengths = st.integers(1, 400)
frame_counts = st.integers(1, 32)
seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=200, deadline=None)
@given(video_lengths, frame_counts, st.integers(1, 20), st.integers(1, 5), st.booleans(), seeds)
def test_dense_indices_are_in_range_with_exactly_t_frames(length, frames, stride, clips, train, seed):
    clips = 1 if train else clips
    indices = dense_indices(length, frames, stride, train=train, num_clips=clips,
                            generator=torch.Generator().manual_seed(seed))
    assert indices.shape == (clips, frames)
    assert indices.min() >= 0 and indices.max() < length
    assert (indices.diff(dim=1) >= 0).all()


@settings(max_examples=200, deadline=None)
@given(video_lengths, frame_counts, st.integers(1, 5), st.booleans(), seeds)
def test_segment_indices_take_one_frame_per_segment(length, frames, clips, train, seed):
    clips = 1 if train else clips
    indices = segment_indices(length, frames, train=train, num_clips=clips,
                              generator=torch.Generator().manual_seed(seed))
    assert indices.shape == (clips, frames)
    assert indices.min() >= 0 and indices.max() < length
    segment = torch.arange(frames)
    first = (segment * length) // frames  # floor of the segment start
    end = -((-(segment + 1) * length) // frames)  # ceil of the segment end
    assert ((indices >= first) & (indices < end.clamp(min=first + 1))).all()


@given(st.integers(200, 400), seeds)
def test_dense_training_clip_keeps_its_stride_when_the_video_is_long(length, seed):
    indices = dense_indices(length, 8, 16, train=True, generator=torch.Generator().manual_seed(seed))
    assert (indices.diff() == 16).all()


def test_short_video_repeats_its_last_frame():
    assert dense_indices(5, 4, 2, train=False).tolist() == [[0, 2, 4, 4]]


@given(video_lengths, frame_counts, seeds, st.sampled_from(["dense", "segment"]))
def test_same_seed_gives_same_training_clip(length, frames, seed, mode):
    sampler = FrameSampler(num_frames=frames, mode=mode, stride=4)
    first = sampler(length, train=True, generator=torch.Generator().manual_seed(seed))
    second = sampler(length, train=True, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(first, second)


def test_test_clips_spread_evenly_over_the_video():
    starts = dense_indices(300, 8, 16, train=False, num_clips=3)[:, 0]
    assert starts.tolist() == [31, 94, 156]
    assert segment_indices(90, 3, train=False, num_clips=3).tolist() == [[5, 35, 65], [15, 45, 75], [25, 55, 85]]


def test_default_dense_stride_keeps_a_128_frame_span():
    assert [FrameSampler(num_frames=n).dense_stride for n in (8, 16, 32)] == [16, 8, 4]


def test_training_refuses_several_clips():
    with pytest.raises(ValueError, match="num_clips=3"):
        dense_indices(100, 8, 2, train=True, num_clips=3)


def test_unknown_mode_names_the_accepted_ones():
    with pytest.raises(ValueError, match="dense, segment"):
        FrameSampler(mode="sparse")
