"""SigLIP's sigmoid loss (Zhai et al. 2023) and the choice between it and the softmax.

Every (video, text) pair is its own binary decision, ``σ(z·(t·v·w + b))`` with ``z = +1`` for a
match and ``−1`` otherwise, ``t`` the logit scale and ``b`` the logit bias; the loss is
``−1/|B| Σ_i Σ_j log σ(z_ij·(t·v_i·w_j + b))``, summed over texts and averaged over videos.

In video classification a text is a class prompt, so "matched" means "of the video's class":

- the contrastive head pairs the batch's videos with the batch's label prompts; two samples of
  one class share a prompt, so ``z_ij = +1`` whenever their labels match (a video may have
  several positive columns, all the same text), as its softmax form's soft targets do;
- the CMC head pairs each video with every one of the C class prompts: one positive per row
  and C−1 negatives, unlike the softmax, which makes the classes compete for one unit of mass.

With all labels distinct in the batch the contrastive head's loss is exactly the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipadapt.heads.base import loss_dtype

LOSSES = ("softmax", "sigmoid")
"""The image-text losses a head comparing videos and texts may use."""


def sigmoid_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """``−1/N Σ_i Σ_j log σ(z_ij·logits_ij)``, ``z = +1`` where `positives` is true, else ``−1``.

    Args:
        logits: ``(N, M)`` scaled similarities plus the bias.
        positives: ``(N, M)`` bool, which pairs match.

    Example:
        >>> round(sigmoid_loss(torch.zeros(2, 2), torch.eye(2, dtype=torch.bool)).item(), 4)   # 2·log 2
        1.3863
    """
    logits = loss_dtype(logits)
    signs = positives.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def checked_loss(head: str, loss: str, bias: torch.Tensor | float | None, model_loss: str) -> str:
    """`loss` if it is one of `LOSSES`; a sigmoid without a bias to use is refused in one line."""
    if loss not in LOSSES:
        raise ValueError(f"{head} loss {loss!r} is not one of {LOSSES}")
    if loss == "sigmoid" and bias is None and model_loss != "sigmoid":
        raise ValueError(f"{head} loss 'sigmoid' needs a logit bias and this CLIP has none (it was trained with the "
                         "softmax); give the head's bias option (SigLIP starts from -10) or use loss: softmax")
    return loss
