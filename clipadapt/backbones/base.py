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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn as nn

from clipadapt.backbones.preprocess import Preprocess
from clipadapt.backbones.tiny import TinyConfig
from clipadapt.registry import BACKBONES

TOWERS = ("visual", "text")


SITES = ("pre_attn", "attn_out", "pre_mlp", "mlp_parallel", "post_block")
"""Named positions of a pre-norm block where an adapter can sit (see `clipadapt.inject`)."""

Projection = tuple[nn.Module, str, tuple[str, ...]]
"""``(module, tensor name, chunks)``: a projection weight and the targets its equal row blocks
hold, e.g. ``(attn, "in_proj_weight", ("q", "k", "v"))`` or ``(attn.out_proj, "weight", ("o",))``."""


@dataclass(eq=False)
class Block:
    """One pre-norm transformer block and the submodules the engine hooks.

    Attributes:
        attend: runs the block's own attention on a batch-first ``(N, L, D)`` tensor, without a
            mask and without the forward hooks placed on the attention module (those serve the
            block's own call).
        cross_attend: ``cross_attend(query (N, Lq, D), memory (N, Lm, D)) -> (N, Lq, D)``, the
            block's attention with keys and values from `memory`; ``None`` where the family's
            attention cannot take them apart.
        projections: the attention's projection weights (LoRA's targets).
        refusals: what cannot be done exactly on this block's layout, and why: a site name
            (``mlp_parallel`` on a post-norm block, whose MLP reads the residual stream with no
            norm of its own) or ``attend`` (re-running the attention alone, e.g. on temporal
            tokens, where it rotates queries and keys by their patch position). The engine
            refuses such an injection with the reason.
    """

    module: nn.Module
    ln_1: nn.Module
    attn: nn.Module
    attn_end: nn.Module
    ln_2: nn.Module
    mlp: nn.Module
    attend: Callable[[torch.Tensor], torch.Tensor]
    cross_attend: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    projections: tuple[Projection, ...] = ()
    refusals: dict[str, str] = field(default_factory=dict)

    def refuse(self, what: str, who: str) -> None:
        """Raise the one-line refusal of `what` (a site or ``attend``) for `who`, if there is one.

        Example:
            >>> block.refuse("mlp_parallel", "adapter 'aim' in visual block 3")
        """
        reason = self.refusals.get(what)
        if reason:
            raise ValueError(f"{who}: {what} is not exact on this {type(self.module).__name__}: {reason}")


@dataclass(eq=False)
class Tower:
    """One tower (``visual`` or ``text``) of a backbone.

    Attributes:
        name: ``visual`` or ``text``.
        module: the tower's root module.
        blocks: its transformer blocks, input to output.
        width: the residual-stream width D.
        seq_first: whether blocks see ``(L, N, D)`` tensors (OpenAI ``clip``) instead of ``(N, L, D)``.
        cls_index: position of the class token, or ``None`` (text towers pool at the EOT token;
            some visual towers, e.g. SigLIP's, have no class token).
        num_prefix_tokens: tokens before the patch grid (class and register tokens).
        grid: the patch grid ``(h, w)`` at the model's native resolution, ``None`` for text.
        make_block: turns a module laid out as this tower's blocks (a copy of one) into a `Block`.
        image_size: the native image side in pixels (visual towers).
        context_length: tokens per text sequence (text towers).
    """

    name: str
    module: nn.Module
    blocks: list[Block]
    width: int
    seq_first: bool = False
    cls_index: int | None = None
    num_prefix_tokens: int = 0
    grid: tuple[int, int] | None = None
    make_block: Callable[[nn.Module], Block] | None = field(default=None, repr=False)
    image_size: int | None = None
    context_length: int | None = None

    @property
    def layout(self) -> str:
        return "(L, N, D)" if self.seq_first else "(N, L, D)"


