"""Houlsby bottleneck adapter: Linear D→w, activation, Linear w→D, added to the residual stream.

M2-CLIP's text adapter is this adapter at ``pre_mlp`` with width 384 and ``init="zero_bias"``
(the authors' release: PyTorch's initialisation of the weights, both biases zero).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from clipadapt.inject import Adapter, AdapterContext
from clipadapt.registry import register_adapter

class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
    "quickgelu": QuickGELU,
    "relu": nn.ReLU,
    "identity": nn.Identity,
}
INITS = ("zero", "zero_bias", "default")


class Bottleneck(nn.Module):
    """``up(act(down(x)))``, ``(..., D) -> (..., D)``.

    ``init="zero"`` zeroes ``up`` (an identity at injection); ``zero_bias`` keeps PyTorch's
    weights and zeroes both biases (the M2-CLIP release); ``default`` keeps PyTorch's init.

    Example:
        >>> Bottleneck(512, 384, init="zero_bias").up.bias.abs().sum()
        tensor(0., grad_fn=<SumBackward0>)
    """

    def __init__(self, dim: int, width: int, activation: str = "gelu", init: str = "zero"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
        if init not in INITS:
            raise ValueError(f"init {init!r} is not one of {INITS}")
        self.down = nn.Linear(dim, width)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(width, dim)
        if init == "zero":
            nn.init.zeros_(self.up.weight)
        if init in ("zero", "zero_bias"):
            nn.init.zeros_(self.up.bias)
        if init == "zero_bias":
            nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


@register_adapter("bottleneck")
class BottleneckAdapter(Adapter):
    """A Houlsby adapter; the delta is ``up(act(down(x)))``.

    Args:
        dim: the block width D.
        width: the bottleneck width w.
        activation: one of ``gelu`` (exact, default), ``gelu_tanh``, ``quickgelu``, ``relu``, ``identity``.
        init: ``zero`` (the up projection starts at zero: an identity at injection),
            ``zero_bias`` (PyTorch's weights, zero biases: the M2-CLIP release's text adapter) or
            ``default`` (PyTorch's initialisation throughout).

    Example:
        >>> clipadapt.inject(clip, "bottleneck", tower="text", layers=[-1], width=384)
    """

    sites = ("pre_mlp",)

    def __init__(self, dim: int, width: int = 64, activation: str = "gelu", init: str = "zero"):
        super().__init__()
        self.mlp = Bottleneck(dim, width, activation, init)

    def forward(self, x: torch.Tensor, ctx: AdapterContext) -> torch.Tensor:
        return self.mlp(x)
