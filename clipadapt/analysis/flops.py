"""FLOPs per view, per component, counted the way video papers count them.

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

The report splits the cost by component, with dotted names:

- ``visual.backbone``: the visual tower without its adapters (patch embedding, blocks, ``ln_post``,
  projection);
- ``visual.adapters.<name>``: every injection named ``<name>`` in the visual tower;
- ``text.backbone``, ``text.adapters.<name>``: the same for the text tower, per prompt;
- for a wrapper that holds the CLIP at ``.clip``: ``pooling`` (``.pooling``), ``heads.<name>``
  (``.decoder.heads[<name>]``) and ``other`` (anything else the wrapper runs).

Example:
    >>> report = flops_report(clip, num_frames=8, views=12, num_classes=400)
    >>> round(report.gflops_per_view, 1)
    140.7
"""

from __future__ import annotations

import dataclasses

import json
import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from rich import box
from rich.console import Console
from rich.table import Table

from clipadapt.backbones import detect, towers_of
from clipadapt.inject import CONTAINER, frames, injections

GIGA = 1e9

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


# --------------------------------------------------------------------------------------------
# components


def find_clip(model: nn.Module) -> tuple[str, nn.Module]:
    """The CLIP inside `model` and its path: ``("clip", model.clip)`` for a wrapper, ``("", model)``.

    Example:
        >>> find_clip(clip)[0]
        ''
    """
    inner = getattr(model, "clip", None)
    if isinstance(inner, nn.Module):
        return "clip", inner
    return "", model


@dataclass
class _Layout:
    """Where each component lives inside the model: module paths and parameter names."""

    clip_path: str
    tower_paths: dict[str, str]  # tower -> module path ("" when the tower is the CLIP itself)
    adapters: dict[str, str]  # adapter module path -> component
    wrapper_parts: dict[str, str]  # module path -> component (pooling, heads.<name>)
    weight_updates: dict[str, str]  # parametrization module path -> weight adapter's component

    def param_component(self, name: str) -> str:
        for path, component in {**self.adapters, **self.wrapper_parts}.items():
            if name.startswith(path + "."):
                return component
        if self.clip_path and not name.startswith(self.clip_path + "."):
            return "other"
        for tower, path in self.tower_paths.items():
            if path != self.clip_path and name.startswith(path + "."):
                return f"{tower}.backbone"
        # parameters of the CLIP outside both tower modules (open_clip keeps the text tower on the
        # CLIP itself; Hugging Face keeps both projections there)
        local = name.removeprefix(self.clip_path + ".") if self.clip_path else name
        if "text" not in self.tower_paths or "visual" in local or "vision" in local:
            return "visual.backbone"
        return "text.backbone"


def _layout(model: nn.Module) -> _Layout:
    clip_path, clip = find_clip(model)
    paths = {id(module): name for name, module in model.named_modules()}
    tower_paths = {tower: paths[id(t.module)] for tower, t in towers_of(clip).items()}
    adapters: dict[str, str] = {}
    weight_updates: dict[str, str] = {}
    for inj in injections(model):
        for _, site, module in inj.modules:
            path, component = paths[id(module)], f"{inj.tower}.adapters.{inj.name}"
            adapters[path] = component
            if site is None:  # a weight adapter (LoRA) is charged for its parametrizations of the block's weights
                block = path.rsplit(f".{CONTAINER}.", 1)[0]
                weight_updates.update({p: component for p in paths.values() if p.startswith(block + ".") and ".parametrizations." in p})
    wrapper_parts: dict[str, str] = {}
    if clip_path:
        if isinstance(getattr(model, "pooling", None), nn.Module):
            wrapper_parts["pooling"] = "pooling"
        heads = getattr(getattr(model, "decoder", None), "heads", None)
        if isinstance(heads, nn.ModuleDict):
            wrapper_parts.update({f"decoder.heads.{name}": f"heads.{name}" for name in heads})
    return _Layout(clip_path, tower_paths, adapters, wrapper_parts, weight_updates)


def _split(count: FlopCount, layout: _Layout, tower: str, root: str) -> Counter:
    """Multiply-adds of one traced call by component.

    An operator belongs to the outermost adapter, pooling or head on its call stack (so an
    adapter that calls the block's frozen attention pays for it); otherwise to
    ``<tower>.backbone`` if it ran inside the CLIP, to `root` if it ran in no module at all
    (the CLIP's or the wrapper's own methods), and to ``other`` if it ran in another module.
    """
    parts: Counter = Counter()
    owners = {**layout.adapters, **layout.weight_updates, **layout.wrapper_parts}
    for stack, n in count.by_call_stack.items():
        scopes = stack.split("/") if stack else []
        owner = next((owners[scope] for scope in scopes if scope in owners), None)
        if owner is None and not scopes:
            owner = root
        elif owner is None:
            inside_clip = not layout.clip_path or (scopes[-1] + ".").startswith(layout.clip_path + ".")
            owner = f"{tower}.backbone" if inside_clip else "other"
        parts[owner] += n
    return parts


