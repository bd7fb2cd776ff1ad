"""The injection engine: the `Adapter` base class, `inject`, the injection record and `eject`.

The hooks live in `clipadapt.sites`, what an adapter is told besides its input (``ctx``, and T
through ``frames``) in `clipadapt.context`, freezing and the backbone fingerprint in
`clipadapt.freezing`, adapter sets in `clipadapt.sets`; their public names are importable from
here too.

An adapter is placed at a named *site* of a pre-norm block
``x -> x + attn(ln_1(x)) -> x + mlp(ln_2(x))``:

=============  =======================================================  ==========================
site           what changes                                             realised by
=============  =======================================================  ==========================
pre_attn       the residual stream entering the block                   pre-hook on the block
attn_out       the attention branch output, before the residual add     hook on the branch end
pre_mlp        the residual stream between the two branches             hook on the branch end
mlp_parallel   adds ``A(ln_2(x))`` beside the MLP                       hook on the MLP
post_block     the block output                                         hook on the block
=============  =======================================================  ==========================

Nothing rewrites a block's ``forward``; the hooks live in `clipadapt.sites`. ``pre_mlp`` is
reached by correcting the attention branch: ``branch_out + A(x_in + branch_out)``, where ``x_in``
is the block input captured by a pre-hook on the same call. Adapters always see ``(N, L, D)``
batch-first tensors and return a delta that the engine adds (never in place). Every injection
belongs to an adapter set (`clipadapt.sets`), which can be activated, stacked, disabled, routed
per video in a mixed batch, saved and ejected on its own.

Hooks and undo steps are objects, bound methods and partials, never closures, so
``copy.deepcopy`` of an injected model gives a copy whose hooks, adapters and injection records
are its own: ejecting or merging the copy leaves the original as it was.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Sequence

import torch.nn as nn

from clipadapt.backbones import SITES, Block, Tower, get_tower
from clipadapt.context import AdapterContext, FramesError, frames  # noqa: F401  (public here too)
from clipadapt.freezing import CONTAINER, backbone_fingerprint, freeze_model, is_adapter_param  # noqa: F401  (public here too)
from clipadapt.registry import ADAPTERS
from clipadapt.sets import DEFAULT_SET, STATE, apply_activation, check_set_name, check_switchable, model_states, module_key
from clipadapt.sets import set_names
from clipadapt.sites import BlockHooks, Routing, SiteEntry


class Adapter(nn.Module):
    """Base class of adapters: ``forward(x, ctx) -> delta`` with ``x`` of shape ``(N, L, D)``.

    Class attributes:
        sites: the default site(s); several for an adapter that owns several parts (AIM).
            An empty tuple means the adapter acts on weights instead (LoRA) and implements
            ``attach(block)``.
        needs_frames: whether ``ctx.num_frames`` must be known (temporal adapters).
        switchable: a weight adapter that reads ``self.enabled`` (False when its set is inactive)
            and then leaves the weight exactly as it was; sets holding a weight adapter without
            it cannot be deactivated (LoRA is switchable).

    ``build(dim, site=..., tower=..., layer=..., **kwargs)`` creates the module for one site of
    one block (``layer`` is the block's index in its tower); the default calls ``cls(dim, **kwargs)``.

    Example:
        >>> import torch.nn as nn, clipadapt
        >>> @clipadapt.register_adapter("scale_demo", override=True)
        ... class ScaleDemo(clipadapt.Adapter):
        ...     sites = ("post_block",)
        ...     def __init__(self, dim):
        ...         super().__init__()
        ...         self.gain = nn.Parameter(torch.zeros(dim))
        ...     def forward(self, x, ctx):
        ...         return x * self.gain
    """

    sites: ClassVar[tuple[str, ...]] = ("pre_mlp",)
    needs_frames: ClassVar[bool] = False
    switchable: ClassVar[bool] = False
    enabled: bool = True  # set by the engine on weight adapters as their set is (de)activated

    @classmethod
    def build(cls, dim: int, *, site: str | None, tower: Tower, layer: int, **kwargs) -> nn.Module:
        return cls(dim, **kwargs)

    def attach(self, block: Block) -> Callable[[], None]:
        """For weight adapters (``sites == ()``): modify `block` and return an undo function."""
        raise NotImplementedError(f"{type(self).__name__} has no sites and must implement attach()")


@dataclass(eq=False)
class Injection:
    """The handle `inject` returns: what was injected where, and how to undo it."""

    name: str
    tower: str
    layers: list[int]
    sites: list[str | None]
    kwargs: dict[str, Any]
    adapter_set: str = DEFAULT_SET
    modules: list[tuple[int, str | None, nn.Module]] = field(default_factory=list, repr=False)
    undo: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable description that re-creates this injection (its set named only
        when it is not ``default``, so the specs of unnamed injections are as they always were)."""
        spec = {"name": self.name, "tower": self.tower, "layers": self.layers, "sites": self.sites, "kwargs": self.kwargs}
        if self.adapter_set != DEFAULT_SET:
            spec["adapter_set"] = self.adapter_set
        return spec

    def num_params(self) -> int:
        return sum(p.numel() for _, _, m in self.modules for p in m.parameters())


@dataclass(eq=False)
class InjectionState:
    """Kept on the model (as a plain attribute, so never in ``state_dict``)."""

    injections: list[Injection] = field(default_factory=list)
    num_frames: int | None = None
    blocks: dict[nn.Module, BlockHooks] = field(default_factory=dict)
    active: tuple[str, ...] = ()  # the sets that run, in activation order
    frozen: set[str] = field(default_factory=set)  # sets that stay frozen while active
    routing: Routing | None = None  # inside `frames(model, T, sets=...)`


# --------------------------------------------------------------------------------------------
# helpers


def _state(model: nn.Module, create: bool = False) -> InjectionState | None:
    state = model.__dict__.get(STATE)
    if state is None and create:
        state = InjectionState()
        model.__dict__[STATE] = state
    return state


def resolve_layers(layers: int | Iterable[int] | str, count: int, tower: str = "") -> list[int]:
    """Normalise a layer selection: an int, negative ints, a range, a list, or ``"all"``.

    Example:
        >>> resolve_layers(-1, 12), resolve_layers(range(2), 12), resolve_layers("all", 3)
        ([11], [0, 1], [0, 1, 2])
    """
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers={layers!r} is not understood; use an int, a list, a range or 'all'")
        return list(range(count))
    items = [layers] if isinstance(layers, int) else list(layers)
    resolved = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"layer {item!r} is not an int; {tower} layers are 0..{count - 1} (or -{count}..-1)")
        if not -count <= item < count:
            raise ValueError(f"layer {item} does not exist: the {tower} tower has {count} blocks (0..{count - 1}, or -{count}..-1)")
        resolved.append(item % count)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"layers {items} name the same block twice")
    return resolved


