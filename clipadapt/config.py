"""Recipes: the typed schema (pydantic), the checks beyond types, and loading with ``_base_``
inheritance and ``key=value`` overrides (:mod:`clipadapt.recipe_files`).

A recipe is a YAML file with the top-level keys of :class:`Recipe`. Missing keys take the
defaults below (the M2-CLIP Kinetics-400 settings); ``adapters`` and ``heads`` must be given.
Every error is reported at once, each with its key path and what is accepted; names picked from
a registry (datasets, poolings, transforms, optimisers, precisions, adapters, heads) are checked
against it, so a plugin that registers one is accepted like a built-in.

Example:
    >>> from clipadapt.config import load_recipe
    >>> recipe = load_recipe("m2clip_k400", ["optim.lr=3e-4", "data.frames=16"])
    >>> recipe.optim.lr, recipe.data.frames, recipe.adapters[0].name
    (0.0003, 16, 'ted')
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import math
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic_core import PydanticCustomError

from clipadapt.recipe_files import (
    Error,
    RecipeError,
    apply_overrides,
    apply_overrides_collecting,
    builtin_recipes,
    load_with_bases,
    resolve_recipe_path,
)

__all__ = [
    "Recipe", "ModelCfg", "AdapterCfg", "VideoCfg", "HeadCfg", "DataCfg", "OptimCfg", "ScheduleCfg", "EvalCfg",
    "ZeroShotCfg", "Error", "RecipeError", "load_recipe", "load_recipe_dict", "validate", "from_dict",
    "apply_overrides", "builtin_recipes", "resolve_recipe_path", "require_data", "to_yaml", "import_plugins",
    "recipe_json_schema",
]

MAX_OPTION_INT = 1 << 19  # no width, size or vocabulary of a CLIP comes near this
MAX_MODEL_PARAMETERS = 5e9  # what model.config may ask for (ViT-bigG/14 has 2.5e9)
MAX_BATCH_BYTES = 64 << 30  # one micro-batch of float32 clips


# ----------------------------------------------------------------------------------------------
# Value types


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept such strings where a number goes."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # True == 1 would pass as a choice of 1
        raise PydanticCustomError("bool_for_number", "a boolean is not a number")
    return value


def real(**bounds) -> Any:
    """A finite float (ints and YAML 1.1 strings such as ``1e-3`` accepted) within `bounds`."""
    return Annotated[float, Field(allow_inf_nan=False, **bounds), BeforeValidator(_yaml_number)]


def whole(**bounds) -> Any:
    return Annotated[int, Field(**bounds)]


def _registered(registry: str, description: str) -> Any:
    """A name looked up in a registry when the recipe is validated (not fixed by the schema)."""
    return Annotated[str, Field(description=description, json_schema_extra={"x-registry": registry})]


Crops = Annotated[Literal[1, 3, 4], BeforeValidator(_no_bool)]
Sampling = Literal["dense", "segments"]
Options = Annotated[dict[str, Any], Field(description="the component's own keyword arguments")]


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are not coerced (``"8"`` is not 8)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)

    def to_dict(self) -> dict:
        """The section as plain dicts and lists."""
        return self.model_dump()

    def get(self, key: str, default: Any = None) -> Any:  # sections read like the mappings they came from
        return getattr(self, key, default)


# ----------------------------------------------------------------------------------------------
# The schema


class ModelCfg(Section):
    """Which CLIP to build: ``family`` / ``arch`` / ``weights`` (or a ``config`` dict for a tiny one)."""

    family: Literal["open_clip", "openai_clip", "hf", "timm"] = "open_clip"
    arch: str = Field("ViT-B-16", description="the family's architecture name (open_clip config name, ...)")
    weights: str | None = Field("openai", description="null (random), a pretrained tag, or a local weights file")
    config: dict[str, Any] | None = Field(None, description="a tiny or custom model's configuration (arch ignored)")
    trainable: list[str] = Field(default_factory=list, description="extra parameter-name globs to unfreeze")
    grad_checkpointing: bool = False
    precision_frozen: Literal["bf16", "fp16"] | None = Field(None, description="dtype of the frozen weights")


class AdapterCfg(Section):
    """One ``clipadapt.inject`` call: ``inject(model, name, tower=, layers=, site=, **options)``."""

    name: _registered("adapters", "a registered adapter (clipadapt ls adapters)")
    tower: Literal["visual", "text"] = "visual"
    layers: Union[Literal["all"], int, list[int]] = "all"
    site: Union[str, list[str], None] = None
    options: Options = Field(default_factory=dict)
    lr_mult: real(ge=0) = 1.0


class VideoCfg(Section):
    """How frames become a video: temporal ``pooling`` and the prompt ``templates``."""

    pooling: _registered("poolings", "temporal pooling: mean, conv (M2-CLIP's pooling adapter) or a registered one") = "conv"
    templates: list[str] = Field(default_factory=lambda: ["a video of {}"], min_length=1, max_length=1000)


class HeadCfg(Section):
    """One decoder head: registered ``name``, loss ``weight``, ``options``, ``lr_mult``."""

    name: _registered("heads", "a registered head (clipadapt ls heads)")
    weight: real(ge=0) = 1.0
    options: Options = Field(default_factory=dict)
    lr_mult: real(ge=0) = 1.0


class DataCfg(Section):
    """Dataset, clip sampling, augmentation and batch settings."""

    dataset: _registered("datasets", "list, k400, ssv2, ucf101, hmdb51, synthetic or a registered one") = "list"
    root: str | None = None
    train_list: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    label_map: str | None = None
    annotations: str | None = None
    split: whole(ge=1, le=3) = 1
    num_classes: whole(ge=1, le=1 << 20) = 400
    frames: whole(ge=1, le=1024) = 8
    sampling: Sampling = "dense"
    stride: whole(ge=1, le=4096) = 16
    size: whole(ge=1, le=4096) = 224
    train_aug: _registered("transforms", "k400, ssv2, none or a registered training transform") = "k400"
    batch_size: whole(ge=1, le=1 << 16) = 72
    accumulate: whole(ge=1, le=1 << 16) = 1
    num_workers: whole(ge=0, le=512) = 8
    on_error: Literal["skip", "raise"] = "skip"
    synthetic: dict[str, Any] = Field(default_factory=dict, description="arguments of clipadapt.data.synthetic.generate")


class OptimCfg(Section):
    """Optimiser settings; the learning rate of a group is ``lr × lr_mult``."""

    name: _registered("optimizers", "adamw or a registered optimiser") = "adamw"
    lr: real(ge=0) = 2.8125e-4
    weight_decay: real(ge=0) = 0.01
    betas: Annotated[list[real(ge=0, lt=1)], Field(min_length=2, max_length=2)] = Field(default_factory=lambda: [0.9, 0.999])
    eps: real(ge=0) = 1.0e-8
    clip_grad: real(gt=0) | None = None


class ScheduleCfg(Section):
    """Epochs, per-iteration linear warm-up then cosine to ``min_lr``, checkpoint frequency."""

    epochs: whole(ge=1, le=100_000) = 12
    warmup_epochs: real(ge=0) = 2
    min_lr: real(ge=0) = 0.0
    checkpoint_every: whole(ge=0) = 0


class ZeroShotCfg(Section):
    """Views used for zero-shot evaluation."""

    sampling: Sampling = "segments"
    clips: whole(ge=1, le=64) = 1
    crops: Crops = 1


class EvalCfg(Section):
    """Evaluation frequency, views, and the two fusions: over views (``view_fusion``) and over
    heads (``fuse_heads``, reported as ``fused/top1``)."""

    every: whole(ge=0) = 1
    clips: whole(ge=1, le=64) = 3
    crops: Crops = 4
    view_fusion: Literal["mean_prob", "mean_logit", "max"] = "mean_prob"
    fuse_heads: list[str] = Field(default_factory=lambda: ["vc", "cmc"], description="heads averaged into fused/top1")
    heads: list[str] | None = None
    zero_shot: ZeroShotCfg = Field(default_factory=ZeroShotCfg)


class Recipe(Section):
    """A whole recipe. ``name`` is the file's stem (not a key); ``to_dict()`` gives the plain form.

    Example:
        >>> from clipadapt.config import from_dict
        >>> from_dict({"adapters": [], "heads": [{"name": "vc"}]}).schedule.epochs
        12
    """

    model: ModelCfg = Field(default_factory=ModelCfg)
    adapters: list[AdapterCfg]
    video: VideoCfg = Field(default_factory=VideoCfg)
    heads: Annotated[list[HeadCfg], Field(min_length=1)]
    data: DataCfg = Field(default_factory=DataCfg)
    optim: OptimCfg = Field(default_factory=OptimCfg)
    schedule: ScheduleCfg = Field(default_factory=ScheduleCfg)
    precision: _registered("precisions", "fp32, bf16 (autocast) or fp16 (autocast + GradScaler)") = "bf16"
    eval: EvalCfg = Field(default_factory=EvalCfg)
    output_dir: str = "runs/${name}"
    seed: whole(ge=0, lt=1 << 63) = 0
    resume: str | None = "auto"
    plugins: list[str] = Field(default_factory=list, description="modules (or .py files) that register components")
    compare: dict[str, list[str]] = Field(default_factory=dict, description="variant name -> key=value overrides")
    _name: str = PrivateAttr("recipe")

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value


# ----------------------------------------------------------------------------------------------
# From pydantic's errors to ours: key path, what is accepted, did-you-mean


def _closest(name: Any, candidates: list[str]) -> str | None:
    """The candidate `name` was most likely meant to be (a misspelling, or extra/missing characters)."""
    name = str(name)
    close = difflib.get_close_matches(name, candidates, n=1)
    if close:
        return close[0]
    affixes = [c for c in candidates if name.startswith(c) or c.startswith(name) or name.endswith(c)]
    if affixes:
        return max(affixes, key=len)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.4)
    return close[0] if close else None


def _did_you_mean(name: Any, candidates: list[str], end: str = "") -> str:
    close = _closest(name, candidates)
    return f"did you mean {close!r}?{end}" if close else ""


def _bare(hint: Any) -> Any:
    while get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    return hint


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, BaseModel)


def _describe(hint: Any) -> str:
    hint = _bare(hint)
    origin, args = get_origin(hint), get_args(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args)) if len(args) > 1 else repr(args[0])
    if _is_union(hint):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list (each {_describe(args[0])})" if args else "a list"
    if hint is dict or origin is dict or _is_section(hint):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _got(value: Any) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"got {shown} ({type(value).__name__})"


def _value_at(data: Any, parts: list) -> Any:
    for part in parts:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and -len(data) <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _resolve(loc: tuple) -> tuple[list, Any, Any, tuple | None]:
    """(clean key path, the hint there, the section holding the last key, the union crossed) of a
    pydantic error location. Union arms appear in locations as tags such as ``'list[int]'``; the
    union is returned as (its key path, its hint, the tag)."""
    hint: Any = Recipe
    parts: list = []
    parent: Any = None
    union = None
    items = list(loc)
    while items:
        hint = _bare(hint)
        if _is_union(hint):
            arms = [a for a in get_args(hint) if a is not type(None)]
            if len(arms) > 1:  # a tagged union; X | None is reported as X
                tag = str(items.pop(0))
                union = union or (list(parts), hint, tag)
                lists = [a for a in arms if get_origin(_bare(a)) is list]
                arms = lists if tag.startswith("list") and lists else arms
            hint = arms[0]
            continue
        item = items.pop(0)
        if item == "[key]":
            continue
        parts.append(item)
        if _is_section(hint):
            parent = hint
            field = hint.model_fields.get(item)
            hint = field.annotation if field is not None else None
        elif get_origin(hint) is list:
            hint = get_args(hint)[0]
        elif get_origin(hint) is dict:
            hint = get_args(hint)[1] if get_args(hint) else Any
        else:
            hint = Any
    return parts, hint, parent, union


def _message(error: dict, hint: Any, parent: Any, value: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        fields = list(parent.model_fields) if parent else []
        hint_text = _did_you_mean(error["loc"][-1], fields, " ")
        return f"unknown key; {hint_text}accepted: {', '.join(fields)}"
    if kind == "missing":
        return f"required ({_describe(hint)})"
    if kind == "literal_error" and get_origin(_bare(hint)) is Literal:
        choices = [str(c) for c in get_args(_bare(hint))]
        close = _did_you_mean(value, choices) if isinstance(value, str) else ""
        return f"expected {_describe(hint)}, {_got(value)}" + (f"; {close}" if close else "")
    bounds = {"greater_than_equal": "at least {ge}", "greater_than": "above {gt}", "less_than_equal": "at most {le}",
              "less_than": "below {lt}"}
    if kind in bounds:
        return f"must be {bounds[kind].format(**ctx)}, got {value!r}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return "must list at least one item"
        return f"expected at least {ctx.get('min_length')} items, got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    if _is_section(_bare(hint)) and not isinstance(value, dict):
        return f"expected a mapping with keys {', '.join(_bare(hint).model_fields)}, {_got(value)}"
    if get_origin(_bare(hint)) is list and _is_section(get_args(_bare(hint))[0]) and not isinstance(value, list):
        return f"expected a list of mappings, {_got(value)}"
    return f"expected {_describe(hint)}, {_got(value)}"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _union_message(hint: Any, value: Any) -> str:
    choices = [str(c) for arm in get_args(_bare(hint)) if get_origin(_bare(arm)) is Literal for c in get_args(_bare(arm))]
    close = _did_you_mean(value, choices) if isinstance(value, str) and choices else ""
    return f"expected {_describe(hint)}, {_got(value)}" + (f"; {close}" if close else "")


def _schema_errors(data: dict) -> list[Error]:
    """Every type, key and range error of `data` against :class:`Recipe`, in our words."""
    try:
        Recipe.model_validate(data)
    except ValidationError as failure:
        errors: list[Error] = []
        unions_seen: set[str] = set()
        for error in failure.errors(include_url=False):
            parts, hint, parent, union = _resolve(error["loc"])
            if union is not None:
                union_parts, union_hint, tag = union
                union_value = _value_at(data, union_parts)
                if isinstance(union_value, list) and not tag.startswith("list"):
                    continue  # the scalar arms do not apply to a list; its list arm reports the item
                if not isinstance(union_value, list):
                    path = ".".join(map(str, union_parts))
                    if path not in unions_seen:
                        unions_seen.add(path)
                        errors.append(Error(path, _union_message(union_hint, union_value)))
                    continue
            value = _value_at(data, parts)
            path = ".".join(map(str, parts))
            if error["type"] == "value_error":
                errors.append(Error(path, str(error["msg"]).removeprefix("Value error, ")))
            else:
                errors.append(Error(path, _message(error, hint, parent, value)))
        return errors
    return []


# ----------------------------------------------------------------------------------------------
# Plugins


@contextmanager
def _working_directory_hidden():
    """``sys.path`` without the entries Python adds for the working directory (``''``, and the
    working directory itself at the front under ``python -m``), so a stray ``.py`` file there
    cannot shadow a plugin; paths the user put on ``PYTHONPATH`` stay."""
    cwd = os.getcwd()
    saved = list(sys.path)
    sys.path[:] = [p for i, p in enumerate(saved) if not (p == "" or (i == 0 and os.path.abspath(p) == cwd))]
    try:
        yield
    finally:
        added = [p for p in sys.path if p not in saved]
        sys.path[:] = saved + added


def _import_plugin(module: str) -> None:
    if not module.endswith(".py"):
        importlib.import_module(module)
        return
    path = Path(module).expanduser().resolve()
    if not path.is_file():
        raise ImportError(f"no such file {str(path)!r}")
    name = f"clipadapt_plugin_{path.stem}_{abs(hash(str(path))):x}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[name]
        raise


def import_plugins(modules: Any) -> list[Error]:
    """Import a recipe's ``plugins`` (module names, or paths of ``.py`` files) so the names they
    register are known; the working directory is never searched implicitly. Returns the failures.

    Example:
        >>> import_plugins(["json"]), [str(e) for e in import_plugins(["no_such_module_here"])]
        ([], ["plugins.0: cannot import plugin module 'no_such_module_here': No module named 'no_such_module_here'"])
    """
    errors: list[Error] = []
    if not isinstance(modules, list):
        return errors
    with _working_directory_hidden():
        for i, module in enumerate(modules):
            if not isinstance(module, str):
                continue
            try:
                _import_plugin(module)
            except ImportError as error:
                errors.append(Error(f"plugins.{i}", f"cannot import plugin module {module!r}: {error}"))
            except Exception as error:  # a plugin's own bug: one line naming it, not a traceback
                errors.append(Error(f"plugins.{i}", f"plugin {module!r} failed while importing: {type(error).__name__}: {error}"))
    return errors


# ----------------------------------------------------------------------------------------------
# Checks beyond types: registered names, component options, files, shapes, consistency


def registries() -> dict:
    """The registries recipe names are looked up in, with the built-in entries registered."""
    import clipadapt
    import clipadapt.adapters.temporal_pool  # noqa: F401  (poolings)
    import clipadapt.data.recipe  # noqa: F401  (datasets and training transforms)
    import clipadapt.engine.optim  # noqa: F401  (optimisers)
    import clipadapt.engine.precision  # noqa: F401  (precisions)
    import clipadapt.heads  # noqa: F401  (heads)
    from clipadapt import registry

    return {"adapters": clipadapt.ADAPTERS, "heads": clipadapt.HEADS, "datasets": registry.DATASETS,
            "poolings": registry.POOLINGS, "transforms": registry.TRANSFORMS, "optimizers": registry.OPTIMIZERS,
            "precisions": registry.PRECISIONS}


NAMED_FIELDS = (("video.pooling", "poolings"), ("data.dataset", "datasets"), ("data.train_aug", "transforms"),
                ("optim.name", "optimizers"), ("precision", "precisions"))


def _accepted_kwargs(func) -> set[str] | None:
    """Keyword names `func` accepts, or None when it takes ``**kwargs``."""
    parameters = inspect.signature(func).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _check_kwargs(options: dict, accepted: set[str] | None, path: str, what: str, errors: list[Error]) -> None:
    if accepted is None:
        return
    for key in options:
        if key not in accepted:
            hint = _did_you_mean(key, sorted(accepted), " ")
            errors.append(Error(_join(path, key), f"not an option of {what}; {hint}accepted: {', '.join(sorted(accepted)) or '(none)'}"))


def component_options(cls, kind: str) -> set[str] | None:
    """The option names a registered adapter or head accepts (None: any). A class may declare them
    with a classmethod ``accepted_options()``; otherwise its ``build`` (adapters) or ``__init__``
    signature says, without the arguments the library passes itself."""
    declared = getattr(cls, "accepted_options", None)
    if callable(declared):
        return set(declared())
    if kind == "adapters":
        from clipadapt.inject import Adapter

        build = getattr(cls, "build", None)
        own_build = build is not None and getattr(build, "__func__", None) is not Adapter.build.__func__
        accepted = _accepted_kwargs(build if own_build else cls.__init__)
        return None if accepted is None else accepted - {"self", "dim", "site", "tower", "layer"}
    accepted = _accepted_kwargs(cls.__init__)
    return None if accepted is None else accepted - {"self", "model"}


def _large_ints(node: Any, path: str, limit: int = MAX_OPTION_INT):
    """(path, value) of every integer in `node` beyond `limit` (a width or size no model has)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _large_ints(value, _join(path, key), limit)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _large_ints(value, _join(path, i), limit)
    elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > limit:
        yield path, node


