"""Adapter-only checkpoints: safetensors weights with the injection spec in the file's metadata.

From a bare CLIP the file holds its adapters; from a `clipadapt.VideoCLIP` it holds the adapters,
the pooling adapter and the heads, with the video model's spec (pooling, templates, class names,
heads and their options), so `load_adapters` or ``VideoCLIP.from_adapters(clip, path)`` rebuild
the whole video model on a fresh CLIP of the same architecture.

Adapter sets (`clipadapt.sets`): ``save_adapters(model, path, adapter_set="k400")`` writes one
set; ``load_adapters(model, path, adapter_set="ucf")`` loads a file's one set under a new name,
beside the sets already there. A file keeps the keys its model had (the ``default`` set's are
those files always had) and names each injection's set in its spec; loading under another name
renames the keys after the checksum of the file is verified.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from clipadapt.atomic import atomic_write_bytes
from clipadapt.digest import payload_sha256
from clipadapt.inject import CONTAINER, backbone_fingerprint, freeze_model, inject, injections, is_adapter_param
from clipadapt.sets import DEFAULT_SET, apply_activation, check_set_name, model_states, module_key, set_active, set_names

FORMAT = "clipadapt.adapters/1"
MAX_HEADER_BYTES = 1 << 24  # the safetensors header of an adapter file is a few KB
MAX_ADAPTER_INT = 1 << 16  # widths, ranks, layer counts an injection spec may ask for


class BackboneMismatchError(ValueError):
    """Raised when adapters saved from one backbone are loaded onto another."""


def _set_keys(model: nn.Module, sets) -> set[str]:
    """The ``state_dict`` keys of the adapters of `sets` (all sets for ``None``)."""
    names = {id(module): name for name, module in model.named_modules()}
    return {f"{names[id(module)]}.{key}" for inj in injections(model) if sets is None or inj.adapter_set in sets
            for _, _, module in inj.modules for key in module.state_dict()}


def _saved_tensors(model: nn.Module, sets=None, adapters_only: bool = False) -> dict[str, torch.Tensor]:
    """The adapter tensors of `sets` (all for ``None``) and, unless `adapters_only`, every other
    trainable parameter (heads), by their name in `model`."""
    state = model.state_dict(keep_vars=True)
    trainable = set() if adapters_only else {name for name, p in model.named_parameters() if p.requires_grad and not is_adapter_param(name)}
    adapters = _set_keys(model, sets) if sets is not None else {name for name in state if is_adapter_param(name)}
    return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items() if name in adapters or name in trainable}


def _video_spec(model: nn.Module) -> dict | None:
    """The spec of a video model (one with ``video_spec()``, e.g. `VideoCLIP`), else ``None``."""
    spec = getattr(model, "video_spec", None)
    return spec() if callable(spec) else None


def _backbone(model: nn.Module) -> nn.Module:
    """The CLIP inside a video model (its ``clip``), or `model` itself."""
    return model.clip if _video_spec(model) is not None else model


def save_adapters(model: nn.Module, path: str | os.PathLike, *, recipe: dict | None = None, adapter_set: str | None = None) -> Path:
    """Write the adapters (and other trainable modules such as heads) of `model` to `path`.

    `model` is a CLIP with injections or a `clipadapt.VideoCLIP` (then the pooling adapter, the
    heads and the video model's spec are saved too). The file is safetensors; its metadata holds
    the injection spec and a fingerprint of the backbone, so `load_adapters` can re-create the
    injections and refuse another backbone; `recipe` (a recipe as a dict) is stored beside them,
    which lets `clipadapt.load_trained` rebuild the backbone too. The write is atomic (a
    temporary file renamed into place).

    With `adapter_set` only that set's adapters are written (with the other trainable modules,
    such as a video model's heads); without, every set, and the active sets are recorded when
    a set other than ``default`` is among them.

    Example:
        >>> clipadapt.save_adapters(clip, "ted.safetensors")
        >>> clipadapt.save_adapters(clip, "k400.safetensors", adapter_set="k400")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video = _video_spec(model)
    sets = None
    if adapter_set is not None:
        if adapter_set not in set_names(model_states(model)):
            raise ValueError(f"adapter set {adapter_set!r} is not in this model; its sets are {set_names(model_states(model)) or '(none)'}")
        sets = {adapter_set}
    metadata = {
        "format": FORMAT,
        "injections": json.dumps([inj.spec() for inj in injections(model, adapter_set)]),
        "backbone": json.dumps(backbone_fingerprint(_backbone(model))),
    }
    names, active = set_names(model_states(model)), [name for state in model_states(model) for name in state.active]
    if adapter_set is None and names not in ([], [DEFAULT_SET]):
        metadata["active"] = json.dumps(active)
    if adapter_set in active and active.index(adapter_set) > 0:  # trained on top of other sets: loading needs them
        metadata["stacked_on"] = json.dumps(active[: active.index(adapter_set)])
    if video is not None:
        metadata["video"] = json.dumps(video)
    if recipe is not None:
        metadata["recipe"] = json.dumps(recipe)
    tensors = _saved_tensors(model, sets)
    # safetensors refuses tensors that share memory; keep one name per storage
    seen, unique = set(), {}
    for name, tensor in tensors.items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride())
        if key not in seen:
            seen.add(key)
            unique[name] = tensor
    metadata["sha256"] = payload_sha256(unique)
    # serialised in memory, then written like a checkpoint: a full disk is an OSError naming `path`
    return atomic_write_bytes(safetensors_bytes(unique, metadata=metadata), path)