def _block_hooks(state: InjectionState, block: Block) -> BlockHooks:
    """The hooks of `block` (its input capture and site dispatchers), placed on first use."""
    if block.module not in state.blocks:
        state.blocks[block.module] = BlockHooks.place(state, block)
    return state.blocks[block.module]


def _remove_entry(state: InjectionState, block_module: nn.Module, site: str, adapter_set: str, entry: SiteEntry) -> None:
    hooks = state.blocks[block_module]
    hooks.remove(site, adapter_set, entry)
    if hooks.empty:
        hooks.remove_capture()
        del state.blocks[block_module]


def _container(block_module: nn.Module) -> nn.ModuleDict:
    container = getattr(block_module, CONTAINER, None)
    if container is None:
        container = nn.ModuleDict()
        block_module.add_module(CONTAINER, container)
    elif not isinstance(container, nn.ModuleDict):
        raise TypeError(f"block {type(block_module).__name__} already has an attribute {CONTAINER!r}")
    return container


def _resolve_sites(cls: type, name: str, site: str | Sequence[str] | None) -> list[str | None]:
    default = tuple(getattr(cls, "sites", ("pre_mlp",)))
    if not default:
        if site is not None:
            raise ValueError(f"adapter {name!r} acts on weights and takes no site (got site={site!r})")
        return [None]
    sites = list(default) if site is None else [site] if isinstance(site, str) else list(site)
    for s in sites:
        if s not in SITES:
            raise ValueError(f"unknown site {s!r} for adapter {name!r}; sites are {', '.join(SITES)}")
    if len(set(sites)) != len(sites):
        raise ValueError(f"site list {sites} repeats a site")
    return sites


