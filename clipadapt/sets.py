"""Adapter sets: named groups of injections on one frozen model, activated, stacked, disabled.

Every injection belongs to a set (``inject(..., adapter_set="k400")``; ``"default"`` when
unnamed). A model keeps the tuple of its *active* sets:

- only active sets run. At a site where several active sets have adapters they run in
  activation order, each on the stream the previous one left (stacking); different sites of
  a block run where the block computes them (``pre_attn``, ``attn_out``, ``pre_mlp``,
  ``mlp_parallel``, ``post_block``). Weight adapters (LoRA) add their updates to the weight in
  injection order.
- an inactive set does no work: the site dispatchers skip it, its weight updates return the
  weight itself, its parameters are not in the autograd graph and have ``requires_grad=False``.
  Active sets train unless `clipadapt.freeze` (``train=``) left them frozen.
- `inject` activates the set it injects into, alone, unless that set is already active: a new
  task starts on the frozen backbone. ``activate(model, "k400", "ucf")`` stacks.

Module keys: the ``default`` set keeps the keys it always had (``adapters.ted_pre_mlp``);
another set's are prefixed with its name (``adapters.k400__ted_pre_mlp``), so sets never share
a key, and files and checkpoints of models that never name a set are unchanged.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, Sequence

import torch.nn as nn

from clipadapt.sites import Routing

DEFAULT_SET = "default"
STATE = "_clipadapt"  # attribute of the model holding its InjectionState
SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


def model_states(model: nn.Module) -> list:
    """Injection states of `model` and of every module inside it (wrappers hold an inner CLIP)."""
    return [m.__dict__[STATE] for m in model.modules() if STATE in m.__dict__]


def check_set_name(name) -> str:
    """`name` if it can name an adapter set (letters, digits, ``_`` and ``-``), else a ValueError."""
    if not isinstance(name, str) or not SET_NAME.match(name):
        raise ValueError(f"adapter set name {name!r} is not accepted: use letters, digits, '_' and '-' "
                         "(starting with a letter or digit), e.g. 'k400'")
    return name


def module_key(name: str, site: str | None, adapter_set: str = DEFAULT_SET) -> str:
    """The key of an adapter module in its block's ``adapters`` ModuleDict.

    Example:
        >>> module_key("ted", "pre_mlp"), module_key("ted", "pre_mlp", "k400"), module_key("lora", None, "k400")
        ('ted_pre_mlp', 'k400__ted_pre_mlp', 'k400__lora')
    """
    key = name if site is None else f"{name}_{site}"
    return key if adapter_set == DEFAULT_SET else f"{adapter_set}__{key}"


def set_names(states: Sequence) -> list[str]:
    """The sets held by `states`, in the order of their first injection."""
    return list(dict.fromkeys(inj.adapter_set for state in states for inj in state.injections))


def _weight_adapters(states: Sequence, names) -> list[tuple[str, str]]:
    """``(set, adapter)`` for each weight adapter (one acting on weights, not at a site) of `names`."""
    return [(inj.adapter_set, inj.name) for state in states for inj in state.injections
            if inj.adapter_set in names and any(site is None for _, site, _ in inj.modules)]


def apply_activation(state) -> None:
    """Make `state`'s modules follow its active and frozen sets: weight adapters on or off, and
    ``requires_grad`` of adapter parameters (active and not frozen)."""
    active = set(state.active)
    for inj in state.injections:
        live = inj.adapter_set in active
        trains = live and inj.adapter_set not in state.frozen
        for _, site, module in inj.modules:
            if site is None:
                module.enabled = live
            for param in module.parameters():
                param.requires_grad_(trains)


def check_switchable(states: Sequence, active: Sequence[str]) -> None:
    """Refuse to switch off a weight adapter that cannot be switched off."""
    for state in states:
        for inj in state.injections:
            if inj.adapter_set in active:
                continue
            for _, site, module in inj.modules:
                if site is None and not getattr(module, "switchable", False):
                    raise ValueError(f"adapter {inj.name!r} of set {inj.adapter_set!r} acts on weights and cannot be switched "
                                     "off (its class does not set switchable = True and read self.enabled); eject it instead")


def set_active(states: Sequence, names: Sequence[str]) -> None:
    """Make `names` the active sets of every state in `states`, in this order."""
    names = tuple(names)
    known = set_names(states)
    for name in names:
        if name not in known:
            raise ValueError(f"adapter set {name!r} is not in this model; its sets are {known or '(none)'}")
    if len(set(names)) != len(names):
        raise ValueError(f"adapter sets {list(names)} name a set twice")
    check_switchable(states, names)
    for state in states:
        state.active = names
        apply_activation(state)


def routing(states: Sequence, num_frames: int, sets) -> Routing:
    """The `Routing` of a mixed batch: one entry per video, a set name, a list of set names
    (stacked in that order) or ``None`` (the frozen model)."""
    if isinstance(sets, str) or not isinstance(sets, Sequence) or not sets:
        raise ValueError(f"sets={sets!r}: give one adapter set per video, as a list, e.g. sets=['k400', 'ssv2', 'k400']")
    known = set_names(states)
    per_video = []
    for index, item in enumerate(sets):
        names = () if item is None else (item,) if isinstance(item, str) else tuple(item)
        for name in names:
            if name not in known:
                raise ValueError(f"sets[{index}] = {name!r} is not an adapter set of this model; its sets are {known or '(none)'}")
        per_video.append(names)
    routed = {name for names in per_video for name in names}
    for state in states:
        routed |= set(state.active)
    weights = _weight_adapters(states, routed)
    if weights:
        name, adapter = weights[0]
        raise ValueError(f"a mixed batch cannot run set {name!r} (active or routed): its adapter {adapter!r} acts on the "
                         "weights every video shares; run that set in a forward of its own (and activate sets without it)")
    return Routing(num_frames, tuple(per_video))


def check_active_training(model: nn.Module) -> None:
    """Refuse a model with trainable adapter parameters in an inactive set: they would get no
    gradient (and DDP would stop on them). The trainer calls this before building its optimiser.

    Example:
        >>> check_active_training(model)   # after clipadapt.activate / clipadapt.freeze
    """
    names = {id(module): name for name, module in model.named_modules()}
    for state in model_states(model):
        for inj in state.injections:
            if inj.adapter_set in state.active:
                continue
            for _, _, module in inj.modules:
                if any(p.requires_grad for p in module.parameters()):
                    raise ValueError(f"{names.get(id(module), inj.name)} of the inactive adapter set {inj.adapter_set!r} is "
                                     f"trainable but gets no gradient; activate the set or call clipadapt.freeze(model)")


# --------------------------------------------------------------------------------------------
# public API


def adapter_sets(model: nn.Module) -> list[str]:
    """The adapter sets of `model`, in the order of their first injection.

    Example:
        >>> clipadapt.inject(clip, "ted", width=64, adapter_set="k400")
        >>> clipadapt.inject(clip, "ted", width=64, adapter_set="ssv2")
        >>> clipadapt.adapter_sets(clip)
        ['k400', 'ssv2']
    """
    return set_names(model_states(model))


def active_sets(model: nn.Module) -> tuple[str, ...]:
    """The active adapter sets of `model`, in activation order.

    Example:
        >>> clipadapt.activate(clip, "k400", "ssv2"); clipadapt.active_sets(clip)
        ('k400', 'ssv2')
    """
    states = model_states(model)
    return tuple(dict.fromkeys(name for state in states for name in state.active))


def activate(model: nn.Module, *sets: str) -> nn.Module:
    """Run the adapter sets `sets` of `model`, in this order where two share a site; the others
    are inactive (no work in the forward, no gradient). No name: no set runs. Returns `model`.

    Parameters of active sets get ``requires_grad=True`` unless `clipadapt.freeze` (``train=``)
    froze their set; those of inactive sets ``False``.

    Example:
        >>> clipadapt.activate(clip, "k400")            # one task
        >>> clipadapt.activate(clip, "k400", "domain")  # k400's adapters, then domain's, at each site
    """
    set_active(model_states(model), sets)
    return model


@contextlib.contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` as the frozen model, bit for bit: no adapter set is active inside the block.
    The active sets (and their ``requires_grad``) come back on exit, also on error.

    Example:
        >>> with clipadapt.disabled(clip):
        ...     zero_shot = clip.encode_image(images)   # torch.equal to the un-injected CLIP
    """
    states = model_states(model)
    previous = [(state.active, state.routing) for state in states]
    check_switchable(states, ())
    try:
        for state in states:
            state.active, state.routing = (), None
            apply_activation(state)
        yield model
    finally:
        for state, (active, route) in zip(states, previous):
            state.active, state.routing = active, route
            apply_activation(state)
