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
    return from_hf_processor(json.loads(file.read_text()), size, str(file))


def from_hf_processor(config, size: int | None, source: str) -> Preprocess:
    """A `Preprocess` from a Hugging Face image processor's settings (``image_mean``, ``image_std``,
    ``resample``, ``crop_size``/``size``), a ``preprocessor_config.json`` dict or the attributes of
    an image processor object; `size` where they state no side."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    found = side(_plain_size(get("crop_size"))) or side(_plain_size(get("size"))) or size
    resample = get("resample")
    interpolation = PIL_RESAMPLE.get(None if resample is None else int(resample), CLIP_INTERPOLATION)
    return from_config({"mean": get("image_mean"), "std": get("image_std"), "interpolation": interpolation}, found, source)


def from_hf_image_processor(model_type: str, size: int | None) -> Preprocess:
    """The defaults of the image processor class ``transformers`` pairs with `model_type`
    (``SiglipImageProcessor`` for ``siglip``: mean and std 0.5, bicubic), for a model that comes
    without a ``preprocessor_config.json`` (a random-weight model built from its config); `size`
    is the model's own side, not the processor's default.

    Example:
        >>> from_hf_image_processor("siglip", 224).mean
        (0.5, 0.5, 0.5)
    """
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    model_type = model_type.removesuffix("_vision_model")  # SiglipVisionModel's siglip_vision_model: SigLIP's processor
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    names = list(names.values()) if isinstance(names, dict) else [n for n in (names or ()) if n]
    for name in names:
        found = getattr(transformers, name, None)
        if found is not None:
            defaults = from_hf_processor(found(), None, f"transformers' {name} defaults")
            return replace(defaults, size=size or defaults.size)
    return Preprocess.clip_defaults(size, f"transformers pairs no image processor with model type {model_type!r}")


def _plain_size(size):
    """A transformers ``SizeDict`` as a plain dict (``side`` reads dicts)."""
    if size is None or isinstance(size, (int, dict, tuple, list)):
        return size
    return {key: getattr(size, key, None) for key in ("shortest_edge", "height", "width")}


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


__all__ = ["CLIP_MEAN", "CLIP_STD", "INTERPOLATIONS", "Preprocess", "carried_preprocess", "from_config", "from_hf_directory", "from_hf_image_processor",
           "from_hf_processor", "side"]
