"""What a decoder head declares, receives and returns.

A head is built from a `HeadContext` (sizes, class names, CLIP's own frozen visual norm and, for
heads that encode text themselves, a `TextService`) and its options; at each step it receives a
`HeadInputs` holding exactly the features it declared in ``needs`` (the others are ``None``).
Heads never see the video model itself.

Example:
    >>> import torch.nn as nn, clipadapt
    >>> from clipadapt.heads import Head, HeadOutput
    >>> @clipadapt.register_head("centroid_demo", override=True)
    ... class CentroidDemo(Head):
    ...     needs = frozenset({"video", "labels"})
    ...     classifies = True
    ...     def __init__(self, context, scale: float = 10.0):
    ...         super().__init__(context)
    ...         self.centroids = nn.Parameter(torch.zeros(context.num_classes, context.embed_dim))
    ...         self.scale = scale
    ...     def forward(self, inputs):
    ...         logits = self.scale * inputs.video @ self.centroids.t()
    ...         loss = None if inputs.labels is None else nn.functional.cross_entropy(logits, inputs.labels)
    ...         return HeadOutput(loss=loss, logits=logits)
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Sequence

import torch
import torch.nn as nn

NEEDS = ("video", "frames", "cls", "class_embeddings", "logit_scale", "logit_bias", "labels", "label_prompts", "sample_ids")
"""What a head may declare in ``needs``."""

TEXT_NEEDS = frozenset({"class_embeddings", "logit_scale", "logit_bias", "label_prompts"})
"""The `NEEDS` only a model with a text tower gives."""


class TextService(Protocol):
    """The text tower as a head that encodes prompts itself (CMLM) uses it.

    ``tokenize`` / ``tokens_from_words`` / ``encode_word`` give the tower's token ids (its
    ``tokenizer``, a `clipadapt.backbones.tokenizers.Tokenizer`, says which special ids surround
    the words); ``token_states(tokens, truncate=True)`` runs the adapted text tower to the states
    of the prompt tokens before ``ln_final`` ``(N, L', W)``; ``last_block()`` is the last text
    block (a `clipadapt.backbones.Block`) and ``make_block(module)`` turns a copy of it into one
    (with its ``cross_attend``).
    """

    context_length: int
    width: int
    ln_final: nn.Module
    tokenizer: Any

    def tokenize(self, prompts: list[str], device: torch.device | None = None): ...

    def tokens_from_words(self, word_ids: list[list[list[int]]], device=None): ...

    def encode_word(self, word: str) -> list[int]: ...

    def token_states(self, tokens, cache_prefix: bool = False, truncate: bool = True, pooled_only: bool = False) -> torch.Tensor: ...

    def last_block(self): ...

    def make_block(self, module: nn.Module): ...


@dataclass
class HeadContext:
    """What a head is built from.

    Attributes:
        num_classes: C.
        classnames: the class names, when known (else empty).
        templates: the prompt templates (one ``{}`` each).
        embed_dim: E, the joint embedding width.
        visual_width: W, the visual tower's residual width (the class token's width).
        visual_norm: CLIP's own frozen norm after the visual tower, applied to the class token.
        has_cls: whether the visual tower has a class token (``cls`` can be given).
        text: the `TextService`, or ``None`` for a model without a text tower.
        no_text_reason: why `text` is ``None``.
        contrastive_loss: the image-text loss the CLIP was trained with, ``softmax`` (CLIP) or
            ``sigmoid`` (SigLIP); heads that compare video and text default to it.
    """

    num_classes: int
    classnames: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=lambda: ["a video of {}"])
    embed_dim: int = 0
    visual_width: int = 0
    visual_norm: nn.Module | None = None
    has_cls: bool = True
    text: TextService | None = None
    no_text_reason: str = ""
    contrastive_loss: str = "softmax"

    def prompts(self, classnames: Sequence[str], templates: Sequence[str] | None = None) -> list[str]:
        """Every template filled with every class name, class-major."""
        return [template.format(name) for name in classnames for template in (templates or self.templates)]


REDUCED = (torch.float16, torch.bfloat16)


def loss_dtype(x: torch.Tensor) -> torch.Tensor:
    """`x` for a loss: float32 when it is half precision (fp16, bf16), else in its own dtype.

    Example:
        >>> loss_dtype(torch.zeros(2, dtype=torch.bfloat16)).dtype, loss_dtype(torch.zeros(2, dtype=torch.float64)).dtype
        (torch.float32, torch.float64)
    """
    return x.float() if x.dtype in REDUCED else x


def with_bias(logits: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`logits` plus the CLIP's logit bias where it has one (SigLIP), unchanged otherwise.

    Example:
        >>> with_bias(torch.zeros(1, 2), torch.tensor(-10.0))
        tensor([[-10., -10.]])
    """
    return logits if bias is None else logits + bias.to(device=logits.device, dtype=logits.dtype)