# --------------------------------------------------------------------------------------------
# the report


@dataclass
class Component:
    """One component's cost: multiply-adds per view (visual path) or per prompt (text), parameters."""

    name: str
    flops_per_view: int
    flops_per_prompt: int
    params: int
    trainable_params: int

    @property
    def gflops_per_view(self) -> float:
        return self.flops_per_view / GIGA

    @property
    def gflops_per_prompt(self) -> float:
        return self.flops_per_prompt / GIGA


@dataclass
class FlopsReport:
    """FLOPs and parameters of a video model, per view and per component (see `flops_report`)."""

    model: str
    num_frames: int
    image_size: int
    views: int
    num_classes: int
    context_length: int | None
    flops_per_view: int
    text_flops_per_prompt: int
    trainable_params: int
    total_params: int
    components: list[Component]
    operators_per_view: dict[str, int]
    operators_per_prompt: dict[str, int]
    unsupported_ops: dict[str, int]
    ignored_ops: dict[str, int]
    convention: str = CONVENTION

    @property
    def gflops_per_view(self) -> float:
        """Everything that runs per view at test time, the text tower excluded."""
        return self.flops_per_view / GIGA

    @property
    def gflops_all_views(self) -> float:
        return self.gflops_per_view * self.views

    @property
    def gflops_per_frame(self) -> float:
        return self.gflops_per_view / self.num_frames

    @property
    def text_gflops_per_prompt(self) -> float:
        return self.text_flops_per_prompt / GIGA

    @property
    def text_gflops_all_classes(self) -> float:
        return self.text_gflops_per_prompt * self.num_classes

    def component(self, name: str) -> Component:
        """The component called `name`; an unknown name is an error listing those present."""
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"no component {name!r}; components are {', '.join(c.name for c in self.components)}")

    def to_dict(self) -> dict:
        """Every field and derived number, JSON-ready."""
        data = asdict(self)
        for key in ("gflops_per_view", "gflops_all_views", "gflops_per_frame", "text_gflops_per_prompt", "text_gflops_all_classes"):
            data[key] = getattr(self, key)
        for entry, component in zip(data["components"], self.components):
            entry["gflops_per_view"] = component.gflops_per_view
            entry["gflops_per_prompt"] = component.gflops_per_prompt
        return data


def default_view_forward(model: nn.Module, video: torch.Tensor, num_frames: int) -> Any:
    """One view as it runs at test time: for a model with ``encode_video``, that and its decoder
    heads in evaluation (the classifying heads' logits; the class-prompt embeddings they compare
    with stand in by shape, ``(C, E)``, as the text tower is counted per prompt, apart); else the
    CLIP's image encoder on the ``(T, 3, H, W)`` frames inside ``frames(model, T)``.

    Args:
        video: ``(1, T, 3, H, W)``.
        num_frames: T (traced shapes are tensors, so T is passed as an int).

    Example:
        >>> default_view_forward(clip, torch.randn(1, 8, 3, 224, 224), 8).shape
        torch.Size([8, 512])
    """
    if hasattr(model, "encode_video"):
        features = model.encode_video(video)
        if not dataclasses.is_dataclass(features):
            return features
        # a traced graph must end in tensors, or all of it is dead code
        outputs = [v for v in vars(features).values() if isinstance(v, torch.Tensor)]
        decoder = getattr(model, "decoder", None)
        if decoder is not None and len(getattr(decoder, "heads", ())):
            from clipadapt.heads.base import HeadInputs

            needs = decoder.needs
            # class-prompt embeddings are computed once per class set, not per view: stand-ins by shape
            classes = (torch.nn.functional.normalize(video.new_ones(model.num_classes, features.video.shape[-1]), dim=-1)
                       if "class_embeddings" in needs else None)
            scale = model.logit_scale() if "logit_scale" in needs else None
            inputs = HeadInputs(video=features.video, frames=features.frames, cls=features.cls,
                                class_embeddings=classes, logit_scale=scale)
            outputs += list(decoder(inputs).logits.values())
        return tuple(outputs)
    _, clip = find_clip(model)
    encode = detect(clip).visual(clip).encode
    with frames(model, num_frames):
        return encode(video[0])


