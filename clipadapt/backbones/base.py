"""What a backbone spec answers: where the towers and blocks of a model are and how a block is laid out.

Every block is pre-norm, ``x -> x + attn(ln_1(x)) -> x + mlp(ln_2(x))``. A spec names, for each
block, the modules the injection engine hooks:

- ``module``: the whole block (its input is the residual stream, its output the next one);
- ``attn_end``: the submodule whose output ends the attention branch (before the residual add);
- ``mlp``: the MLP, whose input is ``ln_2(x)`` and whose output is the MLP branch;
- ``ln_1``, ``attn``: for adapters that re-use the block's own frozen attention (AIM).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn as nn

from clipadapt.registry import BACKBONES

TOWERS = ("visual", "text")


@dataclass(eq=False)
class Block:
    """One pre-norm transformer block and the submodules the engine hooks."""

    module: nn.Module
    ln_1: nn.Module
    attn: nn.Module
    attn_end: nn.Module
    ln_2: nn.Module
    mlp: nn.Module
    attend: Callable[[torch.Tensor], torch.Tensor]
    """Runs the block's own attention on a batch-first ``(N, L, D)`` tensor, without a mask and
    without the forward hooks placed on the attention module (those serve the block's own call)."""


@dataclass(eq=False)
class Tower:
    """One tower (``visual`` or ``text``) of a backbone.

    Attributes:
        name: ``visual`` or ``text``.
        module: the tower's root module.
        blocks: its transformer blocks, input to output.
        width: the residual-stream width D.
        seq_first: whether blocks see ``(L, N, D)`` tensors (OpenAI ``clip``) instead of ``(N, L, D)``.
        cls_index: position of the class token, or ``None`` (text towers pool at the EOT token).
        num_prefix_tokens: tokens before the patch grid (class and register tokens).
        grid: the patch grid ``(h, w)`` at the model's native resolution, ``None`` for text.
    """

    name: str
    module: nn.Module
    blocks: list[Block]
    width: int
    seq_first: bool = False
    cls_index: int | None = None
    num_prefix_tokens: int = 0
    grid: tuple[int, int] | None = None

    @property
    def layout(self) -> str:
        return "(L, N, D)" if self.seq_first else "(N, L, D)"


class BackboneSpec:
    """Base class of a model family's spec. Subclasses are registered with ``@register_backbone``.

    A subclass implements ``matches(model)`` (by structure, never by class name alone) and
    ``towers(model)``; ``looks_for`` says in words what ``matches`` checks, for error messages.
    """

    family: ClassVar[str] = ""
    looks_for: ClassVar[str] = ""

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        raise NotImplementedError

    @classmethod
    def towers(cls, model: nn.Module) -> dict[str, Tower]:
        raise NotImplementedError


def has(obj: object, *names: str) -> bool:
    """Whether `obj` has every attribute in `names`."""
    return all(hasattr(obj, name) for name in names)


class UnsupportedModelError(TypeError):
    """Raised when no registered backbone spec recognises a model."""


def detect(model: nn.Module) -> type[BackboneSpec]:
    """The registered spec whose structure `model` has.

    Example:
        >>> import open_clip, clipadapt.backbones as bb
        >>> bb.detect(open_clip.create_model("ViT-B-16")).family
        'open_clip'
    """
    for _, spec in BACKBONES.items_in_order():
        if spec.matches(model):
            return spec
    looked = "; ".join(f"{name}: {spec.looks_for}" for name, spec in BACKBONES.items_in_order())
    raise UnsupportedModelError(
        f"no backbone spec recognises {type(model).__name__}; looked for {looked}. "
        "Register a spec for it with @clipadapt.register_backbone."
    )


def towers_of(model: nn.Module) -> dict[str, Tower]:
    """The towers of `model`, keyed ``visual`` / ``text``."""
    return detect(model).towers(model)


def get_tower(model: nn.Module, name: str) -> Tower:
    """One tower of `model` by name; an unknown or absent tower is an error listing those present."""
    towers = towers_of(model)
    if name not in towers:
        raise ValueError(
            f"tower {name!r} is not in this {type(model).__name__}; it has: {', '.join(towers)}"
        )
    return towers[name]


def fingerprint(model: nn.Module, skip: Callable[[str], bool] = lambda name: False) -> dict:
    """A description of the backbone's architecture that adapters saved from it must match.

    Covers, per tower, the block count, width, patch grid and the names and shapes of the
    block parameters (names for which `skip` is true are left out: the adapters themselves).
    """
    description = {"family": detect(model).family, "towers": {}}
    for name, tower in towers_of(model).items():
        shapes = []
        for index, block in enumerate(tower.blocks):
            for pname, param in block.module.named_parameters():
                if not skip(pname):
                    # a parametrized weight (LoRA) is named, and sorted, as the plain model has it
                    pname = re.sub(r"parametrizations\.(\w+)\.original$", r"\1", pname)
                    shapes.append(f"{index}.{pname}:{tuple(param.shape)}")
        description["towers"][name] = {
            "blocks": len(tower.blocks),
            "width": tower.width,
            "grid": list(tower.grid) if tower.grid else None,
            "shapes": hashlib.sha1("|".join(sorted(shapes)).encode()).hexdigest()[:16],
        }
    digest = hashlib.sha1(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": digest, **description}


def describe(model: nn.Module) -> dict:
    """Towers, blocks, widths, layout, CLS index, patch grid and sites of a model, as a dict."""
    from clipadapt.inject import SITES

    return {
        "family": detect(model).family,
        "towers": {
            name: {
                "blocks": len(t.blocks),
                "width": t.width,
                "layout": t.layout,
                "cls_index": t.cls_index,
                "prefix_tokens": t.num_prefix_tokens,
                "grid": t.grid,
                "sites": list(SITES),
            }
            for name, t in towers_of(model).items()
        },
    }


def first_tensor(value):
    """The first tensor of a module output (a tensor, or a tuple whose first item is one)."""
    return value if isinstance(value, torch.Tensor) else value[0]


def encoder(clip: nn.Module, tower: str, fallback: nn.Module | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CLIP's own encoder for `tower` (``visual`` or ``text``), as a function of images or
    token ids: ``encode_image``/``encode_text`` (open_clip, OpenAI ``clip``) or
    ``get_image_features``/``get_text_features`` (Hugging Face, features as a tensor); a model
    with neither is `fallback` (a bare tower module) or itself.
    """
    own, hf, keyword = ("encode_image", "get_image_features", "pixel_values") if tower == "visual" else (
        "encode_text", "get_text_features", "input_ids")
    if hasattr(clip, own):
        return getattr(clip, own)
    if hasattr(clip, hf):
        features = getattr(clip, hf)

        def encode(inputs: torch.Tensor) -> torch.Tensor:
            out = features(**{keyword: inputs})
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        return encode
    return fallback if fallback is not None else clip


def replace_first(value, tensor: torch.Tensor):
    """`value` with its first tensor replaced by `tensor` (keeps tuple outputs tuples)."""
    if isinstance(value, torch.Tensor):
        return tensor
    return (tensor, *value[1:]) if isinstance(value, tuple) else [tensor, *value[1:]]


__all__ = [
    "TOWERS",
    "Block",
    "Tower",
    "BackboneSpec",
    "UnsupportedModelError",
    "detect",
    "towers_of",
    "get_tower",
    "fingerprint",
    "describe",
    "has",
    "first_tensor",
    "replace_first",
]
