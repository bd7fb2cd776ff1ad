"""The multi-task decoder: weighted head losses, per-head logits, and their fusion."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from clipadapt.heads.base import Head, HeadInputs, loss_dtype


@dataclass
class DecoderOutput:
    """``loss`` (weighted sum), ``losses`` (unweighted, per head) and ``logits`` (per classifying head)."""

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: dict[str, torch.Tensor] = field(default_factory=dict)


class MultiTaskDecoder(nn.Module):
    """Runs every head on the same batch features and sums their weighted losses.

    Example:
        >>> decoder = MultiTaskDecoder()
        >>> decoder.add("vc", VCHead(model), weight=1.0)
        >>> out = decoder(inputs)      # out.loss, out.losses["vc"], out.logits["vc"]
    """

    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleDict()
        self.weights: dict[str, float] = {}

    def add(self, name: str, head: Head, weight: float = 1.0) -> Head:
        if name in self.heads:
            raise ValueError(f"head {name!r} is already in the decoder")
        self.heads[name] = head
        self.weights[name] = float(weight)
        return head

    @property
    def classifying(self) -> list[str]:
        """Heads whose logits are class scores (those with ``classifies_alone`` when none has
        ``classifies``)."""
        names = [name for name, head in self.heads.items() if head.classifies]
        return names or [name for name, head in self.heads.items() if head.classifies_alone]

    @property
    def needs(self) -> frozenset[str]:
        """Every `HeadInputs` field some head reads."""
        return frozenset().union(*(head.needs for head in self.heads.values()))

    def forward(self, inputs: HeadInputs) -> DecoderOutput:
        out = DecoderOutput()
        classifying = set(self.classifying)
        for name, head in self.heads.items():
            result = head(inputs.only(head.needs))
            if result.loss is not None:
                out.losses[name] = result.loss
            if result.logits is not None and name in classifying:
                out.logits[name] = result.logits
        if out.losses:
            out.loss = sum(self.weights[name] * loss for name, loss in out.losses.items())
        return out


def fuse(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the heads' softmax probabilities ``(B, C)`` (float32 for half-precision logits)."""
    return torch.stack([loss_dtype(l).softmax(dim=-1) for l in logits.values()]).mean(dim=0)
