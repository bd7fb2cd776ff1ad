"""What every decoder head receives and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn

if TYPE_CHECKING:  # pragma: no cover
    from clipadapt.models.video_clip import VideoCLIP, VideoFeatures


REDUCED = (torch.float16, torch.bfloat16)


def loss_dtype(x: torch.Tensor) -> torch.Tensor:
    """`x` for a loss: float32 when it is half precision (fp16, bf16), else in its own dtype.

    Example:
        >>> loss_dtype(torch.zeros(2, dtype=torch.bfloat16)).dtype, loss_dtype(torch.zeros(2, dtype=torch.float64)).dtype
        (torch.float32, torch.float64)
    """
    return x.float() if x.dtype in REDUCED else x


@dataclass
class HeadInputs:
    """The features of a batch, shared by all heads.

    Attributes:
        features: per-frame ``(B, T, E)``, pooled and normalised video ``(B, E)``, and the
            frame-mean raw class token ``(B, W)``.
        class_embeddings: normalised class-prompt embeddings ``(C, E)``.
        labels: ``(B,)`` class indices, or ``None`` at evaluation.
        model: the `VideoCLIP`, for heads that encode text themselves (CMLM).
        sample_ids: ``(B,)`` dataset indices, for per-sample random choices (CMLM masking).
    """

    features: "VideoFeatures"
    class_embeddings: torch.Tensor | None
    labels: torch.Tensor | None
    model: "VideoCLIP"
    sample_ids: torch.Tensor | None = None


@dataclass
class HeadOutput:
    """A head's loss (``None`` when it has none for this batch) and class logits ``(B, C)``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class Head(nn.Module):
    """Base class of decoder heads, registered with ``@clipadapt.register_head(name)``.

    ``__init__(model, **options)`` reads the sizes it needs from the `VideoCLIP`;
    ``forward(inputs: HeadInputs) -> HeadOutput``.

    Class attributes:
        classifies: whether its logits are class scores used at evaluation and in the fusion.
        needs_class_embeddings: whether it uses the class-prompt embeddings.
    """

    classifies: ClassVar[bool] = False
    needs_class_embeddings: ClassVar[bool] = False

    def __init__(self, model: "VideoCLIP", **options: Any):
        super().__init__()

    def lr_mults(self) -> dict[str, float]:
        """Learning-rate factors of this head's submodules, by name relative to the head."""
        return {}
