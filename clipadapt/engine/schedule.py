"""Per-iteration learning-rate schedule: linear warm-up, then cosine down to ``min_lr``.

Example:
    >>> import torch
    >>> from clipadapt.engine.schedule import build_scheduler
    >>> optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    >>> scheduler = build_scheduler(optimizer, steps_per_epoch=10, epochs=3, warmup_epochs=1, min_lr=0.0)
    >>> round(optimizer.param_groups[0]["lr"], 6)  # the first step runs at 1/10 of the warm-up
    0.0001
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosine", "build_scheduler"]


class WarmupCosine:
    """The factor applied to each group's initial lr at optimiser step ``step`` (0-based).

    Warm-up rises linearly to 1 over ``warmup_steps`` steps (``(step + 1) / warmup_steps``), then a
    half cosine falls to ``floor`` at ``total_steps``. A plain object (not a closure) so that
    ``LambdaLR.state_dict()`` stores it.

    Example:
        >>> f = WarmupCosine(warmup_steps=2, total_steps=6, floor=0.0)
        >>> [round(f(s), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """

    def __init__(self, warmup_steps: int, total_steps: int, floor: float = 0.0):
        self.warmup_steps, self.total_steps, self.floor = int(warmup_steps), int(total_steps), float(floor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, epochs: int, warmup_epochs: float, min_lr: float = 0.0
) -> LambdaLR:
    """A ``LambdaLR`` stepped once per optimiser step; each group follows its own initial lr
    (``base lr × lr_mult``), and ``min_lr`` is scaled by the group's ``lr_mult`` too.

    Args:
        optimizer: groups carry their initial lr (see :func:`~clipadapt.engine.build_optimizer`).
        steps_per_epoch: optimiser steps per epoch (batches / accumulation, rounded up).
        epochs, warmup_epochs: lengths in epochs (warm-up may be fractional).
        min_lr: the lr reached at the end by a group at the optimiser's default lr
            (``optimizer.defaults["lr"]``, the recipe's ``optim.lr``).

    Example:
        >>> opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = build_scheduler(opt, steps_per_epoch=4, epochs=2, warmup_epochs=0, min_lr=0.1)
        >>> for _ in range(8):
        ...     opt.step(); sched.step()
        >>> round(opt.param_groups[0]["lr"], 3)
        0.1
    """
    base_lr = optimizer.defaults["lr"]  # groups run at base lr × lr_mult
    floor = min_lr / base_lr if base_lr > 0 else 0.0
    schedule = WarmupCosine(round(warmup_epochs * steps_per_epoch), epochs * steps_per_epoch, floor)
    return LambdaLR(optimizer, lr_lambda=schedule)
