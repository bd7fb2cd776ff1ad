"""sha256 digests of tensor payloads: what checkpoints and adapter files store to detect a
flipped bit, and what identifies a model's frozen weights.

Example:
    >>> import torch
    >>> from clipadapt.digest import payload_sha256
    >>> payload_sha256({"w": torch.zeros(2)}) == payload_sha256({"w": torch.zeros(2)})
    True
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["payload_sha256", "tensor_digests"]


def _tensor_bytes(tensor: torch.Tensor):
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy() if flat.numel() else b""


def _update(digest, obj) -> None:
    """Feed `obj` (nested dicts, lists, tensors, primitives) into `digest`, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        digest.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        digest.update(_tensor_bytes(obj))
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            digest.update(repr(key).encode())
            _update(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f"L{len(obj)}".encode())
        for item in obj:
            _update(digest, item)
    else:
        digest.update(f"V{obj!r}".encode())


def payload_sha256(obj) -> str:
    """sha256 (hex) of a checkpoint payload: every tensor's dtype, shape and bytes and every value.

    Example:
        >>> payload_sha256({"a": torch.zeros(2)}) == payload_sha256({"a": torch.zeros(2)})
        True
    """
    digest = hashlib.sha256()
    _update(digest, obj)
    return digest.hexdigest()


def tensor_digests(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """A short sha256 (16 hex digits) of each tensor's dtype, shape and bytes.

    Example:
        >>> tensor_digests({"w": torch.zeros(1)})["w"] == tensor_digests({"w": torch.zeros(1)})["w"]
        True
    """
    return {name: payload_sha256(tensor)[:16] for name, tensor in tensors.items()}
