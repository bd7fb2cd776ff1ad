"""Assembling M2-CLIP (and any adapter + head combination) from the pieces."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch.nn as nn

from clipadapt.inject import inject
from clipadapt.models.video_clip import DEFAULT_TEMPLATES, VideoCLIP

M2CLIP_HEADS = {"contrastive": 0.5, "cmc": 0.5, "cmlm": 0.1, "vc": 1.0}


def build_video_clip(
    clip: nn.Module,
    classnames: Sequence[str] | None = None,
    *,
    adapters: Sequence[Mapping[str, Any]] = (),
    heads: Sequence[Mapping[str, Any]] = (),
    pooling: str = "mean",
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    num_classes: int | None = None,
    tokenizer=None,
) -> VideoCLIP:
    """Inject `adapters` into `clip`, wrap it in a `VideoCLIP` and add `heads`.

    Args:
        adapters: inject calls, e.g. ``{"name": "ted", "tower": "visual", "layers": "all",
            "site": "pre_mlp", "options": {"width": 384}, "lr_mult": 1.0}``.
        heads: e.g. ``{"name": "vc", "weight": 1.0, "options": {"dropout": 0.5}, "lr_mult": 1.0}``.
        tokenizer: the text tower's tokenizer where its spec does not know it (`clipadapt.TextPath`).

    Example:
        >>> model = build_video_clip(clip, names, adapters=[{"name": "ted", "options": {"width": 64}}],
        ...                          heads=[{"name": "vc"}])
    """
    handles = []
    for spec in adapters:
        handles.append((inject(
            clip,
            spec["name"],
            tower=spec.get("tower", "visual"),
            layers=spec.get("layers", "all"),
            site=spec.get("site"),
            **dict(spec.get("options") or {}),
        ), float(spec.get("lr_mult", 1.0))))
    if not adapters:
        from clipadapt.inject import freeze_model

        freeze_model(clip)
    model = VideoCLIP(clip, classnames, templates=templates, pooling=pooling, num_classes=num_classes, tokenizer=tokenizer)
    names = {id(m): n for n, m in model.named_modules()}
    for handle, mult in handles:
        if mult != 1.0:
            for _, _, module in handle.modules:
                model.set_lr_mult(names[id(module)], mult)
    for spec in heads:
        model.add_head(spec["name"], weight=float(spec.get("weight", 1.0)), lr_mult=float(spec.get("lr_mult", 1.0)), **dict(spec.get("options") or {}))
    return model


def build_m2clip(
    clip: nn.Module,
    classnames: Sequence[str] | None = None,
    *,
    ted_site: str | Sequence[str] = "pre_mlp",
    ted_width: int = 384,
    ted_mode: str = "parallel",
    ted_parts: Sequence[str] = ("te", "td"),
    text_adapter: bool = True,
    text_width: int = 384,
    text_lr_mult: float = 0.5,
    pooling: str = "conv",
    heads: Mapping[str, float] | None = None,
    gather: str = "global",
    vc_dropout: float = 0.5,
    word_list: str | None = None,
    vocab_size: int | None = None,
    num_classes: int | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    tokenizer=None,
) -> VideoCLIP:
    """M2-CLIP's K400 configuration: TED in every visual block, a text adapter in the last text
    block, the temporal pooling adapter, and the contrastive, CMC, CMLM and VC heads.

    Initialised as the authors' release: TED feeds the first frame's zero difference through its
    TD branch (``zero_first_frame=False``) and starts at zero, so does the pooling adapter's
    residual (its conv and biases are zero): the fresh visual path is the frozen CLIP's, frame
    for frame, with the video embedding the frame mean. The text adapter keeps PyTorch's weights
    with zero biases, the CMLM block's adapter starts as a copy of it, and both train at half
    the base learning rate.

    Args:
        ted_site: ``pre_mlp`` (the release's K400 model), ``pre_attn`` (the paper's figure), or
            both (the release's SSv2 model).
        heads: head name → loss weight; default ``{"contrastive": 0.5, "cmc": 0.5, "cmlm": 0.1, "vc": 1.0}``.
        gather: the contrastive head's batch, ``global`` (all GPUs) or ``local`` (the release).
        word_list / vocab_size: CMLM's vocabulary from a file, or only its size (for counting).
        text_lr_mult: learning-rate factor of both text adapters (0.5, as the release).
        tokenizer: the text tower's tokenizer where its spec does not know it (`build_video_clip`).

    Example:
        >>> model = build_m2clip(open_clip.create_model("ViT-B-16"), k400_names)
        >>> clipadapt.summary(model)        # 16,138,136 trainable with 520 prompt words
    """
    heads = dict(M2CLIP_HEADS if heads is None else heads)
    adapters = [{"name": "ted", "tower": "visual", "layers": "all", "site": ted_site,
                 "options": {"width": ted_width, "mode": ted_mode, "parts": list(ted_parts), "zero_first_frame": False}}]
    if text_adapter:
        adapters.append({"name": "bottleneck", "tower": "text", "layers": [-1], "site": "pre_mlp",
                         "options": {"width": text_width, "init": "zero_bias"}, "lr_mult": text_lr_mult})
    options = {
        "contrastive": {"gather": gather},
        "cmlm": {"adapter_width": text_width, "word_list": word_list, "vocab_size": vocab_size,
                 "adapter_lr_mult": text_lr_mult, "adapter_init": "copy" if text_adapter else "zero_bias"},
        "vc": {"dropout": vc_dropout},
    }
    head_specs = [{"name": name, "weight": weight, "options": options.get(name, {})} for name, weight in heads.items()]
    return build_video_clip(clip, classnames, adapters=adapters, heads=head_specs, pooling=pooling,
                            templates=templates, num_classes=num_classes, tokenizer=tokenizer)
