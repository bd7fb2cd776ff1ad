"""FLOPs per view, per prompt and per component, with parameter counts: `flops_report`.

A view is one clip of T frames through the visual path (and pooling and heads where the model runs
them); the text tower is counted per prompt, apart. The components are those of
`clipadapt.analysis.flop_components`; the counting convention is `CONVENTION`.

Example:
    >>> report = flops_report(clip, num_frames=8, views=12, num_classes=400)
    >>> round(report.gflops_per_view, 1)
    140.7
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from clipadapt.analysis.flop_components import _component_order, _layout, _split, find_clip
from clipadapt.analysis.flop_count import CONVENTION, flops
from clipadapt.backbones import detect, towers_of
from clipadapt.inject import frames

GIGA = 1e9


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
            bias = model.logit_bias() if "logit_bias" in needs else None
            inputs = HeadInputs(video=features.video, frames=features.frames, cls=features.cls,
                                class_embeddings=classes, logit_scale=scale, logit_bias=bias)
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
