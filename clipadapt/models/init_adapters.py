"""Start a model from adapter files: each loaded as a set of the CLIP, frozen by default, with
the model's own sets stacked on top (a recipe's ``model.init_adapters``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch.nn as nn

ENTRY_KEYS = ("path", "adapter_set", "trainable")


def init_adapter_sets(clip: nn.Module, entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Load each entry ``{"path", "adapter_set", "trainable"}`` of `entries` into `clip` as an
    adapter set and return the loaded sets' names.

    Only the adapters of each file are taken (a video model's heads and pooling are not).
    ``adapter_set`` renames the file's one set (default: the name it was saved under);
    ``trainable`` (default ``False``) lets it train. The loaded sets run first, in entry order,
    then the sets that were active: those train on top of frozen task sets.

    Example:
        >>> init_adapter_sets(clip, [{"path": "k400.safetensors", "adapter_set": "k400"}])
        ['k400']
    """
    from clipadapt.saving import load_adapters, read_metadata
    from clipadapt.sets import DEFAULT_SET, active_sets, activate, adapter_sets, check_set_name

    before = active_sets(clip)
    loaded: list[str] = []
    for index, entry in enumerate(entries):
        where = f"model.init_adapters[{index}]"
        if not isinstance(entry, Mapping) or "path" not in entry:
            raise ValueError(f"{where} must be a mapping with a 'path' (and optionally 'adapter_set', 'trainable'), got {entry!r}")
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ValueError(f"{where} has unknown key {unknown[0]!r}; accepted: {', '.join(ENTRY_KEYS)}")
        name = entry.get("adapter_set")
        if name is not None:
            check_set_name(name)
        specs = read_metadata(entry["path"])["injections"]
        names = [name] if name is not None else list(dict.fromkeys(s.get("adapter_set", DEFAULT_SET) for s in specs))
        taken = [n for n in names if n in adapter_sets(clip)]
        if taken:
            raise ValueError(f"{where}: {entry['path']} loads adapter set {taken[0]!r}, which the model already has "
                             f"(its sets: {adapter_sets(clip)}); give the entry another adapter_set")
        load_adapters(clip, entry["path"], adapter_set=name, trainable=bool(entry.get("trainable", False)), adapters_only=True)
        loaded += names
    activate(clip, *loaded, *before)
    return loaded
