"""Models as a recipe describes them: the CLIP of ``model``, the ``adapters``, ``video`` and ``heads``."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from clipadapt.models.m2clip import build_video_clip
from clipadapt.models.video_clip import VideoCLIP

FROZEN_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _section(recipe, key: str):
    return recipe[key] if isinstance(recipe, dict) else getattr(recipe, key)


def _plain(value):
    """Dataclass sections as dicts (recipes may come as `Recipe` objects or plain dicts)."""
    import dataclasses

    if hasattr(value, "model_dump"):  # a clipadapt.config section
        return value.model_dump()
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def build_clip(model_cfg) -> nn.Module:
    """The CLIP a recipe's ``model`` section names, with its weights.

    ``weights: openai`` loads OpenAI's weights into the ``-quickgelu`` variant of the config
    (where the download is allowed); another open_clip pretrained tag or a local checkpoint path
    works too; ``null`` gives random weights. ``config`` builds ``open_clip.CLIP(**config)``
    with random weights (tiny models for tests and the quickstart).

    Example:
        >>> clip = build_clip({"family": "open_clip", "arch": "ViT-B-16", "weights": None})
    """
    import open_clip

    cfg = _plain(model_cfg)
    family, arch, weights = cfg.get("family", "open_clip"), cfg.get("arch", "ViT-B-16"), cfg.get("weights")
    if family != "open_clip":
        raise ValueError(f"model.family {family!r}: recipes build open_clip models; wrap other families "
                         "with clipadapt.models.VideoCLIP in Python (accepted: open_clip)")
    if cfg.get("config"):
        clip = open_clip.CLIP(**cfg["config"])
        if weights:
            _load_weights(clip, weights)
        return clip
    if weights == "openai" and not arch.endswith("-quickgelu"):
        if f"{arch}-quickgelu" in open_clip.list_models():
            arch = f"{arch}-quickgelu"  # OpenAI's weights were trained with QuickGELU
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=1)
        raise ValueError(f"model.arch {arch!r} is not an open_clip config" + (f"; did you mean {close[0]!r}?" if close else ""))
    if weights and Path(str(weights)).suffix and not Path(str(weights)).is_file():
        raise FileNotFoundError(f"model.weights {weights!r} does not exist")
    with quiet_root_logger():  # open_clip warns when it builds random weights, which is what was asked
        return open_clip.create_model(arch, pretrained=weights or None)


@contextlib.contextmanager
def quiet_root_logger(level: int = logging.ERROR):
    """Raise the root logger's level for the duration of the block, then restore it."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, level))
    try:
        yield
    finally:
        root.setLevel(previous)


def _load_weights(clip: nn.Module, path: str) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.weights {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as error:  # noqa: BLE001  (pickle, zip and safetensors errors do not name the file)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"model.weights {str(path)!r} is not a weights file that loads with weights_only=True or "
                         f"safetensors ({first[:120]})") from None
    clip.load_state_dict(state)


def build_from_recipe(recipe, classnames: Sequence[str] | None = None) -> VideoCLIP:
    """The `VideoCLIP` of a recipe (a `clipadapt.config.Recipe` or its ``to_dict()``).

    Without class names (no label map at hand) the recipe's ``data.num_classes`` is used, which
    is enough to count parameters and FLOPs.

    Example:
        >>> model = build_from_recipe(load_recipe("m2clip_k400", ["model.weights=null"]))
    """
    model_cfg = _plain(_section(recipe, "model"))
    video_cfg = _plain(_section(recipe, "video"))
    data_cfg = _plain(_section(recipe, "data"))
    clip = build_clip(model_cfg)
    if model_cfg.get("grad_checkpointing"):
        clip.set_grad_checkpointing(True)
    model = build_video_clip(
        clip,
        classnames,
        adapters=[_plain(a) for a in _section(recipe, "adapters")],
        heads=[_plain(h) for h in _section(recipe, "heads")],
        pooling=video_cfg.get("pooling", "mean"),
        templates=video_cfg.get("templates") or ["a video of {}"],
        num_classes=data_cfg.get("num_classes"),
    )
    unfreeze(model, model_cfg.get("trainable") or [])
    frozen = model_cfg.get("precision_frozen")
    if frozen:
        for param in model.parameters():
            if not param.requires_grad:
                param.data = param.data.to(FROZEN_DTYPES[frozen])
    return model


def unfreeze(model: nn.Module, patterns: Sequence[str]) -> None:
    """Make parameters whose names match any glob in `patterns` trainable; a pattern matching
    nothing is an error."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        matched = fnmatch.filter(names, pattern)
        if not matched:
            raise ValueError(f"model.trainable pattern {pattern!r} matches no parameter (e.g. {names[0]!r})")
        params = dict(model.named_parameters())
        for name in matched:
            params[name].requires_grad_(True)
