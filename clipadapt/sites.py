"""The hooks that realise a site in one block, and the per-call state they share.

``pre_attn`` is a pre-hook on the block; ``attn_out`` and ``pre_mlp`` are forward hooks on the
module that ends the attention branch (``pre_mlp`` corrects it to ``out + A(x_in + out)`` with the
block input ``x_in`` captured by `CaptureInput` on the same call); ``mlp_parallel`` is a forward
hook on the MLP; ``post_block`` a forward hook on the block. Hooks are objects whose bound
methods are registered, never closures, so a deep copy of a model owns copies of them.
Adapters see ``(N, L, D)`` batch-first tensors whatever the block's layout; their delta is added
out of place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from clipadapt.backbones import SITES, Block
from clipadapt.backbones.base import first_tensor, replace_first

FRAMES_TAG = "_clipadapt_num_frames"  # set on block inputs so recomputation knows T


@dataclass(eq=False)
class BlockState:
    """What the hooks of one block share during one call of that block."""

    num_frames: int | None = None
    x_in: torch.Tensor | None = None  # block input, batch-first, after pre_attn adapters
    mlp_in: torch.Tensor | None = None


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
    """The pre-hook that records a block's input and T for the other hooks of the same call."""

    state: object  # the model's InjectionState (its num_frames)
    bstate: BlockState

    def __call__(self, module, args, kwargs):
        x = _first_input(args, kwargs)
        frames = self.state.num_frames
        if frames is not None:
            if not torch.compiler.is_compiling():
                setattr(x, FRAMES_TAG, frames)
        else:  # recomputation by gradient checkpointing, after `frames()` has exited
            frames = getattr(x, FRAMES_TAG, None)
        self.bstate.num_frames = frames
        self.bstate.x_in = x


@dataclass(eq=False)
class SiteHook:
    """The hook that realises one site for one adapter in one block (its methods are the hooks)."""

    adapter: nn.Module
    ctx: object  # the adapter's AdapterContext (its state: BlockState)
    seq_first: bool

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return _delta(self.adapter, x, self.ctx, self.seq_first)

    def pre_attn(self, module, args, kwargs):
        x = _first_input(args, kwargs)
        x = x + self.delta(x)
        self.ctx.state.x_in = x
        return _replace_input(args, kwargs, x)

    def attn_out(self, module, args, output):
        out = first_tensor(output)
        return replace_first(output, out + self.delta(out))

    def pre_mlp(self, module, args, output):
        out = first_tensor(output)
        return replace_first(output, out + self.delta(self.ctx.state.x_in + out))

    def mlp_parallel(self, module, args, output):
        return output + self.delta(args[0])

    post_block = attn_out  # the block output, corrected as the attention branch's


def hook_site(site: str, block: Block, adapter: nn.Module, ctx, seq_first: bool) -> RemovableHandle:
    """Register the hook that realises `site` for one adapter in one block; a site the block's
    layout cannot hold exactly (`Block.refusals`) is refused with the reason."""
    block.refuse(site, f"adapter {ctx.adapter_name!r} in {ctx.tower} block {ctx.layer}")
    hook = SiteHook(adapter, ctx, seq_first)
    if site == "pre_attn":
        return block.module.register_forward_pre_hook(hook.pre_attn, with_kwargs=True)
    if site in ("attn_out", "pre_mlp"):
        return block.attn_end.register_forward_hook(getattr(hook, site))
    if site == "mlp_parallel":
        return block.mlp.register_forward_hook(hook.mlp_parallel)
    if site == "post_block":
        return block.module.register_forward_hook(hook.post_block)
    raise ValueError(f"unknown site {site!r}; sites are {', '.join(SITES)}")