@dataclass
class HeadInputs:
    """The features of a batch; a head receives the ones it declared, the rest are ``None``.

    Attributes:
        video: pooled, normalised video embeddings ``(B, E)``.
        frames: per-frame embeddings after temporal pooling's residual ``(B, T, E)``.
        cls: the frame-mean raw class token of the last visual block ``(B, W)``.
        class_embeddings: normalised class-prompt embeddings ``(C, E)``.
        logit_scale: CLIP's own temperature ``exp(logit_scale)``, a scalar without gradient.
        logit_bias: the CLIP's own logit bias (SigLIP), without gradient; ``None`` for a model
            without one.
        labels: ``(B,)`` class indices, or ``None`` at evaluation.
        label_prompts: each sample's class prompt (first template), at training.
        sample_ids: ``(B,)`` dataset indices, for per-sample random choices (CMLM masking).
    """

    video: torch.Tensor | None = None
    frames: torch.Tensor | None = None
    cls: torch.Tensor | None = None
    class_embeddings: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    logit_bias: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    label_prompts: list[str] | None = None
    sample_ids: torch.Tensor | None = None

    def only(self, needs: frozenset[str]) -> "HeadInputs":
        """A copy holding the fields in `needs` only."""
        return HeadInputs(**{f.name: getattr(self, f.name) if f.name in needs else None for f in dataclasses.fields(self)})


@dataclass
class HeadOutput:
    """A head's loss (``None`` when it has none for this batch) and class logits ``(B, C)``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class Head(nn.Module):
    """Base class of decoder heads, registered with ``@clipadapt.register_head(name)``.

    ``__init__(context: HeadContext, **options)``; ``forward(inputs: HeadInputs) -> HeadOutput``.
    The options are the keyword arguments of ``__init__`` (`accepted_options`); recipes are
    checked against them.

    Class attributes:
        needs: the `HeadInputs` fields the head reads (a subset of `NEEDS`).
        classifies: whether its logits are class scores used at evaluation and in the fusion.
        classifies_alone: whether its logits classify when no head with ``classifies`` is in
            the decoder (the contrastive head's video-text similarities).
        option_choices: the values an option accepts where they are a fixed set (``{"loss":
            ("softmax", "sigmoid")}``); `clipadapt validate` checks recipes against them.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"video", "labels"})
    classifies: ClassVar[bool] = False
    classifies_alone: ClassVar[bool] = False
    option_choices: ClassVar[dict[str, tuple]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = set(cls.needs) - set(NEEDS)
        if unknown:
            raise TypeError(f"head {cls.__name__} needs {sorted(unknown)}, which no model gives; accepted: {', '.join(NEEDS)}")

    def __init__(self, context: HeadContext, **options: Any):
        super().__init__()

    @classmethod
    def accepted_options(cls) -> set[str] | None:
        """The option names ``__init__`` takes (``None`` when it takes ``**options``).

        Example:
            >>> from clipadapt.heads import VCHead
            >>> sorted(VCHead.accepted_options())
            ['dropout', 'num_classes']
        """
        parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, context
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            return None
        return {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    @classmethod
    def check_options(cls, name: str, options: dict) -> None:
        """Refuse an option the head does not take, naming it and the accepted ones."""
        accepted = cls.accepted_options()
        if accepted is None:
            return
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise TypeError(f"{unknown[0]!r} is not an option of head {name!r}; accepted: {', '.join(sorted(accepted)) or '(none)'}")

    def lr_mults(self) -> dict[str, float]:
        """Learning-rate factors of this head's submodules, by name relative to the head."""
        return {}
