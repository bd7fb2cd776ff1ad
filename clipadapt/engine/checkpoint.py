"""Training checkpoints: trainable weights, optimiser, schedule, GradScaler, RNG states, progress
and the recipe, written atomically and read back with ``torch.load(weights_only=True)``.

Only tensors and plain containers are stored (the recipe as YAML text), so loading never runs
pickled code. ``output_dir/checkpoints/last.pt`` is the latest state (written at epoch ends and
every ``schedule.checkpoint_every`` optimiser steps); ``best.pt`` the best evaluated one.

A checkpoint identifies its model completely: the recipe, the seed, the library version and a
sha256 of every frozen tensor (for a random ``weights: null`` backbone the frozen tensors
themselves), so a loader rebuilds exactly the trained model or says what differs. A sha256 of
the whole payload is checked on every load, and only finite states are written.

Atomic writes (`clipadapt.atomic`), random state (`clipadapt.engine.seeding`) and the
output folder lock (`clipadapt.engine.run_lock`) have modules of their own; their names are
importable from here too.

Example:
    >>> from clipadapt.engine.checkpoint import find_resume
    >>> find_resume("/tmp/no-such-run") is None
    True
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
import yaml

from clipadapt.digest import payload_sha256, tensor_digests
from clipadapt.atomic import atomic_save, remove_orphan_tmp_files
from clipadapt.engine.run_lock import OutputDirLockedError, output_dir_lock
from clipadapt.engine.seeding import get_rng_state, seed_everything, set_rng_state
from clipadapt.recipes.checks import estimate_parameters
from clipadapt.recipes.files import RecipeError, load_yaml

__all__ = [
    "CheckpointMismatchError", "CorruptCheckpointError", "NonFiniteStateError", "OutputDirLockedError",
    "atomic_save", "save_checkpoint", "load_checkpoint", "restore_training_state", "find_resume", "checkpoint_dir",
    "get_rng_state", "set_rng_state", "seed_everything", "model_identity", "frozen_state", "tensor_digests",
    "payload_sha256", "verify_frozen", "check_finite_model", "check_recipe_shapes",
    "model_record", "load_frozen", "recipe_diff", "remove_orphan_tmp_files", "output_dir_lock",
]

FORMAT = 2
MODEL_KEYS = ("family", "arch", "weights", "config")
MAX_RECIPE_BYTES = 1 << 20  # a stored recipe is a few KB of YAML
MAX_MODEL_PARAMETERS = 5_000_000_000  # ViT-bigG has 2.5e9; more is not a CLIP anyone trains here
MAX_OPTION_INT = 1 << 16  # adapter/head widths, ranks, layer counts in a stored recipe
# what a resumed run may not change without --allow-recipe-change: it shapes the model or the
# optimisation state (schedule.epochs and checkpoint_every may change; data location, workers,
# logging and evaluation settings too)
SHAPING_KEYS = ("model", "adapters", "video", "heads", "optim", "schedule", "seed", "precision",
                "data.batch_size", "data.accumulate")
FREE_KEYS = ("schedule.epochs", "schedule.checkpoint_every", "model.grad_checkpointing")


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for another model or recipe than the one asked for."""


class CorruptCheckpointError(ValueError):
    """A checkpoint's payload does not match the sha256 stored with it."""


class NonFiniteStateError(RuntimeError):
    """The weights or optimiser state hold NaN or inf; nothing was written."""


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


# -- what identifies a model -------------------------------------------------------------------


