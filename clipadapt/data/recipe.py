"""Datasets as a recipe's ``data`` and ``eval`` sections describe them.

``data.dataset`` names a registered :class:`DatasetSource`: which ``data`` paths it reads and how
one split's videos are found. The built-in ones (``list``, ``k400``, ``ssv2``, ``ucf101``,
``hmdb51``, ``synthetic``) are registered here, as are the training transforms ``data.train_aug``
names (``k400``, ``ssv2``, ``none``). A plugin adds one in one file (see the Recipes page).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from clipadapt.backbones import TinyConfig, spec_of_family
from clipadapt.backbones.preprocess import Preprocess
from clipadapt.data.datasets import (
    Annotations,
    VideoDataset,
    prompt_name,
    read_label_map,
)
from clipadapt.data.layouts import read_hmdb51, read_kinetics400, read_ssv2, read_ucf101
from clipadapt.data.synthetic import generate
from clipadapt.data.transforms import train_transform
from clipadapt.registry import DATASETS, TRANSFORMS, register_dataset, register_transform

SPLITS = ("train", "val", "test")

__all__ = ["DatasetSource", "build_dataset", "recipe_classnames", "recipe_preprocess", "synthetic_root", "Annotations", "SPLITS"]


class DatasetSource:
    """What one ``data.dataset`` name means. Subclass it, say which ``data`` keys it reads, return a
    split's videos from :meth:`read`, and register it with ``@clipadapt.register_dataset(name)``.

    Class attributes:
        paths: ``data`` keys every split reads (``("root",)``); a run refuses to start while one is null.
        split_lists: each split reads ``data.<split>_list`` (``test`` falls back to ``val_list``).
        official_splits: numbered official splits (``data.split``) that ``zeroshot`` runs one by one.
        generated: the data is written by clipadapt itself; ``data.root`` is where it goes.

    Example:
        >>> class Folders(DatasetSource):
        ...     paths = ("root",)
        ...     def read(self, recipe, split):
        ...         ...   # an Annotations of the split's videos
        >>> Folders().required(None, "train")
        ['root']
    """

    paths: tuple[str, ...] = ()
    split_lists: bool = False
    official_splits: tuple[int, ...] = ()
    generated: bool = False

    def required(self, data, split: str) -> list[str]:
        """The ``data`` keys a run of `split` reads (each must be set)."""
        keys = list(self.paths)
        if self.split_lists:
            keys.append(f"{self._list_split(data, split)}_list")
        return keys

    def has_test_split(self, data) -> bool:
        """Whether the test split differs from the validation split."""
        return not self.split_lists or bool(data.test_list)

    def _list_split(self, data, split: str) -> str:
        return "val" if split == "test" and data is not None and not data.test_list else split

    def read(self, recipe, split: str) -> Annotations | tuple[Any, Any, Any]:
        """The videos of `split`: an :class:`Annotations`, or ``(list_file, root, label_map)``
        as :class:`clipadapt.data.datasets.VideoDataset` takes them."""
        raise NotImplementedError(f"{type(self).__name__} must implement read(recipe, split)")

    def classnames(self, recipe) -> list[str] | None:
        """Class names (as prompt words) without reading videos; None when the recipe names none."""
        if recipe.data.label_map:
            return [prompt_name(name) for name in read_label_map(recipe.data.label_map)]
        return None


@register_dataset("list")
class ListFiles(DatasetSource):
    """List files (``path label`` lines, paths relative to ``data.root``) and a label map."""

    split_lists = True

    def read(self, recipe, split):
        data = recipe.data
        return getattr(data, f"{self._list_split(data, split)}_list"), data.root, data.label_map


@register_dataset("k400")
class Kinetics400(DatasetSource):
    """Kinetics-400's official CSV files (``data.<split>_list``) over the videos in ``data.root``."""

    paths = ("root",)
    split_lists = True

    def read(self, recipe, split):
        data = recipe.data
        return read_kinetics400(getattr(data, f"{self._list_split(data, split)}_list"), data.root, data.label_map)


@register_dataset("ssv2")
class SomethingSomethingV2(DatasetSource):
    """Something-Something v2: ``labels.json``, ``train.json``, ``validation.json`` in ``data.annotations``."""

    paths = ("root", "annotations")

    def read(self, recipe, split):
        return read_ssv2(recipe.data.annotations, recipe.data.root, "train" if split == "train" else "validation")


class _OfficialSplits(DatasetSource):
    paths = ("root", "annotations")
    official_splits = (1, 2, 3)
    reader = None

    def read(self, recipe, split):
        subset = "train" if split == "train" else "test"
        return type(self).reader(recipe.data.annotations, recipe.data.root, split=recipe.data.split, subset=subset)


@register_dataset("ucf101")
class UCF101(_OfficialSplits):
    """UCF101's ``ucfTrainTestlist`` folder (``data.annotations``), split ``data.split``."""

    reader = staticmethod(read_ucf101)


