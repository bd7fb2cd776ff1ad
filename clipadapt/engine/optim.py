"""The optimiser over the model's parameter groups, each at ``lr × lr_mult``; ``optim.name``
picks a registered factory (``adamw`` built in; ``@clipadapt.register_optimizer`` adds one).

Example:
    >>> from clipadapt.engine import build_optimizer
    >>> optimizer = build_optimizer(model, recipe.optim)  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from clipadapt.registry import OPTIMIZERS, register_optimizer

__all__ = ["build_optimizer", "adamw"]


def _get(cfg, key, default=None):
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


@register_optimizer("adamw")
def adamw(groups: list[dict], optim_cfg) -> torch.optim.AdamW:
    """AdamW with the recipe's ``betas`` and ``eps`` (decoupled weight decay per group)."""
    return torch.optim.AdamW(groups, lr=float(_get(optim_cfg, "lr")), betas=tuple(_get(optim_cfg, "betas", (0.9, 0.999))),
                             eps=float(_get(optim_cfg, "eps", 1e-8)))


def build_optimizer(model: torch.nn.Module, optim_cfg) -> torch.optim.Optimizer:
    """The ``optim.name`` optimiser over ``model.param_groups(weight_decay)``; group lr = ``optim.lr × lr_mult``.

    Each group keeps its ``name`` and ``lr_mult`` (the schedule and the logs read them). Empty
    groups are dropped; a model with nothing to train is an error.

    Args:
        model: provides ``param_groups(weight_decay) -> [dict(params, weight_decay, lr_mult, name)]``.
        optim_cfg: the recipe's ``optim`` section (``lr``, ``weight_decay``, ``betas``, ``eps``).

    Example:
        >>> import torch.nn as nn
        >>> class Tiny(nn.Linear):
        ...     def param_groups(self, weight_decay):
        ...         return [dict(params=[self.weight], weight_decay=weight_decay, lr_mult=1.0, name="weight"),
        ...                 dict(params=[self.bias], weight_decay=0.0, lr_mult=0.5, name="bias")]
        >>> opt = build_optimizer(Tiny(2, 2), {"lr": 1e-3, "weight_decay": 0.01})
        >>> [(g["name"], g["lr"]) for g in opt.param_groups]
        [('weight', 0.001), ('bias', 0.0005)]
    """
    factory = OPTIMIZERS.get(_get(optim_cfg, "name", "adamw"))
    lr = float(_get(optim_cfg, "lr"))
    groups = []
    for group in model.param_groups(float(_get(optim_cfg, "weight_decay", 0.0))):
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            lr_mult = float(group.get("lr_mult", 1.0))
            groups.append({**group, "params": params, "lr": lr * lr_mult, "lr_mult": lr_mult, "name": group.get("name", f"group{len(groups)}")})
    if not groups:
        raise ValueError(f"{type(model).__name__}.param_groups() holds no trainable parameter; inject adapters or add heads")
    return factory(groups, optim_cfg)
