"""Cross-modal classification (CMC): every class prompt is encoded at each step, with gradient.

``logits = s·cos(v, w_c) + b`` over all C class prompts, ``b`` the CLIP's logit bias where it has
one (SigLIP). ``softmax``: cross-entropy with the label, ``s = 100`` (the authors' release
passes already-softmaxed probabilities to the cross-entropy; this head uses the logits); the
bias shifts every class alike and changes neither the loss nor the ranking. ``sigmoid``:
SigLIP's loss over the C prompts, one positive per row (`clipadapt.heads.sigmoid`), with the
CLIP's own logit scale, which its bias was learned with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipadapt.heads.base import Head, HeadContext, HeadInputs, HeadOutput, loss_dtype, with_bias
from clipadapt.heads.sigmoid import LOSSES, checked_loss, sigmoid_loss
from clipadapt.registry import register_head

RELEASE_SCALE = 100.0


@register_head("cmc")
class CMCHead(Head):
    """Classify a video by its similarity to every class prompt.

    Args:
        scale: the logit scale; by default 100 (the release) under ``softmax`` and the CLIP's own
            under ``sigmoid``.
        loss: ``softmax`` (cross-entropy, the release) or ``sigmoid`` (SigLIP's); by default the
            loss the CLIP was trained with.
        bias: the logit bias to use instead of the model's (a CLIP has none).

    Example:
        >>> model.add_head("cmc", weight=0.5)
    """

    classifies = True
    option_choices = {"loss": LOSSES}
    needs = frozenset({"video", "class_embeddings", "labels", "logit_bias"})

    def __init__(self, context: HeadContext, scale: float | None = None, loss: str | None = None, bias: float | None = None):
        super().__init__(context)
        self.loss = checked_loss("cmc", loss or context.contrastive_loss, bias, context.contrastive_loss)
        self.scale, self.bias = scale, bias
        if scale is None and self.loss == "sigmoid":
            self.needs = type(self).needs | {"logit_scale"}

    def forward(self, inputs: HeadInputs) -> HeadOutput:
        if self.scale is not None:
            scale = self.scale
        else:
            scale = inputs.logit_scale if self.loss == "sigmoid" else RELEASE_SCALE
        bias = inputs.logit_bias if self.bias is None else torch.tensor(self.bias)
        logits = with_bias(scale * inputs.video @ inputs.class_embeddings.t(), bias)
        if inputs.labels is None:
            return HeadOutput(logits=logits)
        if self.loss == "sigmoid":
            positives = F.one_hot(inputs.labels, logits.shape[1]).bool()
            return HeadOutput(loss=sigmoid_loss(logits, positives), logits=logits)
        return HeadOutput(loss=F.cross_entropy(loss_dtype(logits), inputs.labels), logits=logits)
