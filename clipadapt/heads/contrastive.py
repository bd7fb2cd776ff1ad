"""Video-text contrastive head (M2-CLIP eq. 10, ActionCLIP's loss; SigLIP's sigmoid loss).

Within the batch, ``logits[i, j] = s·cos(v_i, w_j) + b`` where ``w_j`` is the prompt embedding of
sample j's label, ``s`` CLIP's own (frozen) logit scale and ``b`` its logit bias (SigLIP; none
for CLIP). ``softmax``: targets are the row-softmax of ``10·G``, ``G[i, k] = 1`` when labels i
and k match, and the loss is the batch-mean KL divergence, video→text and text→video, averaged.
``sigmoid``: SigLIP's loss with ``z_ij = +1`` when labels i and j match (`clipadapt.heads.sigmoid`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from clipadapt.heads.base import Head, HeadContext, HeadInputs, HeadOutput, loss_dtype, with_bias
from clipadapt.heads.sigmoid import LOSSES, checked_loss, sigmoid_loss
from clipadapt.registry import register_head

GATHERS = ("global", "local")


def soft_targets(labels: torch.Tensor, sharpness: float = 10.0) -> torch.Tensor:
    """Row-softmax of ``sharpness·G`` with ``G[i, k] = [labels_i == labels_k]``.

    Example:
        >>> soft_targets(torch.tensor([0, 0, 1]))[0]   # two matches share the mass
        tensor([0.5000, 0.5000, 0.0000])
    """
    same = (labels[:, None] == labels[None, :]).float()
    return F.softmax(sharpness * same, dim=1)


def kl_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = loss_dtype(logits)
    return F.kl_div(F.log_softmax(logits, dim=1), targets.to(logits.dtype), reduction="batchmean")


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every DDP rank, gradients flowing back to each rank's part."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0)


@register_head("contrastive")
class ContrastiveHead(Head):
    """Video↔text contrastive loss over the (global or local) batch.

    Args:
        gather: ``global`` gathers videos, texts and labels from every GPU (with gradient);
            ``local`` keeps each GPU's batch, as the authors' release.
        sharpness: the factor in the softmax form's soft targets (10).
        loss: ``softmax`` (M2-CLIP's KL form) or ``sigmoid`` (SigLIP's); by default the loss
            the CLIP was trained with (sigmoid for SigLIP, with its own logit scale and bias).
        bias: the logit bias to use instead of the model's (a CLIP has none; SigLIP starts from -10).

    Example:
        >>> model.add_head("contrastive", weight=0.5, gather="local")
        >>> siglip_video.add_head("contrastive", loss="sigmoid")
    """

    needs = frozenset({"video", "class_embeddings", "logit_scale", "logit_bias", "labels"})
    classifies_alone = True
    option_choices = {"loss": LOSSES}

    def __init__(self, context: HeadContext, gather: str = "global", sharpness: float = 10.0, loss: str | None = None,
                 bias: float | None = None):
        super().__init__(context)
        if gather not in GATHERS:
            raise ValueError(f"contrastive gather {gather!r} is not one of {GATHERS}")
        self.gather, self.sharpness, self.bias = gather, sharpness, bias
        self.loss = checked_loss("contrastive", loss or context.contrastive_loss, bias, context.contrastive_loss)

    def forward(self, inputs: HeadInputs) -> HeadOutput:
        video, texts = inputs.video, inputs.class_embeddings
        scale = inputs.logit_scale
        bias = inputs.logit_bias if self.bias is None else torch.tensor(self.bias)
        if inputs.labels is None:
            return HeadOutput(logits=with_bias(scale * video @ texts.t(), bias))
        labels = inputs.labels
        text = texts[labels]
        if self.gather == "global":
            video, text, labels = gather_with_grad(video), gather_with_grad(text), gather_with_grad(labels)
        logits = scale * video @ text.t()
        if self.loss == "sigmoid":
            return HeadOutput(loss=sigmoid_loss(with_bias(logits, bias), labels[:, None] == labels[None, :]))
        targets = soft_targets(labels, self.sharpness)
        loss = 0.5 * (kl_loss(logits, targets) + kl_loss(logits.t(), targets))
        return HeadOutput(loss=loss)
