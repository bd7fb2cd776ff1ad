"""The hooks that realise the sites of one block, and the per-call state they share.

Each block with adapters gets the `CaptureInput` pre-hooks (on the block and its ``ln_1``) and,
per site in use, one `SiteDispatcher`: ``pre_attn`` is a pre-hook on the block; ``attn_out`` and ``pre_mlp`` are
forward hooks on the module that ends the attention branch (``attn_out`` first, so ``pre_mlp``
sees the corrected branch; ``pre_mlp`` corrects it to ``out + A(x_in + out)`` with the block
input ``x_in`` captured on the same call); ``mlp_parallel`` is a forward hook on the MLP;
``post_block`` a forward hook on the block.

A dispatcher holds the adapters of every adapter set at its site and runs those of the active
sets, set after set in activation order (stacking), each on the stream the previous one left.
When no active set has an adapter at the site it returns ``None`` at once, so the block computes
exactly what it computes without adapters. In a mixed batch (`Routing`) each group of videos
that shares a list of sets is gathered with ``index_select``, run through that list once, and
put back with ``index_copy``.

Hooks are objects whose bound methods are registered, never closures, so a deep copy of a model
owns copies of them. Adapters see ``(N, L, D)`` batch-first tensors whatever the block's layout;
their delta is added out of place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from clipadapt.backbones import SITES, Block
from clipadapt.backbones.base import first_tensor, replace_first

CALL_TAG = "_clipadapt_call"  # the `CallState` of the block call a tensor entered


@dataclass(eq=False)
class Routing:
    """Which adapter sets each video of a mixed batch runs through.

    Attributes:
        num_frames: T; video ``i`` is rows ``i·T .. i·T + T − 1`` of the ``(B·T, L, D)`` batch.
        per_video: for each video, the tuple of sets it runs through (``()``: the frozen model).
        groups: each distinct tuple of sets with the frame rows of its videos, in first-seen order.
    """

    num_frames: int
    per_video: tuple[tuple[str, ...], ...]
    groups: list[tuple[tuple[str, ...], torch.Tensor]] = field(default_factory=list)
    _placed: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        videos: dict[tuple[str, ...], list[int]] = {}
        for index, sets in enumerate(self.per_video):
            videos.setdefault(sets, []).append(index)
        self.groups = [
            (sets, (torch.tensor(ids)[:, None] * self.num_frames + torch.arange(self.num_frames)).flatten())
            for sets, ids in videos.items()
        ]

    @property
    def rows(self) -> int:
        return len(self.per_video) * self.num_frames

    def on(self, group: int, device: torch.device) -> torch.Tensor:
        """The frame rows of group `group` on `device` (moved once per device)."""
        key = (group, device)
        if key not in self._placed:
            self._placed[key] = self.groups[group][1].to(device)
        return self._placed[key]


@dataclass(frozen=True, eq=False)
class CallState:
    """The model's state when a block call began: what its hooks read, on that call and on its
    recomputation by gradient checkpointing (after `frames()` has exited, another call of the
    block, or another ``activate``)."""

    num_frames: int | None
    routing: Routing | None
    active: tuple[str, ...]  # the model's active sets


@dataclass(eq=False)
class BlockState:
    """What the hooks of one block share during one call of that block (or its recomputation)."""

    num_frames: int | None = None
    x_in: torch.Tensor | None = None  # block input, in the block's layout, after pre_attn adapters
    active: tuple[str, ...] = ()
    routing: Routing | None = None

    def enter(self, call: CallState, x_in: torch.Tensor) -> None:
        self.num_frames, self.routing, self.active, self.x_in = call.num_frames, call.routing, call.active, x_in


def recomputing() -> bool:
    """Whether this forward runs inside a backward pass: gradient checkpointing re-computing a block."""
    return torch._C._current_graph_task_id() != -1


def _to_batch_first(x: torch.Tensor, seq_first: bool) -> torch.Tensor:
    return x.transpose(0, 1) if seq_first else x


def _delta(adapter: nn.Module, x: torch.Tensor, ctx, seq_first: bool) -> torch.Tensor:
    """The adapter's delta for a block tensor `x` in the block's own layout and dtype."""
    x_bf = _to_batch_first(x, seq_first)
    param = next(adapter.parameters(), None)
    if param is not None and param.dtype != x.dtype and not torch.is_autocast_enabled():
        delta = adapter(x_bf.to(param.dtype), ctx).to(x.dtype)
    else:
        delta = adapter(x_bf, ctx)
    return _to_batch_first(delta, seq_first)


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    for key in ("x", "q_x", "hidden_states"):
        if key in kwargs:
            return kwargs[key]
    raise RuntimeError(f"cannot find the block input among keyword arguments {sorted(kwargs)}")


def _replace_input(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), kwargs
    for key in ("x", "q_x", "hidden_states"):
        if key in kwargs:
            return args, {**kwargs, key: x}
    raise RuntimeError(f"cannot find the block input among keyword arguments {sorted(kwargs)}")


@dataclass(eq=False)
class CaptureInput:
    """The hooks that give the other hooks of a block call the values of that call.

    ``block`` (a pre-hook on the block) takes a `CallState` of the model's state and ties it to the
    block input as an attribute; on a recomputation inside backward (open_clip and timm checkpoint
    a block's ``__call__``, so its pre-hooks run again) it takes the state tied to the input
    instead. ``ln_1`` (a pre-hook on the block's first norm, whose input is the block input after
    the ``pre_attn`` adapters) enters the state tied to its input again: Hugging Face checkpoints
    a layer's ``forward`` only, so on its recomputation the block's pre-hooks do not run, and the
    block's shared state holds the last call's values. Checkpointing must pass the block input
    itself to the recomputation (``use_reentrant=False``). Under ``torch.compile`` nothing is
    tied: the traced graph holds the state of its call.
    """

    state: object  # the model's InjectionState (num_frames, active, routing)
    bstate: BlockState

    def block(self, module, args, kwargs):
        x = _first_input(args, kwargs)
        compiling = torch.compiler.is_compiling()
        call = getattr(x, CALL_TAG, None) if not compiling and recomputing() else None
        if call is None and not compiling and recomputing():
            refuse_a_copied_input(x)
        if call is None:  # a forward call (or a recomputation inside a checkpointed run of blocks: the model's state)
            call = CallState(self.state.num_frames, self.state.routing, self.state.active)
            if not compiling:
                setattr(x, CALL_TAG, call)
        self.bstate.enter(call, x)

    def ln_1(self, module, args):
        call = None if torch.compiler.is_compiling() or not args else getattr(args[0], CALL_TAG, None)
        if call is not None:
            self.bstate.enter(call, args[0])
        elif args and not torch.compiler.is_compiling() and recomputing():
            refuse_a_copied_input(args[0])


def refuse_a_copied_input(x: torch.Tensor) -> None:
    """Refuse a block recomputed inside backward from a detached copy of its input (reentrant
    gradient checkpointing, ``use_reentrant=True``): the copy carries no `CallState`, and the
    model's state at backward time (another ``frames`` T, other active sets) may not be the one
    the call ran with. A recomputed block fed by the block before it (a checkpointed run of
    several blocks) is not a copy: it has a ``grad_fn`` or does not require grad."""
    if x.requires_grad and x.grad_fn is None:
        raise RuntimeError("a block with adapters is recomputed inside backward from a copy of its input (reentrant "
                           "gradient checkpointing, use_reentrant=True): the frame count and active sets of its call are "
                           "lost; checkpoint with use_reentrant=False (BackboneSpec.set_grad_checkpointing does)")


@dataclass(eq=False)
class SiteEntry:
    """One adapter at one site of one block, with the context it is called with."""

    adapter: nn.Module
    ctx: object  # the adapter's AdapterContext


@dataclass(eq=False)
class SiteDispatcher:
    """The one hook that realises a site of a block for every adapter set (its methods are the hooks).

    ``entries`` maps a set name to its adapters at this site, in injection order.
    """

    site: str
    bstate: BlockState
    seq_first: bool
    tower: str
    layer: int
    entries: dict[str, list[SiteEntry]] = field(default_factory=dict)

    def _chain(self, sets: tuple[str, ...]) -> list[SiteEntry]:
        return [entry for name in sets for entry in self.entries.get(name, ())]

    def _step(self, entry: SiteEntry, stream: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        """One adapter: ``stream + A(stream)``, ``stream + A(source + stream)`` (pre_mlp) or
        ``stream + A(source)`` (mlp_parallel, whose source is the MLP input)."""
        if self.site == "pre_mlp":
            adapter_input = source + stream
        elif self.site == "mlp_parallel":
            adapter_input = source
        else:
            adapter_input = stream
        return stream + _delta(entry.adapter, adapter_input, entry.ctx, self.seq_first)

    def _run(self, stream: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor | None:
        """`stream` after the adapters that apply, or ``None`` when none does."""
        routing = self.bstate.routing
        if routing is None:
            chain = self._chain(self.bstate.active)
            for entry in chain:
                stream = self._step(entry, stream, source)
            return stream if chain else None
        axis = 1 if self.seq_first else 0
        if stream.shape[axis] != routing.rows:
            if any(self.entries.get(name) for name in {*self.bstate.active, *(s for sets, _ in routing.groups for s in sets)}):
                raise ValueError(
                    f"a mixed batch routes {len(routing.per_video)} videos × {routing.num_frames} frames = {routing.rows} rows, "
                    f"but {self.tower} block {self.layer} got {stream.shape[axis]}; run other inputs (text) outside "
                    "`with clipadapt.frames(model, T, sets=...)`"
                )
            return None
        result = None
        for group, (sets, _) in enumerate(routing.groups):
            chain = self._chain(sets)
            if not chain:
                continue
            rows = routing.on(group, stream.device)
            part = stream.index_select(axis, rows)
            part_source = None if source is None else source.index_select(axis, rows)
            for entry in chain:
                part = self._step(entry, part, part_source)
            result = (stream if result is None else result).index_copy(axis, rows, part)
        return result

    def pre_attn(self, module, args, kwargs):
        x_in = _first_input(args, kwargs)
        x = self._run(x_in)
        if x is None:
            return None
        self.bstate.x_in = x
        if not torch.compiler.is_compiling() and hasattr(x_in, CALL_TAG):  # the block's ln_1 sees x
            setattr(x, CALL_TAG, getattr(x_in, CALL_TAG))
        return _replace_input(args, kwargs, x)

    def attn_out(self, module, args, output):
        out = self._run(first_tensor(output))
        return None if out is None else replace_first(output, out)

    def pre_mlp(self, module, args, output):
        out = self._run(first_tensor(output), self.bstate.x_in)
        return None if out is None else replace_first(output, out)

    def mlp_parallel(self, module, args, output):
        return self._run(output, args[0])

    post_block = attn_out  # the block output, corrected as the attention branch's

    def register(self, block: Block) -> RemovableHandle:
        """Register this dispatcher's hook on the module of `block` that its site acts on."""
        if self.site == "pre_attn":
            return block.module.register_forward_pre_hook(self.pre_attn, with_kwargs=True)
        if self.site == "attn_out":  # before pre_mlp's hook on the same module
            return block.attn_end.register_forward_hook(self.attn_out, prepend=True)
        if self.site == "pre_mlp":
            return block.attn_end.register_forward_hook(self.pre_mlp)
        if self.site == "mlp_parallel":
            return block.mlp.register_forward_hook(self.mlp_parallel)
        if self.site == "post_block":
            return block.module.register_forward_hook(self.post_block)
        raise ValueError(f"unknown site {self.site!r}; sites are {', '.join(SITES)}")


@dataclass(eq=False)
class BlockHooks:
    """Every hook the engine placed on one block: the input capture (on the block and its
    ``ln_1``) and one dispatcher per site."""

    bstate: BlockState
    capture: tuple[RemovableHandle, RemovableHandle]
    dispatchers: dict[str, tuple[SiteDispatcher, RemovableHandle]] = field(default_factory=dict)

    @classmethod
    def place(cls, state, block: Block) -> "BlockHooks":
        bstate = BlockState()
        capture = CaptureInput(state, bstate)
        handles = (block.module.register_forward_pre_hook(capture.block, with_kwargs=True, prepend=True),
                   block.ln_1.register_forward_pre_hook(capture.ln_1, prepend=True))
        return cls(bstate, handles)

    def remove_capture(self) -> None:
        for handle in self.capture:
            handle.remove()

    def add(self, block: Block, site: str, adapter_set: str, entry: SiteEntry, seq_first: bool, tower: str, layer: int) -> None:
        if site not in self.dispatchers:
            dispatcher = SiteDispatcher(site, self.bstate, seq_first, tower, layer)
            self.dispatchers[site] = (dispatcher, dispatcher.register(block))
        self.dispatchers[site][0].entries.setdefault(adapter_set, []).append(entry)

    def remove(self, site: str, adapter_set: str, entry: SiteEntry) -> None:
        dispatcher, handle = self.dispatchers[site]
        entries = dispatcher.entries[adapter_set]
        entries.remove(entry)
        if not entries:
            del dispatcher.entries[adapter_set]
        if not dispatcher.entries:
            handle.remove()
            del self.dispatchers[site]

    @property
    def empty(self) -> bool:
        return not self.dispatchers