def frozen_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of `model` that training does not change: ``state_dict()`` less ``trainable_state_dict()``.

    Example:
        >>> sorted(frozen_state(model))[:1]  # doctest: +SKIP
        ['clip.positional_embedding']
    """
    trainable = set(model.trainable_state_dict())
    return {name: tensor for name, tensor in model.state_dict().items() if name not in trainable}


def verify_frozen(saved: dict[str, str], model: torch.nn.Module, path: str | os.PathLike, what: str) -> None:
    """Refuse a `model` whose frozen tensors differ from the digests a checkpoint stored.

    Raises:
        CheckpointMismatchError: naming how many tensors differ, the first few, and `what` built them.
    """
    here = tensor_digests(frozen_state(model))
    missing, extra = sorted(set(saved) - set(here)), sorted(set(here) - set(saved))
    differ = sorted(name for name in set(saved) & set(here) if saved[name] != here[name])
    if not (missing or extra or differ):
        return
    parts = []
    if differ:
        parts.append(f"{len(differ)} of {len(saved)} frozen tensors differ ({', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''})")
    if missing:
        parts.append(f"{len(missing)} frozen tensors are missing ({', '.join(missing[:3])})")
    if extra:
        parts.append(f"{len(extra)} frozen tensors are new ({', '.join(extra[:3])})")
    raise CheckpointMismatchError(f"{path} was trained on other frozen backbone weights than {what} gives: {'; '.join(parts)}")


def check_finite_model(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Raise :class:`NonFiniteStateError` when a trainable tensor or an optimiser state holds NaN or inf.

    Example:
        >>> check_finite_model(model, optimizer)  # doctest: +SKIP
    """
    _check_finite({"model": model.trainable_state_dict(), "optimizer": optimizer.state_dict() if optimizer else {}})


