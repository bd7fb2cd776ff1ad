"""Where each component of a model lives, and which component each counted operator belongs to.

The components have dotted names:

- ``visual.backbone``: the visual tower without its adapters (patch embedding, blocks, ``ln_post``,
  projection);
- ``visual.adapters.<name>``: every injection named ``<name>`` in the visual tower;
- ``text.backbone``, ``text.adapters.<name>``: the same for the text tower, per prompt;
- for a wrapper that holds the CLIP at ``.clip``: ``pooling`` (``.pooling``), ``heads.<name>``
  (``.decoder.heads[<name>]``) and ``other`` (anything else the wrapper runs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch.nn as nn

from clipadapt.analysis.flop_count import FlopCount
from clipadapt.backbones import towers_of
from clipadapt.inject import CONTAINER, injections


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


def _component_order(name: str) -> tuple[int, str]:
    ranks = ("visual.backbone", "visual.adapters", "pooling", "heads", "other", "text.backbone", "text.adapters")
    return next((i for i, prefix in enumerate(ranks) if name.startswith(prefix)), len(ranks)), name
