"""Hugging Face model configs by name, offline: for the ``hf`` family and for open_clip configs
whose text tower is a Hugging Face model (``text_cfg.hf_model_name``: RoBERTa, XLM-R, mT5, NLLB).

A name is a local directory holding ``config.json`` (read as is, no network) or a Hub id. With
``HF_HUB_OFFLINE=1`` a Hub id must already be in the Hugging Face cache; otherwise the build is
refused in one line naming the model and what to provide, instead of ``transformers``' long
connection error.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from clipadapt.backbones.preprocess import Preprocess, from_hf_image_processor, from_hf_processor


def _offline() -> bool:
    import huggingface_hub

    return huggingface_hub.is_offline_mode()


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1


def config_source(name: str, key: str) -> str:
    """`name` as ``from_pretrained`` takes it, checked: a local directory must hold ``config.json``;
    offline, a Hub id must be in the cache. `key` names the setting it came from, for the error.

    Example:
        >>> config_source("google/siglip-base-patch16-224", "model.arch")   # offline and not cached: ValueError
    """
    if _looks_local(name):
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{key} {name!r} is not a directory holding a Hugging Face config.json")
        return str(folder)
    if _offline() and not _cached(name):
        raise ValueError(
            f"{key} {name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE=1: download it where the network "
            f"allows (`hf download {name}`; config.json alone for random weights) or give a local directory holding "
            "its config.json"
        )
    return name


def hf_preprocess(name: str | None, model_type: str, size: int | None) -> Preprocess:
    """How the Hugging Face model `name` (a local directory or a Hub id, read from the cache offline)
    wants its images: its ``preprocessor_config.json``, or where it has none (a random-weight model
    built from a config, a cache holding config.json alone) the defaults of the image processor
    ``transformers`` pairs with its `model_type`. `size`: the model's own side, where known.

    Example:
        >>> hf_preprocess("/models/siglip-base", "siglip", 224).mean
        (0.5, 0.5, 0.5)
    """
    file = None
    if name and _looks_local(name):
        candidate = Path(name).expanduser() / "preprocessor_config.json"
        file = str(candidate) if candidate.is_file() else None
    elif name:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "preprocessor_config.json")
        file = found if isinstance(found, str) else None
    if file is None:
        return from_hf_image_processor(model_type, size)
    found = from_hf_processor(json.loads(Path(file).read_text()), size, file)
    return replace(found, size=size or found.size)


def hf_config(name: str, key: str):
    """The ``transformers`` config of `name` (see `config_source`), read without the network when offline.

    Example:
        >>> hf_config("/models/siglip-base", "model.arch").model_type
        'siglip'
    """
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(config_source(name, key))


def open_clip_text_kwargs(arch: str, weights: str | None) -> dict:
    """Keyword arguments of ``open_clip.create_model(arch, ...)`` for an open_clip config whose text
    tower is a Hugging Face model (``text_cfg.hf_model_name``); ``{}`` for any other config.

    open_clip's ``HFTextEncoder`` reads the text model's config with ``AutoConfig.from_pretrained``
    and, unless a CLIP checkpoint is loaded, its weights with ``AutoModel.from_pretrained``. Here
    the config must be at hand (`config_source`: a local directory or the cache); with `weights`
    ``None`` (random weights, as everywhere in clipadapt) the text model is built from its config,
    so nothing else is read.

    Example:
        >>> open_clip.create_model("roberta-ViT-B-32", **open_clip_text_kwargs("roberta-ViT-B-32", None))
    """
    import open_clip

    config = open_clip.get_model_config(arch) or {}
    name = config.get("text_cfg", {}).get("hf_model_name")
    if not name:
        return {}
    try:
        config_source(name, f"the text tower of open_clip config {arch!r}, text_cfg.hf_model_name")
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"{error}; or register an open_clip config (open_clip.add_model_config) whose "
                          "text_cfg.hf_model_name is such a directory") from None
    return {} if weights else {"pretrained_text": False}
