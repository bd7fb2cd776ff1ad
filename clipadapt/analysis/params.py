"""Parameter summaries: what is injected where, and what trains."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn
from rich.console import Console
from rich.table import Table

from clipadapt.inject import injections, is_adapter_param


def compact_layers(layers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts, start = [], None
    ordered = sorted(layers)
    for i, layer in enumerate(ordered):
        if start is None:
            start = layer
        if i + 1 == len(ordered) or ordered[i + 1] != layer + 1:
            parts.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ",".join(parts)


def component_name(param_name: str) -> str:
    """The row a trainable parameter outside adapters is summed into.

    ``decoder.heads.cmlm.predict.bias`` -> ``heads.cmlm.predict``; ``pooling.up.weight`` ->
    ``pooling``; ``clip.visual.ln_post.weight`` / ``visual.ln_post.weight`` -> ``visual.ln_post``.
    """
    parts = param_name.split(".")
    if parts[:2] == ["decoder", "heads"]:
        return ".".join(["heads", *parts[2:4]]) if len(parts) > 4 else ".".join(["heads", *parts[2:3]])
    if parts[0] == "clip":
        parts = parts[1:]
    elif len(parts) > 1 and parts[0] not in ("visual", "text", "transformer"):
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 2 else ".".join(parts[:-1]) or parts[0]


def _other_trainable(model: nn.Module) -> "OrderedDict[str, int]":
    """Trainable parameters outside injected adapters, summed per `component_name`."""
    groups: OrderedDict[str, int] = OrderedDict()
    for name, param in model.named_parameters():
        if param.requires_grad and not is_adapter_param(name):
            group = component_name(name)
            groups[group] = groups.get(group, 0) + param.numel()
    return groups


def summary(model: nn.Module, *, show: bool = True, console: Console | None = None) -> dict:
    """Print a table of adapters (tower, layers, site, params, % of model) and return the numbers.

    Trainable parameters outside adapters (heads, pooling, ...) get a row per module.

    Returns:
        ``{"rows": [...], "trainable": int, "total": int, "trainable_percent": float}``.

    Example:
        >>> info = clipadapt.summary(clip)
        >>> info["trainable"]
        14247936
    """
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = []
    for inj in injections(model):
        params = inj.num_params()
        rows.append(
            {
                "adapter": inj.name,
                "tower": inj.tower,
                "layers": compact_layers(inj.layers),
                "site": ",".join(s or "weights" for s in inj.sites),
                "params": params,
                "percent": 100.0 * params / max(total, 1),
            }
        )
    for group, params in _other_trainable(model).items():
        rows.append({"adapter": group, "tower": "", "layers": "", "site": "", "params": params, "percent": 100.0 * params / max(total, 1)})
    info = {"rows": rows, "trainable": trainable, "total": total, "trainable_percent": 100.0 * trainable / max(total, 1)}
    if show:
        table = Table(title=f"{type(model).__name__}: adapters and trainable modules")
        for column, justify in (("adapter", "left"), ("tower", "left"), ("layers", "left"), ("site", "left"), ("params", "right"), ("% of model", "right")):
            table.add_column(column, justify=justify)
        for row in rows:
            table.add_row(row["adapter"], row["tower"], row["layers"], row["site"], f"{row['params']:,}", f"{row['percent']:.2f}")
        table.caption = f"trainable {trainable:,} / total {total:,} ({info['trainable_percent']:.2f}%)"
        (console or Console()).print(table)
    return info
