"""Clip transforms on (T, 3, H, W) tensors that draw their random parameters once per clip.

Every transform is called as ``transform(clip, generator)``: the random choices (scale, crop
box, flip, RandAugment ops) come from the torch generator, once per call, and apply to all T
frames alike. Spatial multi-crop returns the views stacked first, (S, T, 3, h, w); the
transforms after it treat leading axes as batch.

Ready-made pipelines follow M2-CLIP (K400: short side jitter [224, 258], random 224 crop, flip;
SSv2: RandAugment m7 n4 mstd0.5 and random-resized crop of area (0.08, 1), no flip; test: short
side 224 and 1, 3 or 4 crops along the long side). They keep clips uint8: a worker hands a
quarter of the bytes of float32 through its queue and pinned memory, and
:func:`normalize_video` makes them float and CLIP-normalised on the device, in the step.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "Compose",
    "ShortSideScaleJitter",
    "ShortSideResize",
    "RandomCrop",
    "CenterCrop",
    "RandomResizedCrop",
    "HorizontalFlip",
    "RandAugment",
    "SpatialCrops",
    "Normalize",
    "normalize_video",
    "train_transform",
    "eval_transform",
    "TRAIN_STYLES",
    "CROP_OFFSETS",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TRAIN_STYLES = ("k400", "ssv2")
# Crop positions as fractions of the margin along the long side (M2-CLIP test views).
CROP_OFFSETS = {1: (0.5,), 3: (0.0, 0.5, 1.0), 4: (0.0, 0.25, 0.5, 1.0)}

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _size(clip: torch.Tensor) -> tuple[int, int]:
    return clip.shape[-2], clip.shape[-1]


def _vision():
    """torchvision's functional transforms, imported at the first transform: importing them costs
    about a second, which `clipadapt validate` and the recipe checks do not need to pay."""
    import torchvision.transforms.v2.functional

    return torchvision.transforms.v2.functional


def _resize(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return _vision().resize(clip, [height, width], antialias=True)


def _resize_short_side(clip: torch.Tensor, short_side: int) -> torch.Tensor:
    height, width = _size(clip)
    scale = short_side / min(height, width)
    return _resize(clip, max(short_side, round(height * scale)), max(short_side, round(width * scale)))


def _check_fits(clip: torch.Tensor, size: int, name: str) -> None:
    height, width = _size(clip)
    if height < size or width < size:
        raise ValueError(f"{name}: a {size}x{size} crop does not fit a {height}x{width} clip; resize first")


class Compose:
    """Apply transforms in order, passing the same generator to each.

    Example:
        >>> clip = torch.zeros(8, 3, 240, 320, dtype=torch.uint8)
        >>> Compose([ShortSideResize(112), CenterCrop(112)])(clip).shape
        torch.Size([8, 3, 112, 112])
    """

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for transform in self.transforms:
            clip = transform(clip, generator)
        return clip

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class ShortSideResize:
    """Resize so the short side is ``short_side`` pixels, keeping the aspect ratio.

    Example:
        >>> ShortSideResize(224)(torch.zeros(2, 3, 240, 320, dtype=torch.uint8)).shape
        torch.Size([2, 3, 224, 299])
    """

    def __init__(self, short_side: int):
        self.short_side = short_side

    def __call__(self, clip, generator=None):
        return _resize_short_side(clip, self.short_side)

    def __repr__(self):
        return f"ShortSideResize({self.short_side})"


class ShortSideScaleJitter:
    """Resize the short side to a random length in [min_size, max_size] (one draw per clip).

    Example:
        >>> out = ShortSideScaleJitter(224, 258)(torch.zeros(2, 3, 240, 320, dtype=torch.uint8))
        >>> 224 <= min(out.shape[-2:]) <= 258
        True
    """

    def __init__(self, min_size: int, max_size: int):
        if not 0 < min_size <= max_size:
            raise ValueError(f"ShortSideScaleJitter needs 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, clip, generator=None):
        return _resize_short_side(clip, _randint(self.min_size, self.max_size, generator))

    def __repr__(self):
        return f"ShortSideScaleJitter({self.min_size}, {self.max_size})"


class RandomCrop:
    """A random ``size`` x ``size`` crop, the same box for every frame.

    Example:
        >>> RandomCrop(64)(torch.zeros(4, 3, 80, 100, dtype=torch.uint8)).shape
        torch.Size([4, 3, 64, 64])
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, clip, generator=None):
        _check_fits(clip, self.size, "RandomCrop")
        height, width = _size(clip)
        top = _randint(0, height - self.size, generator)
        left = _randint(0, width - self.size, generator)
        return clip[..., top : top + self.size, left : left + self.size]

    def __repr__(self):
        return f"RandomCrop({self.size})"


