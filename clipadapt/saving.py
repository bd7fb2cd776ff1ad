"""Adapter-only checkpoints: safetensors weights with the injection spec in the file's metadata.

From a bare CLIP the file holds its adapters; from a `clipadapt.VideoCLIP` it holds the adapters,
the pooling adapter and the heads, with the video model's spec (pooling, templates, class names,
heads and their options), so `load_adapters` or ``VideoCLIP.from_adapters(clip, path)`` rebuild
the whole video model on a fresh CLIP of the same architecture.
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
from clipadapt.inject import backbone_fingerprint, freeze_model, inject, injections, is_adapter_param

FORMAT = "clipadapt.adapters/1"
MAX_HEADER_BYTES = 1 << 24  # the safetensors header of an adapter file is a few KB
MAX_ADAPTER_INT = 1 << 16  # widths, ranks, layer counts an injection spec may ask for


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


def _video_spec(model: nn.Module) -> dict | None:
    """The spec of a video model (one with ``video_spec()``, e.g. `VideoCLIP`), else ``None``."""
    spec = getattr(model, "video_spec", None)
    return spec() if callable(spec) else None


def _backbone(model: nn.Module) -> nn.Module:
    """The CLIP inside a video model (its ``clip``), or `model` itself."""
    return model.clip if _video_spec(model) is not None else model


def save_adapters(model: nn.Module, path: str | os.PathLike, *, recipe: dict | None = None) -> Path:
    """Write the adapters (and other trainable modules such as heads) of `model` to `path`.

    `model` is a CLIP with injections or a `clipadapt.VideoCLIP` (then the pooling adapter, the
    heads and the video model's spec are saved too). The file is safetensors; its metadata holds
    the injection spec and a fingerprint of the backbone, so `load_adapters` can re-create the
    injections and refuse another backbone; `recipe` (a recipe as a dict) is stored beside them,
    which lets `clipadapt.load_trained` rebuild the backbone too. The write is atomic (a
    temporary file renamed into place).

    Example:
        >>> clipadapt.save_adapters(clip, "ted.safetensors")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video = _video_spec(model)
    metadata = {
        "format": FORMAT,
        "injections": json.dumps([inj.spec() for inj in injections(model)]),
        "backbone": json.dumps(backbone_fingerprint(_backbone(model))),
    }
    if video is not None:
        metadata["video"] = json.dumps(video)
    if recipe is not None:
        metadata["recipe"] = json.dumps(recipe)
    tensors = _saved_tensors(model)
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
                "recipe": json.loads(meta["recipe"]) if "recipe" in meta else None}
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path}: the adapter metadata is incomplete or not JSON ({error})") from None
    _check_spec_sizes(spec["injections"], path)
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


def load_adapters(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load adapters saved by `save_adapters` into `model`.

    On a model without injections the saved injections are re-created first; on a
    `clipadapt.VideoCLIP` without heads the saved heads are added. Loading onto a backbone whose
    architecture differs from the one saved is refused, and so is a video model's file on a
    bare CLIP (use ``VideoCLIP.from_adapters``).

    Example:
        >>> fresh = open_clip.create_model("ViT-B-16")
        >>> clipadapt.load_adapters(fresh, "ted.safetensors")
    """
    meta = read_metadata(path)
    video, here_video = meta.get("video"), _video_spec(model)
    if video is not None and here_video is None:
        raise ValueError(f"{path} holds a video model (pooling {video['pooling']!r}, heads "
                         f"{[h['name'] for h in video['heads']]}); load it onto a VideoCLIP, e.g. "
                         "clipadapt.VideoCLIP.from_adapters(clip, path)")
    backbone = _backbone(model)
    saved, here = meta["backbone"], backbone_fingerprint(backbone)
    if saved["id"] != here["id"]:
        raise BackboneMismatchError(
            f"{path} holds adapters for a {saved['family']} backbone with towers "
            f"{_towers_text(saved)}, but this model is {here['family']} with {_towers_text(here)}"
        )
    if video is not None and here_video["pooling"] != video["pooling"]:
        raise ValueError(f"{path} was saved with pooling {video['pooling']!r}, this VideoCLIP has {here_video['pooling']!r}")
    if not injections(model):
        for spec in meta["injections"]:
            inject(backbone, spec["name"], tower=spec["tower"], layers=spec["layers"], site=_site_arg(spec["sites"]), **spec["kwargs"])
    if video is not None and not meta["injections"]:
        freeze_model(backbone)  # a linear probe: the CLIP stays frozen as it was trained
    if video is not None and not here_video["heads"]:
        for head in video["heads"]:
            model.add_head(head["name"], weight=head["weight"], lr_mult=head.get("lr_mult", 1.0), **head["options"])

    tensors = _verified_tensors(Path(path), meta["sha256"])
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
