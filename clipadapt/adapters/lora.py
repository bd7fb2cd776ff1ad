"""LoRA (Hu et al., ICLR 2022): low-rank updates of a block's attention projections.

For each target projection ``W (D_out, D_in)`` the block computes with
``W + (alpha / r) · B A`` instead, ``A (r, D_in)``, ``B (D_out, r)``. ``B`` starts at zero
(an exact identity at injection) and ``A`` as PEFT does (Kaiming uniform, ``a = √5``).

The update is realised with ``torch.nn.utils.parametrize`` on the block's own weights, so no
forward is rewritten and it works wherever the weight is read:

============================  ====================================  ======================
family                        q, k, v                               o
============================  ====================================  ======================
open_clip, OpenAI ``clip``    rows of the packed ``in_proj_weight``  ``out_proj.weight``
Hugging Face CLIP, SigLIP     ``q_proj``/``k_proj``/``v_proj``       ``out_proj.weight``
timm                          rows of the fused ``qkv.weight``       ``proj.weight``
============================  ====================================  ======================

``A`` and ``B`` live in the adapter module (``block.adapters.lora``); the parametrization only
refers to it, so they are saved and counted once. `merge` folds every update into the weights
and leaves a plain model.

Dropout: PEFT drops entries of the input ``x`` on the LoRA path, per token. A weight
parametrization never sees ``x``, so here dropout acts on the input features of the update:
``B A diag(m) / (1 − p)``, one mask ``m`` per forward pass (per weight read), shared by all
tokens of that pass. It is a weight-space variant of PEFT's dropout, not the same regulariser;
it is off by default, and in ``eval()`` mode the update is exact.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from clipadapt.backbones import Block
from clipadapt.inject import Adapter, eject, injections
from clipadapt.registry import register_adapter

TARGETS = ("q", "k", "v", "o")


class LowRankUpdate(nn.Module):
    """The factors of one update: ``A (r, D_in)`` (Kaiming uniform) and ``B (D_out, r)`` (zero)."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))


class LoRAWeight(nn.Module):
    """A parametrization ``W -> W + ΔW`` of one (possibly packed) projection weight.

    `chunks` names, for each of the weight's equal row blocks, the target it holds
    (``("q", "k", "v")`` for a packed weight, ``("o",)`` for the output projection).
    It holds the adapter by a plain reference, so ``A`` and ``B`` are not its submodules.
    """

    def __init__(self, lora: "LoRAAdapter", chunks: tuple[str, ...]):
        super().__init__()
        object.__setattr__(self, "lora", lora)  # not a submodule: the factors stay in the adapter
        self.chunks = chunks

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.lora.enabled:  # its adapter set is inactive: the weight itself, bit for bit
            return weight
        return weight + self.lora.weight_delta(self.chunks, weight, dropout=self.lora.training)