def _check_names(cfg: dict, plugins_skipped: bool, errors: list[Error], skipped: list[str]) -> None:
    """Registered names, and the options of adapters and heads."""
    from clipadapt.inject import SITES

    known = registries()

    def unknown(path: str, kind: str, name: str) -> None:
        if plugins_skipped:
            skipped.append(f"{path}: {name!r} not checked (plugins not imported)")
        else:
            errors.append(Error(path, known[kind].unknown_message(name)))

    for section in ("adapters", "heads"):
        entries = cfg.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                continue
            if name not in known[section]:
                unknown(f"{section}.{i}.name", section, name)
                continue
            options = entry.get("options")
            if isinstance(options, dict):
                what = f"{section[:-1]} {name!r}"
                _check_kwargs(options, component_options(known[section].get(name), section), f"{section}.{i}.options", what, errors)
                for path, value in _large_ints(options, f"{section}.{i}.options"):
                    errors.append(Error(path, f"{value} is beyond any model's sizes (at most {MAX_OPTION_INT})"))
            site = entry.get("site")
            for one in [site] if isinstance(site, str) else site if isinstance(site, list) else []:
                if isinstance(one, str) and one not in SITES:
                    hint = _did_you_mean(one, list(SITES))
                    errors.append(Error(f"{section}.{i}.site", f"{one!r} is not a site; accepted: {', '.join(SITES)} or null" + (f"; {hint}" if hint else "")))
    for path, kind in NAMED_FIELDS:
        value = _value_at(cfg, path.split("."))
        if isinstance(value, str) and value not in known[kind]:
            unknown(path, kind, value)
    fuse_heads = _value_at(cfg, ["eval", "fuse_heads"])
    for i, name in enumerate(fuse_heads if isinstance(fuse_heads, list) else []):
        if isinstance(name, str) and name not in known["heads"]:
            unknown(f"eval.fuse_heads.{i}", "heads", name)