def read_metadata(path: str | os.PathLike) -> dict:
    """The injection spec and backbone fingerprint stored in an adapter file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file {str(path)!r} does not exist")
    meta = _bounded_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a clipadapt adapter file (metadata format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        spec = {"injections": json.loads(meta["injections"]), "backbone": json.loads(meta["backbone"]), "sha256": meta.get("sha256"),
                "video": json.loads(meta["video"]) if "video" in meta else None,
                "recipe": json.loads(meta["recipe"]) if "recipe" in meta else None,
                "active": json.loads(meta["active"]) if "active" in meta else None,
                "stacked_on": json.loads(meta["stacked_on"]) if "stacked_on" in meta else None}
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path}: the adapter metadata is incomplete or not JSON ({error})") from None
    _check_spec_sizes(spec["injections"], path)
    for key in ("active", "stacked_on"):
        names = spec[key]
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"{path}: the metadata's {key!r} is not a list of adapter set names ({names!r})")
    return spec


def _bounded_metadata(path: Path) -> dict:
    """The safetensors metadata of `path`, refusing a header larger than MAX_HEADER_BYTES or a
    file that is not safetensors, naming the file."""
    import struct

    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8:
        raise ValueError(f"{path} is not a safetensors adapter file (only {len(head)} bytes)")
    (size,) = struct.unpack("<Q", head)
    if size > MAX_HEADER_BYTES or size > path.stat().st_size - 8:
        raise ValueError(f"{path} is not a readable safetensors adapter file (header of {size} bytes; the file has "
                         f"{path.stat().st_size}, accepted at most {MAX_HEADER_BYTES})")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception as error:  # noqa: BLE001  (safetensors raises its own SafetensorError without the file name)
        raise ValueError(f"{path} is not a readable safetensors adapter file ({str(error).strip().splitlines()[0]})") from None


def _check_spec_sizes(specs, path: Path) -> None:
    """Refuse injection specs asking for absurd sizes before anything is allocated."""
    if not isinstance(specs, list):
        raise ValueError(f"{path}: the injection spec is not a list")
    for spec in specs:
        kwargs = spec.get("kwargs") if isinstance(spec, dict) else None
        for key, value in (kwargs or {}).items():
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ADAPTER_INT:
                raise ValueError(f"{path}: adapter {spec.get('name')!r} asks for {key}={value}; accepted: at most {MAX_ADAPTER_INT}")
        layers = spec.get("layers") if isinstance(spec, dict) else None
        if isinstance(layers, list) and len(layers) > MAX_ADAPTER_INT:
            raise ValueError(f"{path}: adapter {spec.get('name')!r} lists {len(layers)} layers; accepted: at most {MAX_ADAPTER_INT}")


def _verified_tensors(path: Path, stored: str | None) -> dict[str, torch.Tensor]:
    """The tensors of `path`, checked against the sha256 in its metadata."""
    try:
        tensors = load_file(str(path))
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable safetensors adapter file ({str(error).strip().splitlines()[0]})") from None
    actual = payload_sha256(tensors)
    if stored != actual:
        what = "records none (written before files carried one)" if stored is None else f"records {stored[:16]}..."
        raise ValueError(f"{path} is corrupt or unverifiable: the sha256 of its tensors is {actual[:16]}..., the file {what}; "
                         "save the adapters again")
    return tensors


def load_adapters(model: nn.Module, path: str | os.PathLike, *, strict: bool = True, adapter_set: str | None = None,
                  trainable: bool = True, adapters_only: bool = False) -> nn.Module:
    """Load adapters saved by `save_adapters` into `model`.

    The file's sets that `model` lacks are re-created first (each activated as `inject` does;
    a file of every set restores the activation it recorded; a set saved active on top of
    others needs those in `model` and is activated on top of them again); on a `clipadapt.VideoCLIP`
    without heads the saved heads are added. Loading onto a backbone whose architecture differs
    from the one saved is refused, and so is a video model's file on a bare CLIP (use
    ``VideoCLIP.from_adapters``, or `adapters_only`).

    Args:
        adapter_set: load the file's one set under this name (renaming it), beside the sets
            already in `model`.
        trainable: ``False`` keeps the loaded sets frozen while active (``freeze(train=...)``).
        adapters_only: take only the adapters of the file, not the heads, pooling or other
            trainable modules it holds (also from a video model's file onto a bare CLIP).

    Example:
        >>> fresh = open_clip.create_model("ViT-B-16")
        >>> clipadapt.load_adapters(fresh, "ted.safetensors")
        >>> clipadapt.load_adapters(fresh, "k400.safetensors", adapter_set="ucf", trainable=False)
    """
    meta = read_metadata(path)
    video, here_video = meta.get("video"), _video_spec(model)
    if video is not None and here_video is None and not adapters_only:
        raise ValueError(f"{path} holds a video model (pooling {video['pooling']!r}, heads "
                         f"{[h['name'] for h in video['heads']]}); load it onto a VideoCLIP, e.g. "
                         "clipadapt.VideoCLIP.from_adapters(clip, path), or its adapters alone with adapters_only=True")
    backbone = _backbone(model)
    saved, here = meta["backbone"], backbone_fingerprint(backbone)
    if saved["id"] != here["id"]:
        raise BackboneMismatchError(
            f"{path} holds adapters for a {saved['family']} backbone with towers "
            f"{_towers_text(saved)}, but this model is {here['family']} with {_towers_text(here)}"
        )
    if video is not None and not adapters_only and here_video["pooling"] != video["pooling"]:
        raise ValueError(f"{path} was saved with pooling {video['pooling']!r}, this VideoCLIP has {here_video['pooling']!r}")
    renames = _set_renames(meta["injections"], adapter_set, path)
    present = set(set_names(model_states(backbone)))
    under = meta.get("stacked_on") or []
    if any(name not in present for name in under):
        raise ValueError(f"{path}: set {next(iter(renames))!r} was saved active on top of the sets {under}, which this model "
                         f"lacks (its sets: {sorted(present) or '(none)'}); load those first under these names")
    created = [name for name in dict.fromkeys(renames.values()) if name not in present]
    for spec in meta["injections"]:
        target = renames[spec.get("adapter_set", DEFAULT_SET)]
        if target in created:
            inject(backbone, spec["name"], tower=spec["tower"], layers=spec["layers"], site=_site_arg(spec["sites"]),
                   adapter_set=target, **spec["kwargs"])
    states = model_states(backbone)
    if meta.get("active") is not None and adapter_set is None:  # a file of every set: its activation
        set_active(states, [name for name in meta["active"] if name in set_names(states)])
    elif under and created:
        set_active(states, [*under, *created])
    for state in states:
        if not trainable:
            state.frozen |= set(renames.values())
        apply_activation(state)
    if video is not None and not meta["injections"] and not adapters_only:
        freeze_model(backbone)  # a linear probe: the CLIP stays frozen as it was trained
    if video is not None and not adapters_only and not here_video["heads"]:
        for head in video["heads"]:
            model.add_head(head["name"], weight=head["weight"], lr_mult=head.get("lr_mult", 1.0), **head["options"])

    tensors = _verified_tensors(Path(path), meta["sha256"])
    tensors = _renamed(tensors, meta["injections"], renames, video is not None, here_video is not None, adapters_only)
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    if unknown:
        raise KeyError(f"{path} has tensors this model lacks: {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else ""))
    if strict:
        expected = set(_saved_tensors(model, set(renames.values()), adapters_only))
        missing = sorted(expected - set(tensors))
        if missing:
            raise KeyError(f"{path} lacks tensors this model's adapters need: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    for name, tensor in tensors.items():
        if state[name].shape != tensor.shape:
            raise BackboneMismatchError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(state[name].shape)}")
    model.load_state_dict(tensors, strict=False)
    return model


def _set_renames(specs: list, adapter_set: str | None, path) -> dict[str, str]:
    """The sets of a file (by their ``adapter_set`` in its specs), each mapped to the name it loads as."""
    names = [check_set_name(spec.get("adapter_set", DEFAULT_SET)) for spec in specs]
    names = list(dict.fromkeys(names)) or [DEFAULT_SET]
    if adapter_set is None:
        return {name: name for name in names}
    check_set_name(adapter_set)
    if len(names) != 1:
        raise ValueError(f"{path} holds the adapter sets {names}; loading under the name {adapter_set!r} needs a file of "
                         "one set (save it with save_adapters(model, path, adapter_set=...))")
    return {names[0]: adapter_set}


def _renamed(tensors: dict, specs: list, renames: dict[str, str], file_video: bool, model_video: bool,
             adapters_only: bool) -> dict[str, torch.Tensor]:
    """The file's tensors under the keys they have in this model: adapter modules of a renamed
    set get its new name, and with `adapters_only` only adapters are kept, with or without the
    video model's ``clip.`` prefix as this model needs."""
    keys = {}
    for spec in specs:
        old = spec.get("adapter_set", DEFAULT_SET)
        for site in spec["sites"]:
            keys[module_key(spec["name"], site, old)] = module_key(spec["name"], site, renames[old])
    result = {}
    for name, tensor in tensors.items():
        if adapters_only and not is_adapter_param(name):
            continue
        parts = name.split(".")
        for i in range(len(parts) - 1):
            if parts[i] == CONTAINER and parts[i + 1] in keys:
                parts[i + 1] = keys[parts[i + 1]]
                break
        if adapters_only and file_video != model_video:
            parts = parts[1:] if file_video else ["clip", *parts]
        result[".".join(parts)] = tensor
    return result


def _site_arg(sites: list):
    if sites == [None]:
        return None
    return sites[0] if len(sites) == 1 else sites


def _towers_text(fp: dict) -> str:
    return ", ".join(f"{name} ({t['blocks']} blocks, width {t['width']}, grid {t['grid']})" for name, t in fp["towers"].items())
