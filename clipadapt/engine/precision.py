"""Mixed precision: the autocast context and GradScaler a recipe's ``precision`` asks for.

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

import torch

__all__ = ["PRECISIONS", "autocast", "grad_scaler"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _dtype(precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` in bf16/fp16 on `device`, or a no-op context for fp32.

    Example:
        >>> with autocast("fp32", torch.device("cpu")):
        ...     pass
    """
    dtype = _dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 and fp32 need none; a disabled one is a no-op).

    Example:
        >>> grad_scaler("bf16", torch.device("cpu")).is_enabled()
        False
    """
    return torch.amp.GradScaler(device.type, enabled=_dtype(precision) is torch.float16)