@register_dataset("hmdb51")
class HMDB51(_OfficialSplits):
    """HMDB51's ``testTrainMulti_7030_splits`` folder (``data.annotations``), split ``data.split``."""

    reader = staticmethod(read_hmdb51)


CHECKED_CLASS_COUNT = ("k400", "ssv2", "ucf101", "hmdb51", "list")  # datasets whose class count data.num_classes states

def synthetic_root(recipe) -> Path:
    """Where a synthetic recipe's data lives: ``data.root``, or ``<output_dir>/data``."""
    return Path(recipe.data.root) if recipe.data.root else Path(recipe.output_dir) / "data"


@register_dataset("synthetic")
class Synthetic(DatasetSource):
    """The synthetic motion videos of :func:`clipadapt.data.synthetic.generate` (``data.synthetic``
    holds its arguments), written under ``data.root`` or ``<output_dir>/data`` on first use."""

    generated = True

    def has_test_split(self, data) -> bool:
        return True

    def read(self, recipe, split):
        made = generate(synthetic_root(recipe), **recipe.data.synthetic)
        return (made.train_list if split == "train" else made.test_list), made.root, made.label_file

    def classnames(self, recipe):
        from clipadapt.data.synthetic import class_names

        return class_names(recipe.data.synthetic.get("num_classes", 8))


@register_transform("k400")
def k400_train_transform(size: int, interpolation: str = "bilinear"):
    """Scale jitter of the short side, random crop, horizontal flip (Kinetics)."""
    return train_transform("k400", size, interpolation)


@register_transform("ssv2")
def ssv2_train_transform(size: int, interpolation: str = "bilinear"):
    """Random-resized crop and RandAugment, no flip (Something-Something v2)."""
    return train_transform("ssv2", size, interpolation)


@register_transform("none")
def no_train_transform(size: int, interpolation: str = "bilinear"):
    """No augmentation: clips are only resized and normalised, as at test time."""
    return None


def training_transform(name: str, size: int, interpolation: str):
    """The registered training transform `name` at `size`, resizing with `interpolation` where
    it takes one (a plugin's ``(size)`` transform resizes as it does itself)."""
    factory = TRANSFORMS.get(name)
    if "interpolation" in inspect.signature(factory).parameters:
        return factory(size, interpolation=interpolation)
    return factory(size)


def _section(recipe, key: str) -> dict:
    section = recipe[key] if isinstance(recipe, dict) else getattr(recipe, key)
    return section if isinstance(section, dict) else section.to_dict()


def recipe_preprocess(recipe) -> Preprocess:
    """The image preprocessing a recipe's model wants (its family's own config, read without
    building it: `clipadapt.backbones.BackboneSpec.preprocess_for`), with the recipe's
    ``data.size``, ``data.mean``, ``data.std`` and ``data.interpolation`` where set.

    Example:
        >>> recipe_preprocess(load_recipe("quickstart")).describe()   # doctest: +SKIP
        "images 32 px, bicubic, mean (0.4815, 0.4578, 0.4082), std (0.2686, 0.2613, 0.2758) (from CLIP's defaults: ...)"
    """
    model, data = _section(recipe, "model"), _section(recipe, "data")
    tiny = TinyConfig.from_dict(model["config"]) if model.get("config") else None
    found = spec_of_family(model.get("family", "open_clip")).preprocess_for(model.get("arch"), model.get("weights"), tiny)
    resolved = found.overridden(data.get("mean"), data.get("std"), data.get("size"), data.get("interpolation"))
    if resolved.size is None:
        raise ValueError(f"the image size of model {model.get('arch')!r} is unknown ({found.source}); set data.size")
    return resolved


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
    found = DATASETS.get(data.dataset)().read(recipe, split)
    listed, root, label_map = (found, None, None) if isinstance(found, Annotations) else found
    train = split == "train"
    views = recipe.eval.zero_shot if zero_shot else recipe.eval
    sampling = views.sampling if zero_shot else data.sampling
    preprocess = recipe_preprocess(recipe)
    common = dict(
        root=root,
        label_map=label_map,
        num_frames=data.frames,
        sampling="segment" if sampling == "segments" else "dense",
        stride=data.stride if sampling == "dense" else None,
        size=preprocess.size,
        on_error=data.on_error,
        backend=data.backend,
        # the official datasets and lists must agree with data.num_classes (plugin datasets say their own)
        num_classes=data.num_classes if data.dataset in CHECKED_CLASS_COUNT else None,
        seed=recipe.seed,
        train=train,
    )
    if train:
        return VideoDataset(listed, transform=training_transform(data.train_aug, preprocess.size, preprocess.interpolation), **common)
    return VideoDataset(listed, num_clips=views.clips, num_crops=views.crops, interpolation=preprocess.interpolation, **common)


def recipe_classnames(recipe) -> list[str] | None:
    """Class names (as prompt words) from the recipe's label map (or the synthetic generator's
    options) alone, without reading or writing videos; ``None`` when the recipe names none."""
    return DATASETS.get(recipe.data.dataset)().classnames(recipe)