def flops_report(
    model: nn.Module,
    *,
    num_frames: int = 8,
    image_size: int | None = None,
    views: int = 1,
    num_classes: int = 0,
    context_length: int | None = None,
    view_forward: Callable[[nn.Module, torch.Tensor, int], Any] = default_view_forward,
) -> FlopsReport:
    """FLOPs per view and per prompt, by component, with parameter counts.

    Args:
        model: a (possibly adapted) CLIP of any supported family, or a wrapper holding one at
            ``.clip`` (with ``.pooling`` and ``.decoder.heads``).
        num_frames: T, frames per view.
        image_size: side of the square frames; default: the tower's native size (grid × patch).
        views: views per video at test time (e.g. 4 crops × 3 clips = 12).
        num_classes: class prompts the text tower encodes (once, cacheable).
        context_length: tokens per prompt; default: the model's own context (77 for CLIP).
        view_forward: ``view_forward(model, video, num_frames)`` runs one view, ``video`` of
            shape ``(1, T, 3, H, W)``; the default is `default_view_forward`.

    Example:
        >>> report = flops_report(clip, num_frames=8, image_size=224, views=12, num_classes=400)
        >>> report.gflops_per_view, report.text_gflops_per_prompt
    """
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if views < 1 or num_classes < 0:
        raise ValueError(f"views must be >= 1 and num_classes >= 0, got views={views}, num_classes={num_classes}")
    _, clip = find_clip(model)
    towers = towers_of(clip)
    layout = _layout(model)
    param = next(model.parameters())
    size = image_size or towers["visual"].image_size
    video = torch.randn(1, num_frames, 3, size, size, device=param.device, dtype=param.dtype)
    view = flops(model, video, call=lambda m, v: view_forward(m, v, num_frames))
    # ops outside every module are the CLIP's methods for a CLIP, the wrapper's own for a wrapper
    root = "other" if layout.clip_path else "visual.backbone"
    flops_by_component = {name: [n, 0] for name, n in _split(view, layout, "visual", root).items()}

    prompt = None
    if "text" in towers:
        length = context_length or towers["text"].context_length
        tokens = torch.ones(1, length, dtype=torch.long, device=param.device)
        encode = detect(clip).text(clip).encode
        prompt = flops(model, tokens, call=lambda m, t: encode(t))
        for name, n in _split(prompt, layout, "text", "text.backbone").items():
            flops_by_component.setdefault(name, [0, 0])[1] += n
        context_length = length

    params: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        counts = params.setdefault(layout.param_component(name), [0, 0])
        counts[0] += p.numel()
        counts[1] += p.numel() if p.requires_grad else 0

    names = sorted(set(flops_by_component) | set(params), key=_component_order)
    components = [
        Component(name, *flops_by_component.get(name, [0, 0]), *params.get(name, [0, 0]))
        for name in names
        if any(flops_by_component.get(name, [0, 0])) or any(params.get(name, [0, 0]))
    ]
    counts = [c for c in (view, prompt) if c is not None]
    return FlopsReport(
        model=type(model).__name__,
        num_frames=num_frames,
        image_size=size,
        views=views,
        num_classes=num_classes,
        context_length=context_length,
        flops_per_view=view.total,
        text_flops_per_prompt=prompt.total if prompt else 0,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
        components=components,
        operators_per_view=view.by_operator,
        operators_per_prompt=prompt.by_operator if prompt else {},
        unsupported_ops=dict(sum((Counter(c.unsupported_ops) for c in counts), Counter())),
        ignored_ops=dict(sum((Counter(c.ignored_ops) for c in counts), Counter())),
    )


def _component_order(name: str) -> tuple[int, str]:
    ranks = ("visual.backbone", "visual.adapters", "pooling", "heads", "other", "text.backbone", "text.adapters")
    return next((i for i, prefix in enumerate(ranks) if name.startswith(prefix)), len(ranks)), name


# --------------------------------------------------------------------------------------------
# output


