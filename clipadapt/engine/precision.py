"""Mixed precision: the autocast context and GradScaler a recipe's ``precision`` asks for.

``precision`` names a registered :class:`Precision` (``fp32``, ``bf16``, ``fp16`` built in).

Example:
    >>> import torch
    >>> from clipadapt.engine.precision import autocast
    >>> with autocast("bf16", torch.device("cpu")):
    ...     y = torch.nn.Linear(4, 4)(torch.ones(1, 4))
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from clipadapt.registry import PRECISIONS

__all__ = ["PRECISIONS", "Precision", "autocast", "grad_scaler"]


@dataclass(frozen=True)
class Precision:
    """How a step runs: under ``torch.autocast(dtype=autocast_dtype)`` (None: no autocast), with a
    loss-scaling GradScaler or not."""

    autocast_dtype: torch.dtype | None
    scales_loss: bool = False


PRECISIONS.register("fp32")(Precision(None))
PRECISIONS.register("bf16")(Precision(torch.bfloat16))
PRECISIONS.register("fp16")(Precision(torch.float16, scales_loss=True))


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` in bf16/fp16 on `device`, or a no-op context for fp32.

    Example:
        >>> with autocast("fp32", torch.device("cpu")):
        ...     pass
    """
    dtype = PRECISIONS.get(precision).autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 and fp32 need none; a disabled one is a no-op).

    Example:
        >>> grad_scaler("bf16", torch.device("cpu")).is_enabled()
        False
    """
    return torch.amp.GradScaler(device.type, enabled=PRECISIONS.get(precision).scales_loss)
