"""The recipe schema (pydantic), validation and loading: a recipe's life from YAML to `Recipe`.

A recipe is a YAML file with the top-level keys of :class:`Recipe`. Missing keys take the
defaults below (the M2-CLIP Kinetics-400 settings); ``adapters`` and ``heads`` must be given.
Every error is reported at once, each with its key path and what is accepted; names picked from
a registry (datasets, poolings, transforms, optimisers, precisions, adapters, heads) are checked
against it, so a plugin that registers one is accepted like a built-in.

Example:
    >>> from clipadapt.recipes import load_recipe
    >>> recipe = load_recipe("m2clip_k400", ["optim.lr=3e-4", "data.frames=16"])
    >>> recipe.optim.lr, recipe.data.frames, recipe.adapters[0].name
    (0.0003, 16, 'ted')
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic_core import PydanticCustomError

from clipadapt.recipes.checks import (
    MAX_OPTION_INT,
    check_beyond_types,
    component_options,
    dataset_source,
    estimate_parameters,
    import_plugins,
    registries,
)
from clipadapt.recipes.checks import did_you_mean as _did_you_mean
from clipadapt.recipes.checks import got as _got
from clipadapt.recipes.checks import value_at as _value_at
from clipadapt.recipes.files import (
    Error,
    RecipeError,
    apply_overrides,
    apply_overrides_collecting,
    builtin_recipes,
    load_with_bases,
    resolve_recipe_path,
)

__all__ = [
    "Recipe", "ModelCfg", "InitAdapterCfg", "AdapterCfg", "VideoCfg", "HeadCfg", "DataCfg", "OptimCfg", "ScheduleCfg", "EvalCfg",
    "ZeroShotCfg", "Error", "RecipeError", "load_recipe", "load_recipe_dict", "validate", "from_dict",
    "apply_overrides", "builtin_recipes", "resolve_recipe_path", "require_data", "to_yaml", "import_plugins",
    "recipe_json_schema", "registries", "dataset_source", "component_options", "estimate_parameters", "MAX_OPTION_INT",
]

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
Channels = Annotated[list[real(gt=-1000, lt=1000)], Field(min_length=3, max_length=3)]
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


class InitAdapterCfg(Section):
    """An adapter file the model starts from: loaded as an adapter set of the CLIP, active under
    the recipe's own adapters (``VideoCLIP.init_adapters``)."""

    path: str = Field(description="an adapter file written by clipadapt.save_adapters or clipadapt export")
    adapter_set: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")] | None = Field(
        None, description="the set's name in the model (letters, digits, _ and -); null: the name it was saved under")
    trainable: bool = Field(False, description="train the loaded set too (false: it stays frozen)")


class ModelCfg(Section):
    """Which CLIP to build: ``family`` / ``arch`` / ``weights`` (or a ``config`` dict for a tiny one)."""

    family: str = Field("open_clip", description="a registered model family: open_clip, openai_clip, hf, timm, or one a plugin registers (clipadapt ls backbones)")
    arch: str = Field("ViT-B-16", description="the family's architecture name (open_clip config name, ...)")
    weights: str | None = Field("openai", description="null (random), a pretrained tag, or a local weights file")
    config: dict[str, Any] | None = Field(None, description="a tiny or custom model's configuration (arch ignored)")
    trainable: list[str] = Field(default_factory=list, description="extra parameter-name globs to unfreeze")
    init_adapters: list[InitAdapterCfg] | None = Field(None, description="adapter files to start from, each a frozen, active "
                                                       "adapter set under the recipe's adapters (the 'default' set)")
    grad_checkpointing: bool = False
    precision_frozen: Literal["bf16", "fp16"] | None = Field(None, description="dtype of the frozen weights")
    tokenizer: str | None = Field(None, description="the text tower's tokenizer where the family does not know it "
                                  "(SigLIP, CLIPA, MetaCLIP 2 worldwide): a local tokenizer.json, a directory holding "
                                  "one, an open_clip model name, or bpe; nothing is downloaded")


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
    size: whole(ge=1, le=4096) | None = Field(None, description="image side in pixels; null: the model's own (its preprocess config)")
    mean: Channels | None = Field(None, description="per-channel image mean (RGB, pixels in [0, 1]); null: the model's own")
    std: Channels | None = Field(None, description="per-channel image std; null: the model's own")
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = Field(None, description="resize interpolation; null: the model's own")
    train_aug: _registered("transforms", "k400, ssv2, none or a registered training transform") = "k400"
    batch_size: whole(ge=1, le=1 << 16) = 72
    accumulate: whole(ge=1, le=1 << 16) = 1
    num_workers: whole(ge=0, le=512) = 8
    on_error: Literal["skip", "raise"] = "skip"
    backend: Literal["auto", "torchcodec", "decord", "pyav"] = Field("auto", description="video reader: auto (the fastest exact one), torchcodec, decord or pyav")
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
        >>> from clipadapt.recipes import from_dict
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
    check_beyond_types(cfg, not plugins and bool(listed), errors, skipped)
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
