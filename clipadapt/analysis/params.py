"""Parameter summaries: what is injected where, and what trains."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn
from rich.console import Console
from rich.table import Table

from clipadapt.inject import injections, is_adapter_param
from clipadapt.sets import DEFAULT_SET, active_sets, adapter_sets


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

    Trainable parameters outside adapters (heads, pooling, ...) get a row per module. A model
    with named adapter sets gets a ``set`` and an ``active`` column (the position in the
    activation order, ``-`` when inactive) and one line per set under the table.

    Returns:
        ``{"rows": [...], "sets": {name: {"params", "active", "trainable"}}, "trainable": int,
        "total": int, "trainable_percent": float}``; ``active`` is the set's position in the
        activation order (0 first) or ``None``.

    Example:
        >>> info = clipadapt.summary(clip)
        >>> info["trainable"]
        14247936
    """
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = []
    order = {name: i for i, name in enumerate(active_sets(model))}
    sets = {name: {"params": 0, "active": order.get(name), "trainable": 0} for name in adapter_sets(model)}
    for inj in injections(model):
        params = inj.num_params()
        sets[inj.adapter_set]["params"] += params
        sets[inj.adapter_set]["trainable"] += sum(p.numel() for _, _, m in inj.modules for p in m.parameters() if p.requires_grad)
        rows.append(
            {
                "set": inj.adapter_set,
                "active": order.get(inj.adapter_set),
                "adapter": inj.name,
                "tower": inj.tower,
                "layers": compact_layers(inj.layers),
                "site": ",".join(s or "weights" for s in inj.sites),
                "params": params,
                "percent": 100.0 * params / max(total, 1),
            }
        )
    for group, params in _other_trainable(model).items():
        rows.append({"set": "", "active": None, "adapter": group, "tower": "", "layers": "", "site": "", "params": params,
                     "percent": 100.0 * params / max(total, 1)})
    info = {"rows": rows, "sets": sets, "trainable": trainable, "total": total, "trainable_percent": 100.0 * trainable / max(total, 1)}
    if show:
        named = list(sets) not in ([], [DEFAULT_SET])
        table = Table(title=f"{type(model).__name__}: adapters and trainable modules")
        columns = (("set", "left"), ("active", "right")) if named else ()
        for column, justify in (*columns, ("adapter", "left"), ("tower", "left"), ("layers", "left"), ("site", "left"), ("params", "right"), ("% of model", "right")):
            table.add_column(column, justify=justify)
        for row in rows:
            lead = (row["set"], _position(row["active"]) if row["set"] else "") if named else ()
            table.add_row(*lead, row["adapter"], row["tower"], row["layers"], row["site"], f"{row['params']:,}", f"{row['percent']:.2f}")
        caption = [f"trainable {trainable:,} / total {total:,} ({info['trainable_percent']:.2f}%)"]
        if named:
            caption += [f"set {name}: {item['params']:,} params, {'active #' + _position(item['active']) if item['active'] is not None else 'inactive'}"
                        f", {item['trainable']:,} trainable" for name, item in sets.items()]
        table.caption = "\n".join(caption)
        (console or Console()).print(table)
    return info


def _position(active: int | None) -> str:
    return "-" if active is None else str(active + 1)
