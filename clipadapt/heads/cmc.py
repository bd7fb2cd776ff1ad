"""Cross-modal classification (CMC): every class prompt is encoded at each step, with gradient.

``logits = 100·cos(v, w_c)`` over all C class prompts; cross-entropy with the label. (The
authors' release passes already-softmaxed probabilities to the cross-entropy; this head uses
the logits.)
"""

from __future__ import annotations

import torch.nn.functional as F

from clipadapt.heads.base import Head, HeadContext, HeadInputs, HeadOutput, loss_dtype
from clipadapt.registry import register_head


@register_head("cmc")
class CMCHead(Head):
    """Classify a video by its similarity to every class prompt.

    Args:
        scale: the constant logit scale (100, as the release).

    Example:
        >>> model.add_head("cmc", weight=0.5)
    """

    classifies = True
    needs = frozenset({"video", "class_embeddings", "labels"})

    def __init__(self, context: HeadContext, scale: float = 100.0):
        super().__init__(context)
        self.scale = scale

    def forward(self, inputs: HeadInputs) -> HeadOutput:
        logits = self.scale * inputs.video @ inputs.class_embeddings.t()
        loss = None if inputs.labels is None else F.cross_entropy(loss_dtype(logits), inputs.labels)
        return HeadOutput(loss=loss, logits=logits)