def _check_finite(state: dict) -> None:
    bad = [name for name, tensor in state["model"].items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    for index, values in state["optimizer"].get("state", {}).items():
        bad += [f"optimizer state {index}.{key}" for key, value in values.items()
                if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise NonFiniteStateError(f"{len(bad)} tensor(s) hold NaN or inf ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})")


def model_identity(recipe: dict) -> dict:
    """The part of a recipe that decides which backbone a checkpoint belongs to.

    Example:
        >>> model_identity({"model": {"family": "open_clip", "arch": "ViT-B-16", "weights": "openai", "config": None}})
        {'family': 'open_clip', 'arch': 'ViT-B-16', 'weights': 'openai', 'config': None}
    """
    model = recipe.get("model") or {}
    return {key: model.get(key) for key in MODEL_KEYS}


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _pick(recipe: dict, key: str):
    value = recipe
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def recipe_diff(saved: dict, wanted: dict, keys: tuple[str, ...] = SHAPING_KEYS, free: tuple[str, ...] = FREE_KEYS) -> list[str]:
    """``["optim.lr: 0.01 -> 0.02", ...]``: the settings under `keys` (less `free`) that differ.

    Example:
        >>> recipe_diff({"optim": {"lr": 0.01}, "seed": 0}, {"optim": {"lr": 0.02}, "seed": 0})
        ['optim.lr: 0.01 -> 0.02']
    """
    changes = []
    for key in keys:
        old, new = _flatten(_pick(saved, key), key), _flatten(_pick(wanted, key), key)
        for name in sorted(set(old) | set(new)):
            if any(name == f or name.startswith(f + ".") for f in free):
                continue
            if old.get(name) != new.get(name):
                changes.append(f"{name}: {json.dumps(old.get(name))} -> {json.dumps(new.get(name))}")
    return changes


def _describe_model(identity: dict) -> str:
    text = f"{identity['family']} {identity['arch']} (weights {identity['weights']})"
    return text + (f" config {identity['config']}" if identity.get("config") else "")


def model_record(model: torch.nn.Module, recipe: dict) -> dict:
    """What a checkpoint stores to identify `model`: seed, library version, a digest of each frozen
    tensor and, for a random ``model.weights: null`` backbone, the frozen tensors themselves.

    Compute it once per run (the frozen tensors do not change) and pass it to :func:`save_checkpoint`.

    Example:
        >>> record = model_record(model, recipe.to_dict())  # doctest: +SKIP
        >>> sorted(record)  # doctest: +SKIP
        ['frozen', 'frozen_digests', 'seed', 'version']
    """
    from clipadapt import __version__

    frozen = frozen_state(model)
    record = {"seed": recipe.get("seed"), "version": __version__, "frozen_digests": tensor_digests(frozen)}
    if (recipe.get("model") or {}).get("weights") is None:  # random weights: keep them, they are the model
        record["frozen"] = {name: tensor.detach().cpu().clone() for name, tensor in frozen.items()}
    return record


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
    record: dict | None = None,
) -> Path:
    """Write a training state atomically to `path`, with a sha256 of its payload.

    Args:
        model: provides ``trainable_state_dict()``.
        epoch, batch: the epoch in progress and how many of its batches are consumed
            (``batch == 0``: the epoch has not started).
        step: optimiser steps taken.
        best: the best evaluation metric so far (or None).
        recipe: the recipe as a plain mapping (stored as YAML text).
        rng: RNG states of every rank (default: this process's only).
        extra: more primitive values to store (counts, metric names).
        record: :func:`model_record` of `model` (computed here when not given).

    Raises:
        NonFiniteStateError: a weight or optimiser tensor holds NaN or inf (nothing is written).

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
        "identity": record if record is not None else model_record(model, recipe),
    }
    _check_finite(state)
    state["sha256"] = payload_sha256(state)
    return atomic_save(state, path)


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_recipe_shapes(recipe: dict, source: str) -> None:
    """Refuse a stored recipe that asks for absurd shapes, before anything is allocated.

    Bounds: a ``model.config`` (the family-neutral sizes or open_clip's form) of at most 5e9 parameters; integer options of
    adapters and heads, ``data.frames`` and ``data.size`` at most 65536.

    Example:
        >>> check_recipe_shapes({"model": {"config": {"vision_cfg": {"width": 2**20, "layers": 12}}}}, "ckpt.pt")
        Traceback (most recent call last):
        ...
        ValueError: ckpt.pt: model.config asks for about 158329674399744 parameters; accepted: at most 5000000000
    """
    if not isinstance(recipe, dict):
        raise ValueError(f"{source}: the stored recipe is not a mapping (got {type(recipe).__name__})")
    config = (recipe.get("model") or {}).get("config")
    if isinstance(config, dict):
        count = int(estimate_parameters(config))  # the same estimate as recipe validation, any family's form
        if count > MAX_MODEL_PARAMETERS:
            raise ValueError(f"{source}: model.config asks for about {count} parameters; accepted: at most {MAX_MODEL_PARAMETERS}")
    for section in ("adapters", "heads"):
        for index, item in enumerate(recipe.get(section) or []):
            options = item.get("options") if isinstance(item, dict) else None
            for key, value in _flatten(options if isinstance(options, dict) else {}).items():
                if _count(value) > MAX_OPTION_INT:
                    raise ValueError(f"{source}: {section}[{index}].options.{key} is {value}; accepted: at most {MAX_OPTION_INT}")
    for key in ("frames", "size"):
        value = (recipe.get("data") or {}).get(key)
        if _count(value) > MAX_OPTION_INT:
            raise ValueError(f"{source}: data.{key} is {value}; accepted: at most {MAX_OPTION_INT}")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`save_checkpoint`, loaded with ``weights_only=True`` on the CPU;
    its payload sha256 is checked and ``state["recipe"]`` is parsed back into a mapping (bounded:
    size, YAML without tags, shapes within :func:`check_recipe_shapes`).

    Example:
        >>> load_checkpoint("runs/x/checkpoints/last.pt")["step"]  # doctest: +SKIP
        400
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} is not a readable clipadapt training checkpoint: it does not load with "
                         "weights_only=True (clipadapt checkpoints hold only tensors and plain values)") from None
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001  (truncated, corrupt, or another format: safetensors' own error names no file)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a readable clipadapt training checkpoint (truncated or corrupt: {first})") from None
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} is not a clipadapt training checkpoint (format {FORMAT})")
    if state["format"] != FORMAT:
        raise ValueError(f"{path} is a clipadapt training checkpoint of format {state['format']!r}; this version reads "
                         f"format {FORMAT} (checkpoints that identify their frozen weights); retrain or use the version that wrote it")
    stored = state.pop("sha256", None)
    actual = payload_sha256(state)
    if stored != actual:
        raise CorruptCheckpointError(f"{path} is corrupt: the sha256 of its payload is {actual[:16]}..., the file records "
                                     f"{str(stored)[:16]}... (a flipped bit or a partial copy); use another checkpoint")
    state["recipe"] = _parse_stored_recipe(state["recipe"], path)
    return state


def _parse_stored_recipe(text, path: Path) -> dict:
    if not isinstance(text, str) or len(text.encode()) > MAX_RECIPE_BYTES:
        raise ValueError(f"{path}: the stored recipe is not YAML text of at most {MAX_RECIPE_BYTES} bytes")
    try:
        recipe = load_yaml(text, source=f"{path}: the stored recipe")
    except RecipeError as error:  # not YAML, a tag, or an alias bomb: refused before anything is built
        reason = error.errors[0].message.removeprefix("not a recipe: ")
        raise ValueError(f"{path}: the stored recipe is not plain YAML ({reason}); clipadapt writes recipes "
                         "without tags or aliases") from None
    check_recipe_shapes(recipe, str(path))
    return recipe


def load_frozen(state: dict, model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Put the frozen tensors a checkpoint stored (random ``weights: null`` backbones) into `model`,
    then check every frozen tensor of `model` against the checkpoint's digests.

    Raises:
        CheckpointMismatchError: the rebuilt model's frozen tensors are not those trained on.
    """
    identity = state["identity"]
    frozen = identity.get("frozen")
    if frozen is not None:
        here = frozen_state(model)
        if set(frozen) == set(here) and all(frozen[k].shape == here[k].shape for k in here):
            with torch.no_grad():
                for name, tensor in here.items():
                    tensor.copy_(frozen[name])
    weights = (state["recipe"].get("model") or {}).get("weights")
    verify_frozen(identity["frozen_digests"], model, path, f"the recipe's model (weights {weights!r})")


def restore_training_state(state: dict, *, model, optimizer=None, scheduler=None, scaler=None, recipe: dict | None = None,
                           path: str | os.PathLike = "checkpoint", rank: int = 0, allow_recipe_change: bool = False) -> None:
    """Load frozen and trainable weights, optimiser, schedule, scaler and RNG of `state` (from
    :func:`load_checkpoint`).

    A checkpoint written for another model (family, arch, weights, config) than `recipe` is refused
    with :class:`CheckpointMismatchError`, and so is one whose recipe differs in what shapes the
    model or the optimisation state (:func:`recipe_diff`) unless `allow_recipe_change`; then the
    recipe's optimiser settings (lr, weight decay, betas, eps) and schedule replace the stored ones.
    Rank ``rank`` takes its own RNG state when the checkpoint has one per rank, else rank 0's.

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
        changes = recipe_diff(state["recipe"], recipe)
        if changes and not allow_recipe_change:
            raise CheckpointMismatchError(
                f"cannot resume from {path}: the recipe differs from the checkpoint's in what shapes the model or the "
                f"optimisation state: {'; '.join(changes)} (restore those values, use another output_dir, or pass "
                "--allow-recipe-change)"
            )
    load_frozen(state, model, path)
    try:
        model.load_trainable_state_dict(state["model"])
    except (RuntimeError, KeyError) as error:
        first = (error.args[0] if error.args else str(error)).strip().splitlines()
        raise CheckpointMismatchError(f"cannot resume from {path}: its trainable tensors do not fit this recipe's model "
                                      f"({' '.join(line.strip() for line in first[:2])})") from None
    fresh = None
    if optimizer is not None:
        fresh = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        lambdas = [dict(vars(f)) for f in getattr(scheduler, "lr_lambdas", [])]
        scheduler.load_state_dict(state["scheduler"])
        for function, values in zip(getattr(scheduler, "lr_lambdas", []), lambdas):
            vars(function).update(values)  # the recipe's schedule (epochs may change)
        if fresh is not None and optimizer is not None:
            _apply_hyperparameters(optimizer, scheduler, fresh)
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    set_rng_state(rng[rank] if rank < len(rng) else rng[0])


def _apply_hyperparameters(optimizer, scheduler, fresh: list[dict]) -> None:
    """Give the restored optimiser the recipe's settings; its lr the schedule's value at this step."""
    changed = False
    for group, new in zip(optimizer.param_groups, fresh):
        for key in ("initial_lr", "weight_decay", "betas", "eps"):
            if key in new and group.get(key) != new[key]:
                group[key], changed = new[key], True
    base = [group["initial_lr"] for group in optimizer.param_groups] if "initial_lr" in optimizer.param_groups[0] else None
    if base is not None and list(scheduler.base_lrs) != base:
        scheduler.base_lrs, changed = base, True
    factors = [function(scheduler.last_epoch) for function in getattr(scheduler, "lr_lambdas", [])]
    expected = [b * f for b, f in zip(scheduler.base_lrs, factors)]
    if changed or any(group["lr"] != lr for group, lr in zip(optimizer.param_groups, expected)):
        for group, lr in zip(optimizer.param_groups, expected):
            group["lr"] = lr
        scheduler._last_lr = expected
