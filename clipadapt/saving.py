"""Adapter-only checkpoints: safetensors weights with the injection spec in the file's metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from clipadapt.inject import backbone_fingerprint, inject, injections, is_adapter_param

FORMAT = "clipadapt.adapters/1"


class BackboneMismatchError(ValueError):
    """Raised when adapters saved from one backbone are loaded onto another."""


def _saved_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter tensors and every other trainable parameter (heads), by their name in `model`."""
    state = model.state_dict(keep_vars=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in state.items()
        if is_adapter_param(name) or name in trainable
    }


def save_adapters(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapters (and other trainable modules such as heads) of `model` to `path`.

    The file is safetensors; its metadata holds the injection spec and a fingerprint of the
    backbone, so `load_adapters` can re-create the injections and refuse another backbone.
    The write is atomic (a temporary file renamed into place).

    Example:
        >>> clipadapt.save_adapters(clip, "ted.safetensors")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "injections": json.dumps([inj.spec() for inj in injections(model)]),
        "backbone": json.dumps(backbone_fingerprint(model)),
    }
    tensors = _saved_tensors(model)
    # safetensors refuses tensors that share memory; keep one name per storage
    seen, unique = set(), {}
    for name, tensor in tensors.items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride())
        if key not in seen:
            seen.add(key)
            unique[name] = tensor
    tmp = path.with_name(path.name + ".tmp")
    save_file(unique, str(tmp), metadata=metadata)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The injection spec and backbone fingerprint stored in an adapter file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file {str(path)!r} does not exist")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a clipadapt adapter file (metadata format {meta.get('format')!r}, expected {FORMAT!r})")
    return {"injections": json.loads(meta["injections"]), "backbone": json.loads(meta["backbone"])}


def load_adapters(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load adapters saved by `save_adapters` into `model`.

    On a model without injections the saved injections are re-created first. Loading onto a
    backbone whose architecture differs from the one saved is refused.

    Example:
        >>> fresh = open_clip.create_model("ViT-B-16")
        >>> clipadapt.load_adapters(fresh, "ted.safetensors")
    """
    meta = read_metadata(path)
    saved, here = meta["backbone"], backbone_fingerprint(model)
    if saved["id"] != here["id"]:
        raise BackboneMismatchError(
            f"{path} holds adapters for a {saved['family']} backbone with towers "
            f"{_towers_text(saved)}, but this model is {here['family']} with {_towers_text(here)}"
        )
    if not injections(model):
        for spec in meta["injections"]:
            inject(model, spec["name"], tower=spec["tower"], layers=spec["layers"], site=_site_arg(spec["sites"]), **spec["kwargs"])

    tensors = load_file(str(path))
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    if unknown:
        raise KeyError(f"{path} has tensors this model lacks: {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else ""))
    if strict:
        expected = set(_saved_tensors(model))
        missing = sorted(expected - set(tensors))
        if missing:
            raise KeyError(f"{path} lacks tensors this model's adapters need: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    for name, tensor in tensors.items():
        if state[name].shape != tensor.shape:
            raise BackboneMismatchError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(state[name].shape)}")
    model.load_state_dict(tensors, strict=False)
    return model


def _site_arg(sites: list):
    if sites == [None]:
        return None
    return sites[0] if len(sites) == 1 else sites


def _towers_text(fp: dict) -> str:
    return ", ".join(f"{name} ({t['blocks']} blocks, width {t['width']}, grid {t['grid']})" for name, t in fp["towers"].items())
