"""Counting the multiply-adds of one traced call: fvcore, with the operators it skips.

Built on fvcore's ``FlopCountAnalysis`` (a ``torch.jit`` trace), with handlers for the operators
fvcore skips: ``aten::scaled_dot_product_attention`` and the fused ``nn.MultiheadAttention``
inference path ``aten::_native_multi_head_attention`` (projections and the QKᵀ and AV matmuls),
``aten::baddbmm``. Convolutions of every kind (grouped and depthwise 1d/2d/3d, transposed) reach
fvcore as ``aten::_convolution``; ``aten::linear``, ``matmul``, ``mm``, ``addmm``, ``bmm`` and
``einsum`` are fvcore's own.

The convention (`CONVENTION`): one multiply-add is one FLOP; matmuls, linear layers,
convolutions and attention's QKᵀ and AV products are counted; LayerNorm and GroupNorm count 5 per
element (4 without affine), as fvcore does; elementwise operators (activations, softmax, residual
adds, reductions, lookups) count zero and are listed by name in ``ignored_ops``; any other
operator that has no handler is listed in ``unsupported_ops``, never dropped silently.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

CONVENTION = (
    "1 FLOP = 1 multiply-add (fvcore). Counted: linear layers, matmul/mm/bmm/baddbmm/einsum, "
    "convolutions (groups respected), attention QK^T and AV matmuls (scaled_dot_product_attention "
    "and the fused nn.MultiheadAttention path), LayerNorm/GroupNorm 5 per element (4 without affine). "
    "Zero: elementwise ops (activations, softmax, residual adds, reductions, lookups), listed in "
    "ignored_ops. A view is one clip of T frames at the stated resolution through the visual path "
    "(and pooling/heads where the model runs them); the text tower is counted per prompt, apart "
    "(its class embeddings are computed once and cached at test time)."
)

# Operators that do no multiply-adds, or only elementwise work that papers leave out.
IGNORED_OPS = frozenset(
    f"aten::{name}"
    for name in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "reciprocal",
        "gelu", "silu", "sigmoid", "tanh", "hardtanh", "leaky_relu", "elu", "erf",
        "softmax", "log_softmax", "exp", "log", "sqrt", "rsqrt", "pow",
        "mean", "sum", "norm", "linalg_vector_norm", "clamp_min", "clamp_max", "abs", "where",
        "pad", "embedding", "argmax", "argmin", "repeat", "expand_as", "ne", "lt", "le",
        "cumsum", "masked_fill_", "fill_", "zero_", "scatter", "lift_fresh", "numpy_T",
        "new_ones", "ones_like", "rand_like", "bernoulli_", "feature_dropout", "alpha_dropout",
    )
)


# --------------------------------------------------------------------------------------------
# operator handlers (inputs and outputs are torch._C.Value of the traced graph)


def _shape(value) -> list[int]:
    return value.type().sizes()


def sdpa_flops(inputs: list, outputs: list) -> Counter:
    """``scaled_dot_product_attention(q, k, v)``: QKᵀ and AV, ``batch·Lq·Lk·(E + Ev)``."""
    query, key, value = (_shape(v) for v in inputs[:3])
    rows = math.prod(query[:-1])  # batch · heads · Lq
    return Counter({"attention": rows * key[-2] * (query[-1] + value[-1])})


def native_mha_flops(inputs: list, outputs: list) -> Counter:
    """The fused ``nn.MultiheadAttention`` path: in-projections, QKᵀ, AV and out-projection."""
    query, key, value = (_shape(v) for v in inputs[:3])  # (B, Lq, E), (B, Lk, E), (B, Lk, E)
    embed_dim = inputs[3].toIValue()
    batch, len_q, len_k = query[0], query[-2], key[-2]
    projections = batch * (len_q + 2 * len_k) * embed_dim * embed_dim + batch * len_q * embed_dim * embed_dim
    attention = 2 * batch * len_q * len_k * embed_dim
    return Counter({"linear": projections, "attention": attention})


def baddbmm_flops(inputs: list, outputs: list) -> Counter:
    """``baddbmm(input, batch1, batch2)``: the batched product, ``b·n·k·m``."""
    (batch, rows, inner), cols = _shape(inputs[1]), _shape(inputs[2])[-1]
    return Counter({"bmm": batch * rows * inner * cols})


# Shape and memory operators fvcore does not know yet; they do no arithmetic at all.
ZERO_FLOP_OPS = ("aten::unflatten", "aten::movedim", "aten::swapaxes", "aten::view_as", "aten::clone", "aten::alias")

HANDLERS: dict[str, Callable | None] = {
    **dict.fromkeys(ZERO_FLOP_OPS),
    "aten::scaled_dot_product_attention": sdpa_flops,
    "aten::_native_multi_head_attention": native_mha_flops,
    "aten::baddbmm": baddbmm_flops,
}


# --------------------------------------------------------------------------------------------
# counting one call


@dataclass
class FlopCount:
    """What one traced call costs: ``total`` multiply-adds, by module, by call stack, by operator.

    ``by_module`` holds fvcore's inclusive counts keyed by module path relative to the model
    (``""`` is the whole call). ``by_call_stack`` keys each operator's count by the modules that
    were running when it ran, outermost first, joined by ``/`` (``"visual/visual.transformer/..."``);
    it tells an adapter that reuses a frozen module apart from the module's own call.
    ``unsupported_ops`` and ``ignored_ops`` count occurrences by operator name.
    """

    total: int
    by_module: dict[str, int]
    by_call_stack: dict[str, int]
    by_operator: dict[str, int]
    unsupported_ops: dict[str, int]
    ignored_ops: dict[str, int]


class _Call(nn.Module):
    """Traces ``call(model, *inputs)`` instead of ``model(*inputs)``; the model sits at ``.model``."""

    def __init__(self, model: nn.Module, call: Callable[..., Any]):
        super().__init__()
        self.model = model
        self.call = call

    def forward(self, *inputs):
        return tuple(_tensors(self.call(self.model, *inputs)))


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor in a (nested) output: tensors, tuples, lists, dicts and ModelOutputs."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def _recording(handle: Callable, by_call_stack: Counter) -> Callable:
    """`handle`, also adding its count to `by_call_stack` under the operator's scope (``/a/a.b``)."""

    def count(inputs: list, outputs: list):
        result = handle(inputs, outputs)
        stack = "/".join(_relative(name) for name in outputs[0].node().scopeName().split("/") if name)
        by_call_stack[stack] += int(sum(result.values()) if isinstance(result, Counter) else result)
        return result

    return count


