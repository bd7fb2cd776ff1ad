"""The frozen side of an injected model: which parameters are adapters, freezing the others
(`clipadapt.freeze`), and the fingerprint of the backbone without its adapters."""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from clipadapt.backbones import fingerprint
from clipadapt.sets import apply_activation, model_states, set_names

CONTAINER = "adapters"  # name of the ModuleDict that holds a block's adapters


def is_adapter_param(name: str) -> bool:
    """Whether a parameter name (from ``named_parameters``) belongs to an injected adapter."""
    return f".{CONTAINER}." in f".{name}"


def freeze_model(model: nn.Module, *, train: str | Sequence[str] | None = None) -> nn.Module:
    """Freeze every parameter of `model` but the adapters of its active sets; returns `model`.

    With `train` (a set name or several), only those sets train: the other sets stay frozen,
    also while active (e.g. a task set under a new one stacked on top), until the next
    ``freeze(model, train=...)``.

    Example:
        >>> clipadapt.freeze(clip)   # a linear probe on a frozen CLIP, no adapters
        >>> clipadapt.activate(clip, "k400", "ssv2"); clipadapt.freeze(clip, train="ssv2")
    """
    states = model_states(model)
    if train is not None:
        names = [train] if isinstance(train, str) else list(train)
        known, active = set_names(states), {name for state in states for name in state.active}
        for name in names:
            if name not in known:
                raise ValueError(f"freeze(train={name!r}): no such adapter set; the model's sets are {known or '(none)'}")
            if name not in active:
                raise ValueError(f"freeze(train={name!r}): the set is inactive and would get no gradient; "
                                 f"activate it first (clipadapt.activate(model, ..., {name!r}))")
        for state in states:
            state.frozen = set(known) - set(names)
    for param in model.parameters():
        param.requires_grad_(False)
    for state in states:
        apply_activation(state)
    return model


def backbone_fingerprint(model: nn.Module) -> dict:
    """`clipadapt.backbones.fingerprint` of `model`, with adapter parameters left out."""
    return fingerprint(model, skip=is_adapter_param)