def print_report(report: FlopsReport, console: Console | None = None) -> None:
    """Print the report as a rich table (one row per component), then the totals and the convention.

    Example:
        >>> print_report(flops_report(clip, num_frames=8))
    """
    table = Table(title=f"{report.model}: one view = {report.num_frames} frames at {report.image_size} px",
                  box=box.SIMPLE_HEAD)
    table.add_column("component", no_wrap=True)
    for column in ("GFLOPs\nper view", "%", "GFLOPs\nper prompt", "params\n(M)", "trainable\n(M)"):
        table.add_column(column, justify="right")
    for c in report.components:
        share = 100 * c.flops_per_view / report.flops_per_view if report.flops_per_view else 0.0
        table.add_row(
            c.name,
            f"{c.gflops_per_view:.2f}" if c.flops_per_view else "",
            f"{share:.1f}" if c.flops_per_view else "",
            f"{c.gflops_per_prompt:.3f}" if c.flops_per_prompt else "",
            f"{c.params / 1e6:.3f}",
            f"{c.trainable_params / 1e6:.3f}",
        )
    table.add_section()
    table.add_row("total", f"{report.gflops_per_view:.2f}", "100", f"{report.text_gflops_per_prompt:.3f}",
                  f"{report.total_params / 1e6:.3f}", f"{report.trainable_params / 1e6:.3f}")
    lines = [
        f"parameters: {report.trainable_params:,} trainable of {report.total_params:,}",
        f"per view: {report.gflops_per_view:.2f} GFLOPs ({report.gflops_per_frame:.2f} per frame); "
        f"x {report.views} views = {report.gflops_all_views:.1f} GFLOPs per video",
    ]
    if report.context_length:
        lines.append(
            f"text: {report.text_gflops_per_prompt:.3f} GFLOPs per prompt of {report.context_length} tokens; "
            f"x {report.num_classes} classes = {report.text_gflops_all_classes:.1f} GFLOPs, once (cacheable)"
        )
    lines += [
        f"unsupported ops: {_ops(report.unsupported_ops) or 'none'}",
        f"ignored (elementwise, zero FLOPs): {', '.join(op.removeprefix('aten::') for op in report.ignored_ops) or 'none'}",
        f"convention: {report.convention}",
    ]
    console = console or Console()
    console.print(table)
    console.print("\n".join(lines), highlight=False)


def _ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in ops.items())


def save_json(report: FlopsReport, path: str | Path) -> Path:
    """Write the report (every field and derived number) to `path` as JSON; returns the path.

    Example:
        >>> save_json(report, "flops.json")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def plot_report(report: FlopsReport, path: str | Path) -> Path:
    """Draw where the FLOPs and parameters go (horizontal bars, one PNG); returns the path.

    Example:
        >>> plot_report(report, "flops.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name for c in report.components]
    rows = range(len(names))
    figure, (ax_flops, ax_params) = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.8), sharey=True)
    ax_flops.barh(rows, [c.gflops_per_view for c in report.components], color="tab:blue", label="per view")
    ax_flops.barh(rows, [c.gflops_per_prompt for c in report.components], color="tab:orange", label="per prompt (text)")
    ax_flops.set_xlabel("GFLOPs (1 multiply-add = 1 FLOP)")
    ax_flops.set_title(f"{report.gflops_per_view:.1f} GFLOPs per view, {report.num_frames} frames")
    ax_flops.legend(loc="lower right")
    frozen = [c.params - c.trainable_params for c in report.components]
    ax_params.barh(rows, [p / 1e6 for p in frozen], color="tab:gray", label="frozen")
    ax_params.barh(rows, [c.trainable_params / 1e6 for c in report.components], left=[p / 1e6 for p in frozen],
                   color="tab:green", label="trainable")
    ax_params.set_xlabel("parameters (M)")
    ax_params.set_title(f"{report.trainable_params / 1e6:.2f}M trainable of {report.total_params / 1e6:.1f}M")
    ax_params.legend(loc="lower right")
    ax_flops.set_yticks(list(rows), names)
    ax_flops.invert_yaxis()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def flops_command(
    model: nn.Module,
    *,
    frames: int = 8,
    views: int = 1,
    num_classes: int = 0,
    image_size: int | None = None,
    context_length: int | None = None,
    json_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    console: Console | None = None,
) -> FlopsReport:
    """What ``clipadapt flops RECIPE`` runs on the recipe's model: count, print, write JSON and PNG.

    Example:
        >>> flops_command(clip, frames=8, views=12, num_classes=400, json_path="flops.json")
    """
    report = flops_report(model, num_frames=frames, image_size=image_size, views=views,
                          num_classes=num_classes, context_length=context_length)
    console = console or Console()
    print_report(report, console)
    if json_path is not None:
        console.print(f"wrote {save_json(report, json_path)}")
    if plot_path is not None:
        console.print(f"wrote {plot_report(report, plot_path)}")
    return report


__all__ = [
    "CONVENTION",
    "IGNORED_OPS",
    "Component",
    "FlopCount",
    "FlopsReport",
    "default_view_forward",
    "find_clip",
    "flops",
    "flops_command",
    "flops_report",
    "plot_report",
    "print_report",
    "save_json",
]