def dataset_source(cfg_or_recipe: Any):
    """The registered :class:`clipadapt.data.recipe.DatasetSource` of a recipe's ``data.dataset``."""
    data = cfg_or_recipe.get("data") if isinstance(cfg_or_recipe, dict) else cfg_or_recipe.data
    name = (data or {}).get("dataset", "list") if isinstance(data, dict) else data.dataset
    return registries()["datasets"].get(name)()


PATH_KEYS = ("root", "train_list", "val_list", "test_list", "label_map", "annotations")


def _check_paths(cfg: dict, errors: list[Error]) -> None:
    data = cfg.get("data")
    if isinstance(data, dict):
        name = data.get("dataset", "list")
        generated = isinstance(name, str) and name in registries()["datasets"] and dataset_source(cfg).generated
        for key in PATH_KEYS:
            value = data.get(key)
            if key == "root" and generated:
                continue  # where the data will be written
            if isinstance(value, str) and not Path(value).exists():
                errors.append(Error(f"data.{key}", f"{value!r} does not exist"))
        synthetic = data.get("synthetic")
        if isinstance(synthetic, dict) and synthetic:
            from clipadapt.data.synthetic import generate

            accepted = _accepted_kwargs(generate)
            _check_kwargs(synthetic, None if accepted is None else accepted - {"out_dir"}, "data.synthetic", "clipadapt.data.synthetic.generate", errors)
            for path, value in _large_ints(synthetic, "data.synthetic", 1 << 16):
                errors.append(Error(path, f"{value} is more than a synthetic dataset needs (at most {1 << 16})"))
    resume = cfg.get("resume")
    if isinstance(resume, str) and resume != "auto" and not Path(resume).is_file():
        errors.append(Error("resume", f"checkpoint {resume!r} does not exist; accepted: auto, null or a checkpoint file"))
    weights = _value_at(cfg, ["model", "weights"])
    if isinstance(weights, str) and ("/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))):
        if not Path(weights).is_file():
            errors.append(Error("model.weights", f"weights file {weights!r} does not exist; accepted: null, a pretrained tag or a file"))


def estimate_parameters(config: Any) -> int:
    """A rough upper estimate of the parameters a ``model.config`` asks for: 12·width²·layers per
    transformer (attention and a 4× MLP) plus vocabulary × width, found at any depth under the
    keys open_clip, Hugging Face and timm use.

    Example:
        >>> estimate_parameters({"vision_cfg": {"width": 768, "layers": 12}, "text_cfg": {"width": 512, "layers": 12, "vocab_size": 49408}})
        147980288
    """
    total = 0
    if isinstance(config, dict):
        def number(*keys):
            value = next((config[k] for k in keys if k in config), None)
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

        width = number("width", "hidden_size", "embed_dim")
        layers = number("layers", "num_hidden_layers", "depth")
        total += 12 * width * width * layers + number("vocab_size") * width
        total += sum(estimate_parameters(value) for value in config.values() if isinstance(value, (dict, list)))
    elif isinstance(config, list):
        total += sum(estimate_parameters(value) for value in config)
    return total


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_shapes(cfg: dict, errors: list[Error], bad: set[str]) -> None:
    """Refuse what would allocate absurd amounts before anything is built (`bad`: keys already in error)."""
    config = _value_at(cfg, ["model", "config"])
    if isinstance(config, dict):
        for path, value in _large_ints(config, "model.config"):
            errors.append(Error(path, f"{value} is beyond any CLIP's sizes (at most {MAX_OPTION_INT})"))
        estimate = estimate_parameters(config)
        if estimate > MAX_MODEL_PARAMETERS:
            errors.append(Error("model.config", f"asks for about {estimate:.2g} parameters; at most {MAX_MODEL_PARAMETERS:.0g}"))
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    batch, accumulate, frames, size = (data.get(k, d) for k, d in (("batch_size", 72), ("accumulate", 1), ("frames", 8), ("size", 224)))
    involved = {"data", "data.batch_size", "data.accumulate", "data.frames", "data.size"}
    if all(_is_int(v) and v > 0 for v in (batch, accumulate, frames, size)) and not involved & bad:
        step_bytes = -(-batch // accumulate) * frames * 3 * size * size * 4
        if step_bytes > MAX_BATCH_BYTES:
            errors.append(Error("data.batch_size", f"one step's clips would take {step_bytes / 2**30:.0f} GiB "
                                f"(batch_size/accumulate × frames × 3 × size² × 4 bytes); at most {MAX_BATCH_BYTES >> 30} GiB"))


def _check_consistency(cfg: dict, errors: list[Error], bad: set[str]) -> None:
    """Keys that are each valid but do not fit together (`bad`: keys already in error, not checked again)."""
    schedule = cfg.get("schedule") if isinstance(cfg.get("schedule"), dict) else {}
    warmup, epochs = schedule.get("warmup_epochs", 2), schedule.get("epochs", 12)
    if _is_number(warmup) and _is_int(epochs) and not {"schedule.warmup_epochs", "schedule.epochs"} & bad and warmup > epochs:
        errors.append(Error("schedule.warmup_epochs", f"warm-up ({warmup}) is longer than the run ({epochs} epochs)"))
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    batch, accumulate = data.get("batch_size", 72), data.get("accumulate", 1)
    if _is_int(batch) and _is_int(accumulate) and batch > 0 and accumulate > 0 and batch % accumulate:
        errors.append(Error("data.accumulate", f"batch_size {batch} is not divisible by accumulate {accumulate}"))
    heads = cfg.get("heads")
    names = [h.get("name") for h in heads if isinstance(h, dict)] if isinstance(heads, list) else []
    reported = _value_at(cfg, ["eval", "heads"])
    for i, name in enumerate(reported if isinstance(reported, list) else []):
        if isinstance(name, str) and name not in (*names, "fused"):
            errors.append(Error(f"eval.heads.{i}", f"{name!r} is not a head of this recipe; accepted: {', '.join(map(str, names))}, fused"
                                + (f"; {_did_you_mean(name, [*map(str, names), 'fused'])}" if _closest(name, [*map(str, names), "fused"]) else "")))
    if not {"model", "model.precision_frozen", "precision"} & bad:
        _check_precision(cfg, errors)


def _check_precision(cfg: dict, errors: list[Error]) -> None:
    """``model.precision_frozen`` runs under the autocast of ``precision``, in the same dtype."""
    frozen, precision = _value_at(cfg, ["model", "precision_frozen"]), cfg.get("precision", "bf16")
    if isinstance(frozen, str) and isinstance(precision, str) and frozen != precision:
        errors.append(Error("model.precision_frozen", f"frozen weights in {frozen} need precision: {frozen} (its autocast "
                            f"runs every layer in {frozen}); got precision {precision}. Accepted: precision_frozen null, "
                            f"or equal to precision (bf16 or fp16)"))


def _position(error: Error, order: list[str]) -> int:
    top = error.path.split(".")[0]
    return order.index(top) if top in order else -1


def validate(cfg: dict | Recipe, *, plugins: bool = True, skipped: list[str] | None = None) -> list[Error]:
    """Every error of a recipe mapping, each with its key path and what is accepted (empty: valid),
    in the order of the recipe's sections.

    Imports the recipe's ``plugins`` first, so the names they register are known. With
    ``plugins=False`` they are not imported, and the names only they could register are not
    checked: each such check is described in `skipped` instead.

    Example:
        >>> errors = validate({"adapters": [{"name": "ted", "sitee": "pre_mlp"}], "heads": [{"name": "vc"}], "precision": "bf17"})
        >>> list(map(str, errors))  # doctest: +NORMALIZE_WHITESPACE
        ["adapters.0.sitee: unknown key; did you mean 'site'? accepted: name, tower, layers, site, options, lr_mult",
         "precision: unknown precision 'bf17'; known: bf16, fp16, fp32. Did you mean 'bf16'?"]
    """
    if isinstance(cfg, Recipe):
        cfg = cfg.to_dict()
    if not isinstance(cfg, dict):
        return [Error("", f"a recipe is a mapping of keys, {_got(cfg)}")]
    skipped = [] if skipped is None else skipped
    cfg = {k: v for k, v in cfg.items() if k != "_base_"}
    listed = cfg.get("plugins")
    errors: list[Error] = []
    if plugins:
        errors += import_plugins(listed)
    elif isinstance(listed, list) and listed:
        skipped.append(f"plugins {', '.join(map(str, listed))} not imported: the names and options they register are not checked")
    errors += _schema_errors(cfg)
    _check_names(cfg, not plugins and bool(listed), errors, skipped)
    _check_paths(cfg, errors)
    bad = {e.path for e in errors}
    _check_shapes(cfg, errors, bad)
    _check_consistency(cfg, errors, bad)
    order = list(Recipe.model_fields)
    return sorted(errors, key=lambda e: _position(e, order))


# ----------------------------------------------------------------------------------------------
# Building and loading


def from_dict(data: dict, name: str = "recipe", *, validated: bool = False) -> Recipe:
    """A :class:`Recipe` from a mapping (validated unless `validated`); ``${name}`` in
    ``output_dir`` becomes `name`.

    Example:
        >>> from_dict({"adapters": [], "heads": [{"name": "vc"}]}, name="mine").output_dir
        'runs/mine'
    """
    data = {k: v for k, v in data.items() if k != "_base_"}
    if not validated:
        errors = validate(data)
        if errors:
            raise RecipeError(errors, source=name)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError:
        raise RecipeError(_schema_errors(data), source=name) from None
    recipe.name = name
    recipe.output_dir = recipe.output_dir.replace("${name}", name)
    return recipe


def load_recipe_dict(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, str]:
    """The merged raw mapping of a recipe (bases and overrides applied, not validated) and its name.

    Example:
        >>> data, name = load_recipe_dict("m2clip_k400", ["seed=3"])
        >>> data["seed"], name
        (3, 'm2clip_k400')
    """
    path = resolve_recipe_path(name_or_path)
    return apply_overrides(load_with_bases(path), list(overrides)), path.stem


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, plugins: bool = True) -> Recipe:
    """Load, merge, override and validate a recipe; raise :class:`RecipeError` listing every error.

    Args:
        name_or_path: a YAML file or the name of a built-in recipe (``clipadapt ls recipes``).
        overrides: ``dotted.key=value`` strings applied after inheritance.
        plugins: import the recipe's ``plugins`` (see :func:`validate`).

    Example:
        >>> load_recipe("m2clip_k400", ["data.frames=16"]).data.frames
        16
    """
    path = resolve_recipe_path(name_or_path)
    data, errors = apply_overrides_collecting(load_with_bases(path), list(overrides))
    errors += validate(data, plugins=plugins)
    if errors:
        raise RecipeError(errors, source=str(name_or_path))
    return from_dict(data, name=path.stem, validated=True)


def to_yaml(recipe: Recipe) -> str:
    """The recipe as YAML text (stored in checkpoints and run folders).

    Example:
        >>> "optim:" in to_yaml(load_recipe("m2clip_k400"))
        True
    """
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def require_data(recipe: Recipe, splits: tuple[str, ...] = ("train", "val")) -> None:
    """Raise :class:`RecipeError` naming every data path a run of `splits` needs but the recipe
    leaves null (which paths, the recipe's dataset source says).

    Example:
        >>> require_data(from_dict({"adapters": [], "heads": [{"name": "vc"}], "data": {"dataset": "synthetic"}}))
    """
    source = dataset_source(recipe)
    needed = list(dict.fromkeys(key for split in splits for key in source.required(recipe.data, split)))
    errors = [
        Error(f"data.{key}", f"a {recipe.data.dataset!r} run needs this path; set it in the recipe or as data.{key}=PATH")
        for key in needed
        if getattr(recipe.data, key) is None
    ]
    if errors:
        raise RecipeError(errors, source=recipe.name)


def recipe_json_schema() -> dict:
    """The JSON Schema of a recipe file (``clipadapt schema``), for editors to complete and check
    keys; names looked up in registries list the ones registered now (plugins may add more).

    Example:
        >>> schema = recipe_json_schema()
        >>> sorted(schema["properties"])[:3], "k400" in str(schema["$defs"]["DataCfg"]["properties"]["dataset"])
        (['_base_', 'adapters', 'compare'], True)
    """
    schema = Recipe.model_json_schema()
    known = registries()

    def fill(node: Any) -> None:
        if isinstance(node, dict):
            kind = node.pop("x-registry", None)
            if kind is not None:
                node["anyOf"] = [{"enum": known[kind].names()}, {"type": "string"}]
                node.pop("type", None)
            if node.get("additionalProperties") is False and "properties" in node:  # child recipes may replace a mapping
                node["properties"]["_delete_"] = {"type": "boolean", "description": "replace the base recipe's mapping instead of merging"}
            for value in node.values():
                fill(value)
        elif isinstance(node, list):
            for value in node:
                fill(value)

    fill(schema)
    schema["properties"].pop("_delete_")  # replaces mappings inside a recipe, not the recipe itself
    schema["properties"]["_base_"] = {"description": "recipes to start from: a built-in name or a path relative to this file",
                                      "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    schema["if"] = {"not": {"required": ["_base_"]}}  # a recipe with a base may leave adapters and heads to it
    schema["then"] = {"required": schema.pop("required")}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "clipadapt recipe"
    return schema