class CenterCrop:
    """The central ``size`` x ``size`` crop.

    Example:
        >>> CenterCrop(64)(torch.zeros(4, 3, 80, 100, dtype=torch.uint8)).shape
        torch.Size([4, 3, 64, 64])
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, clip, generator=None):
        _check_fits(clip, self.size, "CenterCrop")
        height, width = _size(clip)
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return clip[..., top : top + self.size, left : left + self.size]

    def __repr__(self):
        return f"CenterCrop({self.size})"


class RandomResizedCrop:
    """Crop a random box of ``scale`` area fraction and ``ratio`` aspect, resized to ``size``.

    The box is drawn as in Inception training (ten tries, then a central crop of the nearest
    allowed aspect) and shared by all frames.

    Example:
        >>> RandomResizedCrop(32)(torch.zeros(4, 3, 80, 100, dtype=torch.uint8)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)

    def box(self, height: int, width: int, generator=None) -> tuple[int, int, int, int]:
        """A (top, left, box_height, box_width) drawn for a height x width image."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(*log_ratio, generator))
            box_width = round(math.sqrt(target_area * aspect))
            box_height = round(math.sqrt(target_area / aspect))
            if 0 < box_width <= width and 0 < box_height <= height:
                top = _randint(0, height - box_height, generator)
                left = _randint(0, width - box_width, generator)
                return top, left, box_height, box_width
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        box_width, box_height = (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
        box_width, box_height = min(box_width, width), min(box_height, height)
        return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width

    def __call__(self, clip, generator=None):
        top, left, box_height, box_width = self.box(*_size(clip), generator)
        crop = clip[..., top : top + box_height, left : left + box_width]
        return _resize(crop, self.size, self.size)

    def __repr__(self):
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class HorizontalFlip:
    """Mirror the whole clip left-right with probability ``p``.

    Example:
        >>> clip = torch.arange(4.0).reshape(1, 1, 1, 4)
        >>> HorizontalFlip(p=1.0)(clip).flatten().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, clip, generator=None):
        if _uniform(0.0, 1.0, generator) < self.p:
            return clip.flip(-1)
        return clip

    def __repr__(self):
        return f"HorizontalFlip(p={self.p})"


_FILL = [124, 116, 104]  # ImageNet mean in 0..255, the fill timm uses for geometric ops


def _solarize(clip, threshold):
    return clip if threshold > 255 else _vision().solarize(clip, threshold)


def _solarize_add(clip, amount):
    added = (clip.to(torch.int16) + amount).clamp(0, 255).to(clip.dtype)
    return torch.where(clip < 128, added, clip)


def _affine(clip, *, angle=0.0, translate=(0, 0), shear=(0.0, 0.0)):
    return _vision().affine(clip, angle=angle, translate=list(translate), scale=1.0, shear=list(shear), fill=_FILL)


def _shear_degrees(level):
    return math.degrees(math.atan(level))