# --------------------------------------------------------------------------------------------
# public API


def adapter_options(adapter_cls: type) -> set[str] | None:
    """The options (keyword arguments) a registered adapter class accepts: those its classmethod
    ``accepted_options()`` declares, else those of its ``build`` (or ``__init__``) without the
    arguments `inject` passes itself; ``None`` when it takes ``**kwargs`` and so cannot say.
    `inject` and recipe validation both ask here.

    Example:
        >>> sorted(adapter_options(clipadapt.ADAPTERS.get("bottleneck")))
        ['activation', 'init', 'width']
    """
    import inspect

    declared = getattr(adapter_cls, "accepted_options", None)
    if callable(declared):
        accepted = declared()
        return None if accepted is None else set(accepted)
    build = getattr(adapter_cls, "build", None)
    custom = build is not None and getattr(build, "__func__", None) is not Adapter.build.__func__
    parameters = inspect.signature(build if custom else adapter_cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    names = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names - {"self", "cls", "dim", "site", "tower", "layer"}


def inject(
    model: nn.Module,
    name: str,
    *,
    tower: str = "visual",
    layers: int | Iterable[int] | str = "all",
    site: str | Sequence[str] | None = None,
    freeze: bool = True,
    adapter_set: str = DEFAULT_SET,
    **kwargs: Any,
) -> Injection:
    """Inject the registered adapter `name` into `layers` of `tower`, at `site`.

    Args:
        model: a CLIP (or a tower) of a supported family, or a module that contains one.
        name: a registered adapter (``clipadapt ls adapters``).
        tower: ``visual`` or ``text``.
        layers: an int, negative ints, a range, a list, or ``"all"``.
        site: one of `SITES`, several, or ``None`` for the adapter's own default.
        freeze: freeze every parameter that is not an adapter of an active set (like PEFT).
        adapter_set: the set this injection belongs to (`clipadapt.sets`); two sets may hold the
            same adapter at the same site. The set becomes active, alone, unless it already is.
        **kwargs: options of the adapter (``width=384``, ...).

    Returns:
        An `Injection` handle, accepted by `eject`.

    Example:
        >>> handle = clipadapt.inject(clip, "ted", tower="visual", layers=range(12), width=384)
        >>> clipadapt.inject(clip, "ted", layers=range(12), width=384, adapter_set="ssv2")
    """
    cls = ADAPTERS.get(name)
    check_set_name(adapter_set)
    accepted = adapter_options(cls)
    unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(accepted), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TypeError(f"{unknown[0]!r} is not an option of adapter {name!r}; {hint}accepted: {', '.join(sorted(accepted)) or '(none)'}")
    tower_obj = get_tower(model, tower)
    layer_ids = resolve_layers(layers, len(tower_obj.blocks), tower)
    sites = _resolve_sites(cls, name, site)
    kwargs = {k: list(v) if isinstance(v, (range, tuple)) else v for k, v in kwargs.items()}
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise ValueError(f"options of adapter {name!r} must be plain values (numbers, strings, lists): {err}") from None

    for layer in layer_ids:
        container = getattr(tower_obj.blocks[layer].module, CONTAINER, None)
        for s in sites:
            tower_obj.blocks[layer].refuse(s, f"adapter {name!r} in {tower} block {layer}")  # a site its layout cannot hold exactly
            if container is not None and module_key(name, s, adapter_set) in container:
                in_set = "" if adapter_set == DEFAULT_SET else f" of set {adapter_set!r}"
                raise ValueError(
                    f"adapter {name!r}{in_set} is already injected in {tower} block {layer} at site {s!r}; "
                    "eject it first, choose another site or another adapter_set"
                )

    state = _state(model, create=True)
    active = state.active if adapter_set in state.active else (adapter_set,)
    check_switchable(model_states(model), active)
    injection = Injection(name, tower, layer_ids, sites, kwargs, adapter_set)
    try:
        for layer in layer_ids:
            block = tower_obj.blocks[layer]
            for s in sites:
                module = cls.build(tower_obj.width, site=s, tower=tower_obj, layer=layer, **kwargs)
                _attach(state, injection, tower_obj, layer, block, s, module)
    except Exception:
        _detach(injection)
        raise
    state.injections.append(injection)
    for each in model_states(model):
        each.active = active
        apply_activation(each)
    if freeze:
        freeze_model(model)
    return injection


def _attach(state, injection, tower: Tower, layer: int, block: Block, site, module: nn.Module) -> None:
    param = next(block.module.parameters(), None)
    if param is not None:
        module.to(device=param.device)
    key = module_key(injection.name, site, injection.adapter_set)
    _container(block.module).add_module(key, module)
    injection.modules.append((layer, site, module))
    injection.undo.append(functools.partial(_remove_module, block.module, key))
    if site is None:
        module.enabled = False  # until the set's activation says otherwise
        injection.undo.append(module.attach(block))
        return
    hooks = _block_hooks(state, block)
    ctx = AdapterContext(
        tower=tower.name,
        layer=layer,
        site=site,
        cls_index=tower.cls_index,
        num_prefix_tokens=tower.num_prefix_tokens,
        block=block,
        native_grid=tower.grid,
        state=hooks.bstate,
        adapter_name=injection.name,
    )
    entry = SiteEntry(module, ctx)
    hooks.add(block, site, injection.adapter_set, entry, tower.seq_first, tower.name, layer)
    injection.undo.append(functools.partial(_remove_entry, state, block.module, site, injection.adapter_set, entry))


def _remove_module(block_module: nn.Module, key: str) -> None:
    container = getattr(block_module, CONTAINER)
    del container[key]
    if len(container) == 0:
        delattr(block_module, CONTAINER)


def _detach(injection: Injection) -> None:
    for undo in reversed(injection.undo):
        undo()
    injection.undo.clear()


def injections(model: nn.Module, adapter_set: str | None = None) -> list[Injection]:
    """Every injection made into `model` or into a module inside it, in order (those of
    `adapter_set` only, when given).

    Example:
        >>> [inj.name for inj in clipadapt.injections(clip, "k400")]
        ['ted']
    """
    return [inj for state in model_states(model) for inj in state.injections
            if adapter_set is None or inj.adapter_set == adapter_set]


def eject(model: nn.Module, handle: Injection | None = None, *, adapter_set: str | None = None) -> None:
    """Remove one injection (`handle`), every injection of one set (`adapter_set`), or all of
    them; the model's keys and outputs are then those it had without them.

    The other sets keep their modules, keys, activation and outputs. Parameters frozen by
    `inject` stay frozen (call ``requires_grad_(True)`` to undo that).

    Example:
        >>> clipadapt.eject(clip, adapter_set="ssv2")   # k400 stays
        >>> clipadapt.eject(clip)                       # everything
    """
    if handle is not None and adapter_set is not None:
        raise ValueError("eject takes a handle or an adapter_set, not both")
    states = model_states(model)
    if adapter_set is not None and adapter_set not in set_names(states):
        raise ValueError(f"adapter set {adapter_set!r} is not in this model; its sets are {set_names(states) or '(none)'}")
    found = False
    for state in states:
        for injection in list(reversed(state.injections)):
            if (handle is None and adapter_set is None) or injection is handle or injection.adapter_set == adapter_set:
                _detach(injection)
                state.injections.remove(injection)
                found = True
    if handle is not None and not found:
        raise ValueError(f"injection {handle.name!r} ({handle.tower}, layers {handle.layers}) is not in this model")
    remaining = set(set_names(states))
    for state in states:
        state.active = tuple(name for name in state.active if name in remaining)
        state.frozen &= remaining


__all__ = [
    "SITES",
    "Adapter",
    "AdapterContext",
    "FramesError",
    "Injection",
    "inject",
    "eject",
    "injections",
    "freeze_model",
    "frames",
    "resolve_layers",
    "is_adapter_param",
    "backbone_fingerprint",
]
