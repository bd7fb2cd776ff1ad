"""A family-neutral description of a small CLIP, which every family's builder turns into its own config.

Recipes give it as ``model.config`` (tests and the quickstart build such models with random
weights, offline): the same numbers make an open_clip ``CLIP``, an OpenAI ``clip`` ``CLIP``, a
Hugging Face ``CLIPModel`` or a timm ``VisionTransformer`` (visual tower only).

Example:
    >>> TinyConfig.from_dict({"embed_dim": 64, "width": 64, "layers": 4, "heads": 2}).head_width
    32
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of a small CLIP.

    Attributes:
        embed_dim: width of the joint embedding space E.
        image_size, patch_size: the visual input side and patch side, in pixels.
        width, layers, heads: the visual tower's width, block count and attention heads.
        text_width, text_layers, text_heads: the same for the text tower.
        context_length: tokens per text sequence.
        vocab_size: the text vocabulary; 49408 takes the BPE ids of OpenAI's tokenizer.
        mlp_ratio: MLP hidden width over the block width.
    """

    embed_dim: int = 64
    image_size: int = 32
    patch_size: int = 8
    width: int = 64
    layers: int = 2
    heads: int = 2
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    context_length: int = 16
    vocab_size: int = 49408
    mlp_ratio: float = 4.0

    @classmethod
    def from_dict(cls, values: dict) -> "TinyConfig":
        """Validated: an unknown key or a size that does not divide is an error naming it."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key, value in values.items():
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"model.config.{key}: unknown key; {hint}accepted: {', '.join(names)}")
            if key != "mlp_ratio" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"model.config.{key}: {value!r} must be a positive int")
        config = cls(**values)
        if config.width % config.heads or config.text_width % config.text_heads:
            raise ValueError(f"model.config: width {config.width} / heads {config.heads} and text_width "
                             f"{config.text_width} / text_heads {config.text_heads} must divide")
        if config.image_size % config.patch_size:
            raise ValueError(f"model.config: image_size {config.image_size} is not a multiple of patch_size {config.patch_size}")
        return config

    @property
    def head_width(self) -> int:
        return self.width // self.heads

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def text_mlp_width(self) -> int:
        return int(self.text_width * self.mlp_ratio)
