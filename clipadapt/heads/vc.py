"""Visual classification (VC): a linear classifier on the frame-mean raw class token.

Mean over T of the last visual block's class tokens (before ``ln_post``) → CLIP's frozen
``ln_post`` → Dropout → Linear W→C (init N(0, 0.02), zero bias); plain cross-entropy. (The
paper puts the classifier on the video feature v; this follows the authors' release.)
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from clipadapt.heads.base import Head, HeadContext, HeadInputs, HeadOutput, loss_dtype
from clipadapt.registry import register_head


@register_head("vc")
class VCHead(Head):
    """Linear classifier on the normalised frame-mean class token.

    Args:
        dropout: dropout before the linear layer (0.5).
        num_classes: defaults to the model's class count.

    Example:
        >>> model.add_head("vc", weight=1.0, dropout=0.5)
    """

    classifies = True
    needs = frozenset({"cls", "labels"})

    def __init__(self, context: HeadContext, dropout: float = 0.5, num_classes: int | None = None):
        super().__init__(context)
        num_classes = num_classes or context.num_classes
        if not num_classes:
            raise ValueError("vc head needs the number of classes: give class names or num_classes")
        if not context.has_cls or context.visual_norm is None:
            raise ValueError("vc reads the visual tower's class token, and this tower has none (e.g. SigLIP, "
                             "avg-pooled timm ViTs); use a head on the video embedding (cmc, contrastive)")
        norm_width = getattr(context.visual_norm, "normalized_shape", (context.visual_width,))[-1]
        if norm_width != context.visual_width:
            raise ValueError(f"vc normalises the class token (width {context.visual_width}) with the visual tower's final "
                             f"norm, which has width {norm_width}: the backbone spec's VisualEncoder.final_norm must be "
                             "the norm applied to the last block's tokens")
        self._ln_post = (context.visual_norm,)  # CLIP's own, frozen; not a submodule of the head
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(context.visual_width, num_classes)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, inputs: HeadInputs) -> HeadOutput:
        cls = self._ln_post[0](inputs.cls)
        logits = self.fc(self.dropout(cls.to(self.fc.weight.dtype)))
        loss = None if inputs.labels is None else F.cross_entropy(loss_dtype(logits), inputs.labels)
        return HeadOutput(loss=loss, logits=logits)