# name -> (needs a random sign, level (0..10) -> argument, apply(clip, argument)).
# Magnitudes follow timm's RandAugment ("rand-m7-n4-mstd0.5").
_RAND_OPS = {
    "AutoContrast": (False, lambda m: None, lambda c, a, h, w: _vision().autocontrast(c)),
    "Equalize": (False, lambda m: None, lambda c, a, h, w: _vision().equalize(c)),
    "Invert": (False, lambda m: None, lambda c, a, h, w: _vision().invert(c)),
    "Rotate": (True, lambda m: 30.0 * m / 10, lambda c, a, h, w: _affine(c, angle=a)),
    "Posterize": (False, lambda m: int(4 * m / 10), lambda c, a, h, w: _vision().posterize(c, a)),
    "Solarize": (False, lambda m: int(256 * m / 10), lambda c, a, h, w: _solarize(c, a)),
    "SolarizeAdd": (False, lambda m: int(110 * m / 10), lambda c, a, h, w: _solarize_add(c, a)),
    "Color": (False, lambda m: 1.8 * m / 10 + 0.1, lambda c, a, h, w: _vision().adjust_saturation(c, a)),
    "Contrast": (False, lambda m: 1.8 * m / 10 + 0.1, lambda c, a, h, w: _vision().adjust_contrast(c, a)),
    "Brightness": (False, lambda m: 1.8 * m / 10 + 0.1, lambda c, a, h, w: _vision().adjust_brightness(c, a)),
    "Sharpness": (False, lambda m: 1.8 * m / 10 + 0.1, lambda c, a, h, w: _vision().adjust_sharpness(c, a)),
    "ShearX": (True, lambda m: 0.3 * m / 10, lambda c, a, h, w: _affine(c, shear=(_shear_degrees(a), 0.0))),
    "ShearY": (True, lambda m: 0.3 * m / 10, lambda c, a, h, w: _affine(c, shear=(0.0, _shear_degrees(a)))),
    "TranslateXRel": (True, lambda m: 0.45 * m / 10, lambda c, a, h, w: _affine(c, translate=(round(a * w), 0))),
    "TranslateYRel": (True, lambda m: 0.45 * m / 10, lambda c, a, h, w: _affine(c, translate=(0, round(a * h)))),
}


class RandAugment:
    """RandAugment on uint8 clips: ``num_ops`` ops drawn with replacement, each applied with
    probability ``p`` at a magnitude drawn from N(``magnitude``, ``magnitude_std``) clipped to
    [0, 10], with timm's op set and magnitude scales. Every frame gets the same ops, magnitudes
    and signs; image statistics (AutoContrast, Equalize) are taken per frame as for images.

    Example:
        >>> clip = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> RandAugment(magnitude=7, num_ops=4)(clip, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 32, 32])
    """

    ops = tuple(_RAND_OPS)

    def __init__(self, magnitude: float = 7, num_ops: int = 4, magnitude_std: float = 0.5, p: float = 0.5):
        self.magnitude, self.num_ops, self.magnitude_std, self.p = magnitude, num_ops, magnitude_std, p

    def __call__(self, clip, generator=None):
        if clip.dtype != torch.uint8:
            raise TypeError(f"RandAugment expects a uint8 clip, got {clip.dtype}; put it before Normalize")
        height, width = _size(clip)
        choices = torch.randint(len(self.ops), (self.num_ops,), generator=generator).tolist()
        for choice in choices:
            draws = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
            noise = torch.randn((), generator=generator, dtype=torch.float64).item()
            if draws[0] >= self.p:
                continue
            signed, level_to_arg, apply = _RAND_OPS[self.ops[choice]]
            level = min(10.0, max(0.0, self.magnitude + self.magnitude_std * noise))
            argument = level_to_arg(level)
            if signed and draws[1] < 0.5:
                argument = -argument
            clip = apply(clip, argument, height, width)
        return clip

    def __repr__(self):
        return f"RandAugment(magnitude={self.magnitude}, num_ops={self.num_ops}, magnitude_std={self.magnitude_std})"


