"""Training checkpoints: trainable weights, optimiser, schedule, GradScaler, RNG states, progress
and the recipe, written atomically and read back with ``torch.load(weights_only=True)``.

Only tensors and plain containers are stored (the recipe as YAML text), so loading never runs
pickled code. ``output_dir/checkpoints/last.pt`` is the latest state (written at epoch ends and
every ``schedule.checkpoint_every`` optimiser steps); ``best.pt`` the best evaluated one.

Example:
    >>> from clipadapt.engine.checkpoint import find_resume
    >>> find_resume("/tmp/no-such-run") is None
    True
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

__all__ = [
    "CheckpointMismatchError", "atomic_save", "save_checkpoint", "load_checkpoint", "restore_training_state",
    "find_resume", "checkpoint_dir", "get_rng_state", "set_rng_state", "seed_everything", "model_identity",
]

FORMAT = 1
MODEL_KEYS = ("family", "arch", "weights", "config")


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for another model than the recipe builds."""


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    """``output_dir/checkpoints``.

    Example:
        >>> checkpoint_dir("runs/x").as_posix()
        'runs/x/checkpoints'
    """
    return Path(output_dir) / "checkpoints"


def find_resume(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``resume: auto`` continues from: ``output_dir/checkpoints/last.pt`` if present.

    Example:
        >>> find_resume("/tmp/no-such-run") is None
        True
    """
    last = checkpoint_dir(output_dir) / "last.pt"
    return last if last.is_file() else None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows) cannot fsync a folder
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside `path`, flush, fsync, rename over `path`, fsync
    the folder: a crash at any moment leaves either the old file or the new one, never a torn one.

    Example:
        >>> atomic_save({"step": 3}, "/tmp/clipadapt-doc/state.pt").name
        'state.pt'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def get_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and numbers (``weights_only``-safe).

    Example:
        >>> state = get_rng_state(); a = torch.rand(1); set_rng_state(state)
        >>> bool(torch.rand(1) == a)
        True
    """
    version, python_state, gauss = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    state = {
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss,
        "numpy": torch.from_numpy(numpy_keys.astype(np.int64)),
        "numpy_pos": int(numpy_pos),
        "numpy_has_gauss": int(numpy_has_gauss),
        "numpy_gauss": float(numpy_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices).

    Example:
        >>> seed_everything(0); a = torch.rand(1); seed_everything(0)
        >>> bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_identity(recipe: dict) -> dict:
    """The part of a recipe that decides which backbone a checkpoint belongs to.

    Example:
        >>> model_identity({"model": {"family": "open_clip", "arch": "ViT-B-16", "weights": "openai", "config": None}})
        {'family': 'open_clip', 'arch': 'ViT-B-16', 'weights': 'openai', 'config': None}
    """
    model = recipe.get("model") or {}
    return {key: model.get(key) for key in MODEL_KEYS}


def _describe_model(identity: dict) -> str:
    text = f"{identity['family']} {identity['arch']} (weights {identity['weights']})"
    return text + (f" config {identity['config']}" if identity.get("config") else "")


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler=None,
    epoch: int,
    batch: int,
    step: int,
    best: float | None,
    recipe: dict,
    rng: list[dict] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a training state atomically to `path`.

    Args:
        model: provides ``trainable_state_dict()``.
        epoch, batch: the epoch in progress and how many of its batches are consumed
            (``batch == 0``: the epoch has not started).
        step: optimiser steps taken.
        best: the best evaluation metric so far (or None).
        recipe: the recipe as a plain mapping (stored as YAML text).
        rng: RNG states of every rank (default: this process's only).
        extra: more primitive values to store (counts, metric names).

    Example:
        >>> save_checkpoint(folder / "last.pt", model=model, optimizer=opt, scheduler=sched,
        ...                 epoch=1, batch=0, step=40, best=None, recipe=recipe.to_dict())  # doctest: +SKIP
    """
    state = {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng if rng is not None else [get_rng_state()],
        "epoch": int(epoch),
        "batch": int(batch),
        "step": int(step),
        "best": None if best is None else float(best),
        "recipe": yaml.safe_dump(recipe, sort_keys=False),
        "extra": dict(extra or {}),
    }
    return atomic_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`save_checkpoint`, loaded with ``weights_only=True`` on the CPU;
    ``state["recipe"]`` is parsed back into a mapping.

    Example:
        >>> load_checkpoint("runs/x/checkpoints/last.pt")["step"]  # doctest: +SKIP
        400
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} is not a readable clipadapt training checkpoint: it does not load with "
                         "weights_only=True (clipadapt checkpoints hold only tensors and plain values)") from None
    except (RuntimeError, EOFError) as error:  # truncated or corrupt
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a readable clipadapt training checkpoint (truncated or corrupt: {first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a clipadapt training checkpoint (format {FORMAT})")
    state["recipe"] = yaml.safe_load(state["recipe"])
    return state


def restore_training_state(state: dict, *, model, optimizer=None, scheduler=None, scaler=None, recipe: dict | None = None,
                           path: str | os.PathLike = "checkpoint", rank: int = 0) -> None:
    """Load weights, optimiser, schedule, scaler and RNG of `state` (from :func:`load_checkpoint`).

    A checkpoint written for another model (family, arch, weights, config) than `recipe` is refused
    with :class:`CheckpointMismatchError`. Rank ``rank`` takes its own RNG state when the checkpoint
    has one per rank, else rank 0's.

    Example:
        >>> restore_training_state(load_checkpoint(path), model=model, optimizer=opt, scheduler=sched,
        ...                        recipe=recipe.to_dict())  # doctest: +SKIP
    """
    if recipe is not None:
        saved, wanted = model_identity(state["recipe"]), model_identity(recipe)
        if saved != wanted:
            raise CheckpointMismatchError(
                f"checkpoint {path} was trained for model {_describe_model(saved)}, but the recipe builds {_describe_model(wanted)}"
            )
    model.load_trainable_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    set_rng_state(rng[rank] if rank < len(rng) else rng[0])
