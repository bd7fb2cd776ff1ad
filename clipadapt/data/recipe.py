"""Datasets as a recipe's ``data`` and ``eval`` sections describe them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipadapt.data.datasets import (
    Annotations,
    VideoDataset,
    read_hmdb51,
    read_kinetics400,
    read_label_map,
    read_ssv2,
    read_ucf101,
)
from clipadapt.data.synthetic import generate
from clipadapt.data.transforms import train_transform

SPLITS = ("train", "val", "test")


def synthetic_root(recipe) -> Path:
    """Where a synthetic recipe's data lives: ``data.root``, or ``<output_dir>/data``."""
    return Path(recipe.data.root) if recipe.data.root else Path(recipe.output_dir) / "data"


def _annotations(recipe, split: str) -> tuple[Any, Any, Any]:
    """(list file or Annotations, root, label map) of one split."""
    data = recipe.data
    if data.dataset == "synthetic":
        made = generate(synthetic_root(recipe), **data.synthetic)
        listed = made.train_list if split == "train" else made.test_list
        return listed, made.root, made.label_file
    if data.dataset == "list":
        return getattr(data, f"{split}_list"), data.root, data.label_map
    if data.dataset == "k400":
        return read_kinetics400(getattr(data, f"{split}_list"), data.root, data.label_map), None, None
    if data.dataset == "ssv2":
        return read_ssv2(data.annotations, data.root, "train" if split == "train" else "validation"), None, None
    reader = read_ucf101 if data.dataset == "ucf101" else read_hmdb51
    return reader(data.annotations, data.root, split=data.split, subset="train" if split == "train" else "test"), None, None


def build_dataset(recipe, split: str, *, zero_shot: bool = False) -> VideoDataset:
    """The dataset of `split` (``train``, ``val`` or ``test``) with the recipe's sampling and views.

    Training draws one augmented clip; ``val`` and ``test`` yield ``eval.clips × eval.crops``
    views (``eval.zero_shot``'s with `zero_shot`). A missing ``test_list`` falls back to ``val``.

    Example:
        >>> train = build_dataset(load_recipe("quickstart"), "train")   # doctest: +SKIP
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    data = recipe.data
    if split == "test" and data.dataset in ("list", "k400") and not data.test_list:
        split = "val"
    listed, root, label_map = _annotations(recipe, split)
    train = split == "train"
    views = recipe.eval.zero_shot if zero_shot else recipe.eval
    sampling = (views.sampling if zero_shot else data.sampling)
    common = dict(
        root=root,
        label_map=label_map,
        num_frames=data.frames,
        sampling="segment" if sampling == "segments" else "dense",
        stride=data.stride if sampling == "dense" else None,
        size=data.size,
        on_error=data.on_error,
        backend=data.backend,
        # a list with its own label map defines its classes; elsewhere data.num_classes must agree
        num_classes=None if data.dataset == "synthetic" or (data.dataset == "list" and data.label_map) else data.num_classes,
        seed=recipe.seed,
        train=train,
    )
    if train:
        transform = None if data.train_aug == "none" else train_transform(data.train_aug, data.size)
        return VideoDataset(listed, transform=transform, **common)
    return VideoDataset(listed, num_clips=views.clips, num_crops=views.crops, **common)


def recipe_classnames(recipe) -> list[str] | None:
    """Class names (as prompt words) from the recipe's label map (or the synthetic generator's
    options) alone, without reading or writing videos; ``None`` when the recipe names none."""
    if recipe.data.dataset == "synthetic":
        from clipadapt.data.synthetic import class_names

        return class_names(recipe.data.synthetic.get("num_classes", 8))
    if recipe.data.label_map:
        from clipadapt.data.datasets import prompt_name

        return [prompt_name(name) for name in read_label_map(recipe.data.label_map)]
    return None


__all__ = ["build_dataset", "recipe_classnames", "synthetic_root", "Annotations"]