class SpatialCrops:
    """``num_crops`` square crops of side ``size`` spread along the long side: (S, T, 3, h, w).

    The crops sit at fractions {0, 1/4, 1/2, 1} (4 crops), {0, 1/2, 1} (3 crops) or 1/2 (1 crop)
    of the margin between the long side and ``size``, centred on the short side.

    Example:
        >>> SpatialCrops(224, 3)(torch.zeros(8, 3, 224, 298, dtype=torch.uint8)).shape
        torch.Size([3, 8, 3, 224, 224])
    """

    def __init__(self, size: int, num_crops: int = 3):
        if num_crops not in CROP_OFFSETS:
            raise ValueError(f"num_crops={num_crops} is not supported; accepted: {sorted(CROP_OFFSETS)}")
        self.size, self.num_crops = size, num_crops

    def boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of each crop."""
        margin_y, margin_x = height - self.size, width - self.size
        if margin_x >= margin_y:
            return [(margin_y // 2, round(margin_x * f)) for f in CROP_OFFSETS[self.num_crops]]
        return [(round(margin_y * f), margin_x // 2) for f in CROP_OFFSETS[self.num_crops]]

    def __call__(self, clip, generator=None):
        _check_fits(clip, self.size, "SpatialCrops")
        crops = [clip[..., top : top + self.size, left : left + self.size] for top, left in self.boxes(*_size(clip))]
        return torch.stack(crops)

    def __repr__(self):
        return f"SpatialCrops({self.size}, num_crops={self.num_crops})"


class Normalize:
    """uint8 (or float in [0, 1]) to float32 normalised by channel ``mean``/``std`` (CLIP's by default).

    Example:
        >>> Normalize()(torch.zeros(1, 3, 2, 2, dtype=torch.uint8)).dtype
        torch.float32
    """

    def __init__(self, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, clip, generator=None):
        clip = clip.float().div_(255.0) if clip.dtype == torch.uint8 else clip.float()
        return (clip - self.mean) / self.std

    def __repr__(self):
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


_DEVICE_STATS: dict = {}


def normalize_video(video: torch.Tensor, device: torch.device | str | None = None,
                    mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """A batch as the model takes it: moved to ``device``, then uint8 made float32 and normalised
    by channel (CLIP's statistics), on the device. Channels are the third axis from the end,
    (..., 3, H, W). A float batch is taken as already normalised (a custom pipeline that ends
    in :class:`Normalize`) and only moved.

    Example:
        >>> batch = torch.full((2, 8, 3, 4, 4), 255, dtype=torch.uint8)   # (B, T, 3, H, W)
        >>> out = normalize_video(batch, "cpu")
        >>> out.dtype, round(out[0, 0, 0, 0, 0].item(), 4)
        (torch.float32, 1.9303)
    """
    video = video.to(device, non_blocking=True) if device is not None else video
    if video.dtype != torch.uint8:
        if not video.is_floating_point():
            raise TypeError(f"a video batch must be uint8 (0..255) or normalised float, got {video.dtype}")
        return video
    if video.ndim < 3 or video.shape[-3] != len(mean):
        raise ValueError(f"expected channels on the third axis from the end, (..., {len(mean)}, H, W); got {tuple(video.shape)}")
    key = (video.device, tuple(mean), tuple(std))
    if key not in _DEVICE_STATS:  # one small host-to-device copy per device, not one per batch
        scale = torch.tensor(std, dtype=torch.float32, device=video.device) * 255.0
        _DEVICE_STATS[key] = (torch.tensor(mean, dtype=torch.float32, device=video.device)[:, None, None] * 255.0,
                              scale[:, None, None])
    shift, scale = _DEVICE_STATS[key]
    return (video.float() - shift) / scale


def train_transform(style: str = "k400", size: int = 224) -> Compose:
    """The M2-CLIP training pipeline for ``style`` ``"k400"`` or ``"ssv2"`` at ``size`` pixels.

    k400: short side uniform in [size, size·258/224], random crop, flip. ssv2: random-resized
    crop (area 0.08–1), RandAugment m7 n4 mstd0.5, no flip (left/right matters in SSv2 labels).
    Both end in CLIP normalisation, giving float (T, 3, size, size).

    Example:
        >>> clip = torch.randint(0, 256, (8, 3, 240, 320), dtype=torch.uint8)
        >>> train_transform("ssv2", size=112)(clip, torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 112, 112])
    """
    if style == "k400":
        return Compose([
            ShortSideScaleJitter(size, round(size * 258 / 224)),
            RandomCrop(size),
            HorizontalFlip(0.5),
        ])
    if style == "ssv2":
        return Compose([RandomResizedCrop(size, scale=(0.08, 1.0)), RandAugment(7, 4, 0.5)])
    raise ValueError(f"unknown training style {style!r}; accepted: {', '.join(TRAIN_STYLES)}")


def eval_transform(size: int = 224, num_crops: int = 1) -> Compose:
    """Test pipeline: short side to ``size``, then a centre crop (uint8 (T, 3, size, size)) or
    ``num_crops`` = 3 or 4 crops along the long side (uint8 (S, T, 3, size, size)).

    M2-CLIP tests K400 with 4 crops (× 3 temporal clips) and SSv2 with 3 crops (× 1 clip).

    Example:
        >>> clip = torch.randint(0, 256, (8, 3, 240, 320), dtype=torch.uint8)
        >>> eval_transform(112, num_crops=4)(clip).shape
        torch.Size([4, 8, 3, 112, 112])
    """
    crop = CenterCrop(size) if num_crops == 1 else SpatialCrops(size, num_crops)
    return Compose([ShortSideResize(size), crop])
