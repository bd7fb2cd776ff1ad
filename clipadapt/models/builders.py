"""Models as a recipe describes them: the CLIP of ``model``, the ``adapters``, ``video`` and ``heads``."""

from __future__ import annotations

import fnmatch
from typing import Sequence

import torch
import torch.nn as nn

from clipadapt.backbones import TinyConfig, spec_of_family
from clipadapt.data.recipe import recipe_preprocess
from clipadapt.backbones.open_clip import quiet_root_logger  # noqa: F401  (kept importable from here)
from clipadapt.models.m2clip import build_video_clip
from clipadapt.models.video_clip import VideoCLIP

FROZEN_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _section(recipe, key: str):
    return recipe[key] if isinstance(recipe, dict) else getattr(recipe, key)


def _plain(value):
    """Dataclass sections as dicts (recipes may come as `Recipe` objects or plain dicts)."""
    import dataclasses

    if hasattr(value, "model_dump"):  # a clipadapt.recipes section
        return value.model_dump()
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def build_clip(model_cfg) -> nn.Module:
    """The CLIP a recipe's ``model`` section names, built by its family's backbone spec.

    ``family`` picks the spec (``clipadapt ls backbones``); ``arch`` and ``weights`` name the
    model as that family does (``weights: openai`` on open_clip loads OpenAI's weights into the
    ``-quickgelu`` variant; a local file works everywhere; ``null`` gives random weights).
    ``config`` is a family-neutral tiny model (`clipadapt.backbones.TinyConfig`: ``embed_dim``,
    ``width``, ``layers``, ``heads``, ``patch_size``, ``image_size``, ``text_width``, ...) that
    each family turns into its own config, with random weights.

    Example:
        >>> clip = build_clip({"family": "hf", "config": {"embed_dim": 64, "width": 64, "layers": 2}})
    """
    cfg = _plain(model_cfg)
    family = cfg.get("family", "open_clip")
    spec = spec_of_family(family)
    tiny = TinyConfig.from_dict(cfg["config"]) if cfg.get("config") else None
    return spec.build(cfg.get("arch"), cfg.get("weights"), tiny)


def recipe_clip(recipe) -> nn.Module:
    """The CLIP of a recipe's ``model`` section (`build_clip`), random weights drawn from the
    recipe's ``seed`` without touching the global RNG: a trained model rebuilt from its
    checkpoint (which holds only the trainable weights) and the frozen baseline of the same
    recipe get the same frozen CLIP.

    Example:
        >>> torch.equal(*(recipe_clip(load_recipe("quickstart")).logit_scale for _ in range(2)))
        True
    """
    seed = recipe.get("seed", 0) if isinstance(recipe, dict) else getattr(recipe, "seed", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_clip(_plain(_section(recipe, "model")))


def build_from_recipe(recipe, classnames: Sequence[str] | None = None) -> VideoCLIP:
    """The `VideoCLIP` of a recipe (a `clipadapt.recipes.Recipe` or its ``to_dict()``).

    Without class names (no label map at hand) the recipe's ``data.num_classes`` is used, which
    is enough to count parameters and FLOPs.

    Example:
        >>> model = build_from_recipe(load_recipe("m2clip_k400", ["model.weights=null"]))
    """
    model_cfg = _plain(_section(recipe, "model"))
    video_cfg = _plain(_section(recipe, "video"))
    data_cfg = _plain(_section(recipe, "data"))
    clip = recipe_clip(recipe)
    if model_cfg.get("grad_checkpointing"):
        spec_of_family(model_cfg.get("family", "open_clip")).set_grad_checkpointing(clip)
    model = build_video_clip(
        clip,
        classnames,
        adapters=[_plain(a) for a in _section(recipe, "adapters")],
        heads=[_plain(h) for h in _section(recipe, "heads")],
        pooling=video_cfg.get("pooling", "mean"),
        templates=video_cfg.get("templates") or ["a video of {}"],
        num_classes=data_cfg.get("num_classes"),
        tokenizer=model_cfg.get("tokenizer"),
    )
    model.preprocess = recipe_preprocess(recipe)
    if model_cfg.get("init_adapters"):
        model.init_adapters([_plain(entry) for entry in model_cfg["init_adapters"]])
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