def flops(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    call: Callable[..., Any] | None = None,
) -> FlopCount:
    """Count the multiply-adds of ``model(*inputs)`` (or ``call(model, *inputs)``) in eval mode.

    The model runs once under ``torch.no_grad()`` in eval mode (its train/eval flags are restored
    afterwards), so what is counted is the test-time path. See `CONVENTION`.

    Example:
        >>> count = flops(clip.visual, torch.randn(8, 3, 224, 224))
        >>> round(count.total / 1e9, 1), count.unsupported_ops
        (140.7, {})
    """
    with warnings.catch_warnings():  # importing fvcore scripts a loss with torch.jit, which warns
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    traced = _Call(model, call or (lambda m, *xs: m(*xs)))
    modes = {module: module.training for module in model.modules()}
    by_call_stack: Counter = Counter()
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(traced, inputs).set_op_handle(**HANDLERS)
            # fvcore keeps its handles in `_op_handles`; each is wrapped to also record call stacks
            analysis.set_op_handle(**{op: _recording(h, by_call_stack) for op, h in analysis._op_handles.items()})
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            # the model's methods (encode_image, ...) run at the trace's root scope, so the whole
            # call, not the module `model`, is the model's total
            by_module = {_relative(name): int(count) for name, count in analysis.by_module().items() if name != "model"}
            skipped = analysis.unsupported_ops()
            by_operator = {name: int(count) for name, count in analysis.by_operator().items()}
    finally:
        for module, training in modes.items():
            module.train(training)
    return FlopCount(
        total=by_module.get("", 0),
        by_module=by_module,
        by_call_stack=dict(by_call_stack),
        by_operator=by_operator,
        unsupported_ops={op: n for op, n in sorted(skipped.items()) if op not in IGNORED_OPS},
        ignored_ops={op: n for op, n in sorted(skipped.items()) if op in IGNORED_OPS},
    )


def _relative(name: str) -> str:
    """``model.visual.conv1`` (a path inside `_Call`) -> ``visual.conv1``; ``model`` -> ``""``."""
    return "" if name == "model" else name.removeprefix("model.")