class BackboneSpec:
    """Base class of a model family's spec. Subclasses are registered with ``@register_backbone``.

    A subclass implements ``matches(model)`` (by structure, never by class name alone) and
    ``towers(model)``; ``looks_for`` says in words what ``matches`` checks, for error messages.
    To be usable by `clipadapt.VideoCLIP` and recipes it also implements ``visual(model)`` (a
    `VisualEncoder`), ``text(model)`` (a `TextEncoder`, for families with a text tower) and
    ``build(arch, weights, tiny)``. ``extra`` names the ``pip install clipadapt[extra]`` that
    provides the family's package.
    """

    family: ClassVar[str] = ""
    looks_for: ClassVar[str] = ""
    extra: ClassVar[str | None] = None

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        raise NotImplementedError

    @classmethod
    def towers(cls, model: nn.Module) -> dict[str, Tower]:
        raise NotImplementedError

    @classmethod
    def visual(cls, model: nn.Module):
        """The `VisualEncoder` of `model`: frame embeddings, final norm, embedding width."""
        raise NotImplementedError(f"backbone {cls.family!r} does not say how to encode images (BackboneSpec.visual)")

    @classmethod
    def has_text(cls) -> bool:
        """Whether the family's models have a text tower (the spec implements `text`)."""
        return cls.text.__func__ is not BackboneSpec.text.__func__

    @classmethod
    def text(cls, model: nn.Module):
        """The `TextEncoder` of `model`'s text tower (tokens, embeddings, blocks, projection)."""
        raise UnsupportedModelError(f"backbone {cls.family!r} has no text encoder; text heads (contrastive, cmc, cmlm) need one")

    @classmethod
    def logit_scale(cls, model: nn.Module) -> torch.Tensor | None:
        """CLIP's learned temperature (log scale), or ``None`` for a model without one."""
        scale = getattr(model, "logit_scale", None)
        return scale if isinstance(scale, torch.Tensor) else None

    @classmethod
    def logit_bias(cls, model: nn.Module) -> torch.Tensor | None:
        """SigLIP's learned logit bias ``b`` (its logits are ``exp(logit_scale)·cos + b``; open_clip's
        and Hugging Face's ``logit_bias``), or ``None`` for a model without one (CLIP)."""
        bias = getattr(model, "logit_bias", None)
        return bias if isinstance(bias, torch.Tensor) else None

    @classmethod
    def contrastive_loss(cls, model: nn.Module) -> str:
        """The image-text loss the model was trained with: ``sigmoid`` where it has a logit bias
        (SigLIP), else ``softmax`` (CLIP)."""
        return "softmax" if cls.logit_bias(model) is None else "sigmoid"

    @classmethod
    def preprocess(cls, model: nn.Module) -> Preprocess:
        """How `model` wants its images (`clipadapt.backbones.preprocess`), read from the family's
        own config on the model; this default states CLIP's values and says it does."""
        towers = cls.towers(model)
        size = towers["visual"].image_size if "visual" in towers else None
        return Preprocess.clip_defaults(size, f"the {cls.family} spec reads no preprocessing config")

    @classmethod
    def preprocess_for(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> Preprocess:
        """What `preprocess` gives for the model ``build(arch, weights, tiny)`` would build, read from
        the family's configs without building it (recipes need it before the model exists)."""
        what = "a tiny random-weight model" if tiny is not None else repr(arch)
        return Preprocess.clip_defaults(tiny.image_size if tiny else None, f"the {cls.family} spec reads no preprocessing config for {what}")

    @classmethod
    def build(cls, arch: str | None, weights: str | None = None, tiny: TinyConfig | None = None) -> nn.Module:
        """The family's model for `arch` with `weights` (a pretrained tag, a local file or
        ``None`` for random), or a random-weight model of `tiny`'s sizes."""
        raise NotImplementedError(f"backbone {cls.family!r} cannot be built from a recipe (BackboneSpec.build)")

    @classmethod
    def set_grad_checkpointing(cls, model: nn.Module, enable: bool = True) -> nn.Module:
        """Switch `model`'s gradient checkpointing on (or off) as its family does, re-computing
        blocks during backward with ``use_reentrant=False`` (the hooks of a block's call find the
        values of that call again; see `clipadapt.sites`). Returns `model`.

        Example:
            >>> spec_of_family("hf").set_grad_checkpointing(clip)
        """
        raise ValueError(f"backbone {cls.family!r} has no gradient checkpointing; model.grad_checkpointing: true is accepted "
                         f"for {', '.join(f for f, spec in BACKBONES.items() if spec.checkpoints()) or '(none)'}")

    @classmethod
    def checkpoints(cls) -> bool:
        """Whether the family implements `set_grad_checkpointing`."""
        return cls.set_grad_checkpointing.__func__ is not BackboneSpec.set_grad_checkpointing.__func__

    @classmethod
    def why_not(cls, model: nn.Module, tower: str) -> str:
        """Why `model` has no `tower` this spec recognises ("" when nothing is known)."""
        return ""


def preprocess_of(model: nn.Module) -> Preprocess:
    """How `model` wants its images: mean, std, size and interpolation from its family's config.

    Example:
        >>> preprocess_of(open_clip.create_model("ViT-B-16-SigLIP")).mean   # doctest: +SKIP
        (0.5, 0.5, 0.5)
    """
    return detect(model).preprocess(model)


def spec_of_family(family: str) -> type[BackboneSpec]:
    """The registered spec called `family`; an unknown one lists the registered families."""
    return BACKBONES.get(family)


def import_family(module: str, family: str, extra: str | None):
    """Import the package a family needs; a missing one is a one-line error naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module.split(".")[0]:
            raise
        hint = f"pip install 'clipadapt[{extra}]'" if extra else f"install the package providing {module!r}"
        raise ModuleNotFoundError(f"model.family {family!r} needs the {module.split('.')[0]!r} package: {hint}") from None


def load_state_file(model: nn.Module, path: str) -> nn.Module:
    """Load a local weights file (safetensors, or a torch file read with ``weights_only=True``)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"model.weights {str(file)!r} does not exist")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as error:  # noqa: BLE001  (pickle, zip and safetensors errors do not name the file)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"model.weights {str(file)!r} is not a weights file that loads with weights_only=True or "
                         f"safetensors ({first[:120]})") from None
    model.load_state_dict(state)
    return model


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
    spec = detect(model)
    towers = spec.towers(model)
    if name not in towers:
        reason = spec.why_not(model, name)
        raise ValueError(
            f"tower {name!r} is not in this {type(model).__name__}; it has: {', '.join(towers) or '(none)'}"
            + (f" ({reason})" if reason else "")
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
    """Towers, blocks, widths, layout, CLS index, patch grid and sites of a model, as a dict.

    ``sites`` are those every block of the tower holds exactly; ``refused`` names what some block
    refuses (a site, or ``attend``: re-running its attention alone) and why.

    Example:
        >>> describe(clip)["towers"]["visual"]["sites"]
        ['pre_attn', 'attn_out', 'pre_mlp', 'mlp_parallel', 'post_block']
    """
    def refused(tower: Tower) -> dict[str, str]:
        return {what: why for block in tower.blocks for what, why in block.refusals.items()}

    return {
        "family": detect(model).family,
        "towers": {
            name: {
                "blocks": len(t.blocks),
                "block": type(t.blocks[0].module).__name__ if t.blocks else "-",
                "width": t.width,
                "layout": t.layout,
                "cls_index": t.cls_index,
                "prefix_tokens": t.num_prefix_tokens,
                "grid": t.grid,
                "sites": [site for site in SITES if site not in refused(t)],
                "refused": refused(t),
            }
            for name, t in towers_of(model).items()
        },
    }


def first_tensor(value):
    """The first tensor of a module output (a tensor, or a tuple whose first item is one)."""
    return value if isinstance(value, torch.Tensor) else value[0]


def replace_first(value, tensor: torch.Tensor):
    """`value` with its first tensor replaced by `tensor` (keeps tuple outputs tuples)."""
    if isinstance(value, torch.Tensor):
        return tensor
    return (tensor, *value[1:]) if isinstance(value, tuple) else [tensor, *value[1:]]


__all__ = [
    "SITES",
    "TOWERS",
    "Projection",
    "spec_of_family",
    "preprocess_of",
    "import_family",
    "load_state_file",
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
