"""How a model wants its images: channel mean and std, side in pixels, resize interpolation.

Every family keeps this in its own config: open_clip in ``model.visual.preprocess_cfg`` (set by
``create_model``; per pretrained tag in ``open_clip.get_pretrained_cfg``), timm in the model's
``pretrained_cfg`` (``timm.data.resolve_data_config``), Hugging Face in the image processor's
``preprocessor_config.json``. A spec's ``preprocess(model)`` reads a built model's,
``preprocess_for(arch, weights, tiny)`` the config a recipe names (before anything is built).
Where a family says nothing, CLIP's own values are used and the ``source`` says so.

Example:
    >>> Preprocess.clip_defaults(224, "no config").mean
    (0.48145466, 0.4578275, 0.40821073)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_INTERPOLATION = "bicubic"  # OpenAI CLIP's and open_clip's resize
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # Hugging Face image processors' ``resample``


@dataclass(frozen=True)
class Preprocess:
    """A model's image preprocessing.

    Attributes:
        mean, std: per-channel statistics (RGB) applied to pixels in [0, 1].
        size: the image side the model was trained at, or ``None`` when unknown.
        interpolation: ``bilinear``, ``bicubic`` or ``nearest``.
        source: where these values come from, in words.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int | None
    interpolation: str
    source: str

    def __post_init__(self):
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"image mean {self.mean} and std {self.std} must be three numbers each, std positive")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")

    @classmethod
    def clip_defaults(cls, size: int | None, why: str) -> "Preprocess":
        """CLIP's mean, std and bicubic resize, with `why` no model config gave them."""
        return cls(CLIP_MEAN, CLIP_STD, size, CLIP_INTERPOLATION, f"CLIP's defaults: {why}")

    def overridden(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   size: int | None = None, interpolation: str | None = None) -> "Preprocess":
        """These values with the given ones replaced (a recipe's ``data.mean`` ...); the source names them."""
        given = {k: v for k, v in dict(mean=mean, std=std, size=size, interpolation=interpolation).items() if v is not None}
        if not given:
            return self
        values = {k: tuple(float(x) for x in v) if k in ("mean", "std") else v for k, v in given.items()}
        return replace(self, **values, source=f"{self.source}; the recipe sets {', '.join(f'data.{k}' for k in given)}")

    def describe(self) -> str:
        """One line: what will be used and where it comes from.

        Example:
            >>> Preprocess((0.5,) * 3, (0.5,) * 3, 224, "bicubic", "timm pretrained_cfg").describe()
            'images 224 px, bicubic, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5) (from timm pretrained_cfg)'
        """
        numbers = lambda values: "(" + ", ".join(f"{v:.4g}" for v in values) + ")"  # noqa: E731
        size = f"{self.size} px" if self.size else "size unknown"
        return f"images {size}, {self.interpolation}, mean {numbers(self.mean)}, std {numbers(self.std)} (from {self.source})"


def side(size) -> int | None:
    """An image side from an int, an ``(h, w)`` / ``(c, h, w)`` tuple or a Hugging Face size dict."""
    if size is None:
        return None
    if isinstance(size, dict):
        size = size.get("shortest_edge") or size.get("height") or size.get("width")
        return None if size is None else int(size)
    if isinstance(size, (tuple, list)):
        return int(size[-1])
    return int(size)


def from_config(config: dict, size: int | None, source: str) -> Preprocess:
    """A `Preprocess` from an open_clip / timm style dict (``mean``, ``std``, ``interpolation``);
    missing statistics are CLIP's, and the source says so."""
    if config.get("mean") is None or config.get("std") is None:
        return Preprocess.clip_defaults(size, f"{source} states no mean and std")
    interpolation = config.get("interpolation") or CLIP_INTERPOLATION
    return Preprocess(tuple(config["mean"]), tuple(config["std"]), size, interpolation, source)


def from_hf_directory(directory: str | Path, size: int | None) -> Preprocess:
    """The image processor config (``preprocessor_config.json``) of a local Hugging Face model."""
    file = Path(directory) / "preprocessor_config.json"
    if not file.is_file():
        return Preprocess.clip_defaults(size, f"{directory} has no preprocessor_config.json")
    config = json.loads(file.read_text())
    found = side(config.get("crop_size")) or side(config.get("size")) or size
    interpolation = PIL_RESAMPLE.get(config.get("resample"), CLIP_INTERPOLATION)
    return from_config({"mean": config.get("image_mean"), "std": config.get("image_std"), "interpolation": interpolation},
                       found, str(file))


def carried_preprocess(model) -> Preprocess:
    """The `Preprocess` a video model carries (``model.preprocess``, looked for through DDP's
    ``module``, ``torch.compile``'s ``_orig_mod`` and wrappers' ``model``); CLIP's values, stated,
    for a model that carries none.

    Example:
        >>> carried_preprocess(video_clip).describe()   # doctest: +SKIP
    """
    seen = set()
    while model is not None and id(model) not in seen:
        seen.add(id(model))
        found = getattr(model, "preprocess", None)
        if isinstance(found, Preprocess):
            return found
        model = next((getattr(model, name) for name in ("module", "_orig_mod", "model") if hasattr(model, name)), None)
    return Preprocess.clip_defaults(None, "the model carries no preprocessing")


__all__ = ["CLIP_MEAN", "CLIP_STD", "INTERPOLATIONS", "Preprocess", "carried_preprocess", "from_config", "from_hf_directory", "side"]
