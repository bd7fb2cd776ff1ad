import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipadapt.data import (
    CLIP_MEAN, CLIP_STD, HorizontalFlip, Normalize, RandAugment, RandomCrop, RandomResizedCrop,
    ShortSideScaleJitter, SpatialCrops, eval_transform, train_transform,
)

seeds = st.integers(0, 2**31 - 1)


def ramp_clip(frames=4, height=48, width=64):
    """Frame t is the same image plus t, so any per-frame difference in geometry shows."""
    base = torch.randint(0, 200, (1, 3, height, width), dtype=torch.uint8)
    return base + torch.arange(frames, dtype=torch.uint8)[:, None, None, None]


def assert_same_geometry(out):
    steps = out.float().diff(dim=0)
    assert torch.allclose(steps, steps[:, :, :1, :1].expand_as(steps).clone().fill_(1.0))


random_transforms = [
    lambda: RandomCrop(24),
    lambda: RandomResizedCrop(24),
    lambda: HorizontalFlip(0.5),
    lambda: ShortSideScaleJitter(24, 40),
]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(random_transforms) - 1), seeds)
def test_random_geometry_is_the_same_for_every_frame(which, seed):
    transform = random_transforms[which]()
    clip = ramp_clip()
    out = transform(clip, torch.Generator().manual_seed(seed))
    if isinstance(transform, (RandomCrop, HorizontalFlip)):
        assert_same_geometry(out)  # exact copies shifted by t
    else:
        assert torch.allclose(out.float().diff(dim=0), torch.ones_like(out[1:].float()), atol=1.0)


@settings(max_examples=30, deadline=None)
@given(seeds)
def test_randaugment_applies_the_same_ops_to_identical_frames(seed):
    frame = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    clip = frame.expand(5, -1, -1, -1).clone()
    out = RandAugment(magnitude=9, num_ops=4, p=1.0)(clip, torch.Generator().manual_seed(seed))
    assert (out == out[:1]).all()


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["k400", "ssv2"]), seeds)
def test_training_pipelines_are_deterministic_by_seed(style, seed):
    clip = torch.randint(0, 256, (4, 3, 40, 56), dtype=torch.uint8)
    pipeline = train_transform(style, size=32)
    first = pipeline(clip, torch.Generator().manual_seed(seed))
    second = pipeline(clip, torch.Generator().manual_seed(seed))
    assert first.shape == (4, 3, 32, 32) and first.dtype == torch.uint8  # normalised on the device
    assert torch.equal(first, second)


def test_different_seeds_give_different_crops():
    clip = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    crops = {RandomCrop(16)(clip, torch.Generator().manual_seed(seed)).sum().item() for seed in range(10)}
    assert len(crops) > 1


@pytest.mark.parametrize("num_crops, lefts", [(1, [38]), (3, [0, 38, 76]), (4, [0, 19, 38, 76])])
def test_spatial_crops_sit_at_the_spec_offsets_of_the_margin(num_crops, lefts):
    assert [left for _, left in SpatialCrops(224, num_crops).boxes(224, 300)] == lefts
    assert [top for top, _ in SpatialCrops(224, num_crops).boxes(300, 224)] == lefts


def test_eval_transform_returns_views_first():
    clip = torch.randint(0, 256, (8, 3, 240, 320), dtype=torch.uint8)
    assert eval_transform(64, num_crops=1)(clip).shape == (8, 3, 64, 64)
    assert eval_transform(64, num_crops=4)(clip).shape == (4, 8, 3, 64, 64)


def test_clip_normalisation_maps_the_mean_to_zero():
    mean_colour = (torch.tensor(CLIP_MEAN) * 255)[None, :, None, None].expand(1, 3, 2, 2)
    assert Normalize()(mean_colour / 255).abs().max() < 1e-6
    white = Normalize()(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).flatten()
    assert torch.allclose(white, (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD))


def test_crop_larger_than_clip_names_both_sizes():
    with pytest.raises(ValueError, match="32x32 crop does not fit a 20x30"):
        RandomCrop(32)(torch.zeros(1, 3, 20, 30, dtype=torch.uint8))


def test_unknown_style_and_crop_count_name_the_accepted_ones():
    with pytest.raises(ValueError, match="k400, ssv2"):
        train_transform("imagenet")
    with pytest.raises(ValueError, match=r"\[1, 3, 4\]"):
        SpatialCrops(224, 2)