@register_adapter("lora")
class LoRAAdapter(Adapter):
    """LoRA: low-rank updates ``W + (alpha / r) · B A`` of the attention projections (q and v by default).

    See the module docstring for where the updates go in each family and how dropout works.

    Args:
        dim: the block width D (every projection is D → D in CLIP).
        rank: the rank r of each update.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: probability of dropping input features of the update while training (see
            the module docstring for how this differs from PEFT).
        targets: a subset of ``("q", "k", "v", "o")``.

    Parameters per block: ``2·r·D`` per target; 24,576 on ViT-B/16 (r = 8, q and v).

    Example:
        >>> clipadapt.inject(clip, "lora", tower="visual", layers="all", rank=8, alpha=16)
    """

    sites = ()
    switchable = True

    def __init__(self, dim: int, rank: int = 8, alpha: float = 8.0, dropout: float = 0.0, targets: list[str] | tuple[str, ...] = ("q", "v")):
        super().__init__()
        targets = tuple(targets)
        if not targets or any(t not in TARGETS for t in targets) or len(set(targets)) != len(targets):
            raise ValueError(f"lora targets {targets!r} must be a non-empty subset of {TARGETS}")
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"lora rank {rank!r} must be a positive int")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"lora dropout {dropout!r} must be in [0, 1)")
        self.scaling = alpha / rank
        self.dropout = dropout
        self.updates = nn.ModuleDict({t: LowRankUpdate(dim, dim, rank) for t in TARGETS if t in targets})
        self._attached: list[tuple[nn.Module, str, LoRAWeight]] = []

    def weight_delta(self, chunks: tuple[str, ...], weight: torch.Tensor, dropout: bool = False) -> torch.Tensor:
        """``ΔW`` for a weight whose row blocks hold `chunks`, in `weight`'s dtype.

        Example:
            >>> lora = LoRAAdapter(16, rank=2, targets=["q", "v"])
            >>> lora.weight_delta(("q", "k", "v"), torch.zeros(48, 16)).shape
            torch.Size([48, 16])
        """
        rows = weight.shape[0] // len(chunks)
        parts = []
        for target in chunks:
            if target not in self.updates:
                parts.append(weight.new_zeros(rows, weight.shape[1]))
                continue
            update = self.updates[target]
            factor_a = update.A
            if dropout and self.dropout > 0:
                keep = F.dropout(factor_a.new_ones(factor_a.shape[1]), self.dropout, training=True)
                factor_a = factor_a * keep
            parts.append((update.B @ factor_a * self.scaling).to(weight.dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def attach(self, block: Block):
        """Parametrize the projection weights of `block` that hold a target; returns the undo.

        The projections are those the backbone spec names (`Block.projections`)."""
        if not block.projections:
            raise TypeError(
                f"lora: the backbone spec names no projection weights for {type(block.attn).__name__} "
                "(Block.projections); LoRA needs them"
            )
        attached = []
        try:
            for module, tensor_name, chunks in block.projections:
                if not set(chunks) & set(self.updates):
                    continue
                weight = getattr(module, tensor_name)
                dim = next(iter(self.updates.values())).A.shape[1]
                if tuple(weight.shape) != (len(chunks) * dim, dim):
                    raise ValueError(
                        f"lora expects {type(module).__name__}.{tensor_name} of shape {(len(chunks) * dim, dim)}, "
                        f"found {tuple(weight.shape)}"
                    )
                order = list(module._parameters)
                _own_class(module)
                parametrization = LoRAWeight(self, chunks)
                parametrize.register_parametrization(module, tensor_name, parametrization)
                attached.append((module, tensor_name, parametrization, order))
        except Exception:
            _undo(attached)
            raise
        self._attached = [(m, n, p) for m, n, p, _ in attached]
        return functools.partial(self._detach, attached)

    def _detach(self, attached: list) -> None:
        _undo(attached)
        self._attached = []

    def merged_weights(self) -> list[tuple[nn.Module, str, torch.Tensor]]:
        """``(module, tensor name, W + ΔW)`` for every weight this adapter changes (no dropout)."""
        merged = []
        with torch.no_grad():
            for module, tensor_name, parametrization in self._attached:
                original = module.parametrizations[tensor_name].original
                merged.append((module, tensor_name, original + self.weight_delta(parametrization.chunks, original)))
        return merged


def _own_class(module: nn.Module) -> None:
    """Give a parametrized `module` a class of its own.

    ``parametrize`` keeps a parametrized weight as a property of a generated class, and
    ``copy.deepcopy`` gives the copy that same class; adding or removing a parametrization edits
    the class, so without this the copy's edits would reach the original."""
    if parametrize.is_parametrized(module):
        cls = type(module)
        namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        module.__class__ = type(cls.__name__, cls.__bases__, namespace)


def _undo(attached: list) -> None:
    """Remove the parametrizations in `attached` (newest first), restoring the original parameters."""
    for module, tensor_name, parametrization, order in reversed(attached):
        _own_class(module)
        plist = module.parametrizations[tensor_name]
        if len(plist) > 1:  # another parametrization of the same weight stays
            del plist[[i for i, p in enumerate(plist) if p is parametrization][0]]
            continue
        parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=False)
        # the original parameter comes back last; put it where it was so state_dict keys keep their order
        params = dict(module._parameters)
        module._parameters.clear()
        module._parameters.update({name: params[name] for name in order if name in params})
        module._parameters.update({name: p for name, p in params.items() if name not in order})
    attached.clear()


def merge(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into the weights and remove the LoRA injections; returns `model`.

    The result is a plain model: its keys are the original ones and it computes what the LoRA
    model computed in ``eval()`` mode. Its frozen weights now hold ``W + ΔW``, so `eject` cannot
    bring the original weights back after a merge.

    Example:
        >>> clipadapt.inject(clip, "lora", layers="all")
        >>> ...  # train
        >>> clipadapt.adapters.lora.merge(clip)
    """
    for injection in list(injections(model)):
        adapters = [m for _, _, m in injection.modules if isinstance(m, LoRAAdapter)]
        if not adapters:
            continue
        if not all(adapter.enabled for adapter in adapters):
            raise ValueError(f"lora of adapter set {injection.adapter_set!r} is inactive: activate it or eject it before merge")
        merged = [item for adapter in adapters for item in adapter.merged_weights()]
        eject(model, injection)
        with torch.no_grad():
            for module, tensor_name, value in merged:
                getattr(module, tensor_name).copy_(value)
    return model
