"""Recipes: the typed schema, YAML loading with ``_base_`` inheritance, ``key=value`` overrides and
a validator that lists every error with its key path.

A recipe is a YAML file with the top-level keys of :class:`Recipe`. Missing keys take the
defaults below (the M2-CLIP Kinetics-400 settings); ``adapters`` and ``heads`` must be given.

Example:
    >>> from clipadapt.config import load_recipe
    >>> recipe = load_recipe("m2clip_k400", ["optim.lr=3e-4", "data.frames=16"])
    >>> recipe.optim.lr, recipe.data.frames, recipe.adapters[0].name
    (0.0003, 16, 'ted')
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = [
    "Recipe",
    "ModelCfg",
    "AdapterCfg",
    "VideoCfg",
    "HeadCfg",
    "DataCfg",
    "OptimCfg",
    "ScheduleCfg",
    "EvalCfg",
    "ZeroShotCfg",
    "Error",
    "RecipeError",
    "load_recipe",
    "load_recipe_dict",
    "validate",
    "from_dict",
    "apply_overrides",
    "builtin_recipes",
    "resolve_recipe_path",
    "require_data",
    "to_yaml",
]

RECIPES_DIR = Path(__file__).parent / "recipes"
OFFICIAL_SPLITS = ("ssv2", "ucf101", "hmdb51")  # datasets read from their official annotation folder

Precision = Literal["fp32", "bf16", "fp16"]


# ----------------------------------------------------------------------------------------------
# The schema


@dataclass
class ModelCfg:
    """Which CLIP to build: ``family`` / ``arch`` / ``weights`` (or a ``config`` dict for a tiny one)."""

    family: Literal["open_clip", "openai_clip", "hf", "timm"] = "open_clip"
    arch: str = "ViT-B-16"
    weights: str | None = "openai"
    config: dict | None = None
    trainable: list[str] = field(default_factory=list)
    grad_checkpointing: bool = False
    precision_frozen: Literal["bf16", "fp16"] | None = None


@dataclass
class AdapterCfg:
    """One ``clipadapt.inject`` call: ``inject(model, name, tower=, layers=, site=, **options)``."""

    name: str = field(metadata={"required": True, "registry": "adapters"})
    tower: Literal["visual", "text"] = "visual"
    layers: Union[Literal["all"], int, list[int]] = "all"
    site: Union[str, list[str], None] = field(default=None, metadata={"sites": True})
    options: dict = field(default_factory=dict)
    lr_mult: float = field(default=1.0, metadata={"min": 0})


@dataclass
class VideoCfg:
    """How frames become a video: temporal ``pooling`` and the prompt ``templates``."""

    pooling: Literal["mean", "conv"] = "conv"
    templates: list[str] = field(default_factory=lambda: ["a video of {}"])


@dataclass
class HeadCfg:
    """One decoder head: registered ``name``, loss ``weight``, ``options``, ``lr_mult``."""

    name: str = field(metadata={"required": True, "registry": "heads"})
    weight: float = field(default=1.0, metadata={"min": 0})
    options: dict = field(default_factory=dict)
    lr_mult: float = field(default=1.0, metadata={"min": 0})


@dataclass
class DataCfg:
    """Dataset, clip sampling, augmentation and batch settings."""

    dataset: Literal["list", "k400", "ssv2", "ucf101", "hmdb51", "synthetic"] = "list"
    root: str | None = field(default=None, metadata={"path": True})
    train_list: str | None = field(default=None, metadata={"path": True})
    val_list: str | None = field(default=None, metadata={"path": True})
    test_list: str | None = field(default=None, metadata={"path": True})
    label_map: str | None = field(default=None, metadata={"path": True})
    annotations: str | None = field(default=None, metadata={"path": True})
    split: int = field(default=1, metadata={"min": 1, "max": 3})
    num_classes: int = field(default=400, metadata={"min": 1})
    frames: int = field(default=8, metadata={"min": 1})
    sampling: Literal["dense", "segments"] = "dense"
    stride: int = field(default=16, metadata={"min": 1})
    size: int = field(default=224, metadata={"min": 1})
    train_aug: Literal["k400", "ssv2", "none"] = "k400"
    batch_size: int = field(default=72, metadata={"min": 1})
    accumulate: int = field(default=1, metadata={"min": 1})
    num_workers: int = field(default=8, metadata={"min": 0})
    on_error: Literal["skip", "raise"] = "skip"
    backend: Literal["auto", "torchcodec", "decord", "pyav"] = "auto"
    synthetic: dict = field(default_factory=dict, metadata={"kwargs_of": "clipadapt.data.synthetic:generate"})


@dataclass
class OptimCfg:
    """AdamW settings; the learning rate of a group is ``lr × lr_mult``."""

    name: Literal["adamw"] = "adamw"
    lr: float = field(default=2.8125e-4, metadata={"min": 0})
    weight_decay: float = field(default=0.01, metadata={"min": 0})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"length": 2})
    eps: float = field(default=1.0e-8, metadata={"min": 0})
    clip_grad: float | None = field(default=None, metadata={"min": 0})


@dataclass
class ScheduleCfg:
    """Epochs, per-iteration linear warm-up then cosine to ``min_lr``, checkpoint frequency."""

    epochs: int = field(default=12, metadata={"min": 1})
    warmup_epochs: float = field(default=2, metadata={"min": 0})
    min_lr: float = field(default=0.0, metadata={"min": 0})
    checkpoint_every: int = field(default=0, metadata={"min": 0})


@dataclass
class ZeroShotCfg:
    """Views used for zero-shot evaluation."""

    sampling: Literal["dense", "segments"] = "segments"
    clips: int = field(default=1, metadata={"min": 1})
    crops: Literal[1, 3, 4] = 1


@dataclass
class EvalCfg:
    """Evaluation frequency, views, and the two fusions: over views (``view_fusion``) and over
    heads (``fuse_heads``, reported as ``fused/top1``)."""

    every: int = field(default=1, metadata={"min": 0})
    clips: int = field(default=3, metadata={"min": 1})
    crops: Literal[1, 3, 4] = 4
    view_fusion: Literal["mean_prob", "mean_logit", "max"] = "mean_prob"
    fuse_heads: list[str] = field(default_factory=lambda: ["vc", "cmc"])
    heads: list[str] | None = None
    zero_shot: ZeroShotCfg = field(default_factory=ZeroShotCfg)


@dataclass
class Recipe:
    """A whole recipe. ``name`` is the file's stem (not a key); ``to_dict()`` gives the plain form.

    Example:
        >>> from clipadapt.config import from_dict
        >>> from_dict({"adapters": [], "heads": [{"name": "vc"}]}).schedule.epochs
        12
    """

    model: ModelCfg = field(default_factory=ModelCfg)
    adapters: list[AdapterCfg] = field(default_factory=list, metadata={"required": True})
    video: VideoCfg = field(default_factory=VideoCfg)
    heads: list[HeadCfg] = field(default_factory=list, metadata={"required": True, "nonempty": True})
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    precision: Precision = "bf16"
    eval: EvalCfg = field(default_factory=EvalCfg)
    output_dir: str = "runs/${name}"
    seed: int = 0
    resume: str | None = "auto"
    plugins: list[str] = field(default_factory=list)
    compare: dict[str, list[str]] = field(default_factory=dict)
    name: str = field(default="recipe", metadata={"internal": True})

    def to_dict(self) -> dict:
        """The recipe as plain dicts and lists (what ``build_from_recipe`` and checkpoints take)."""
        data = dataclasses.asdict(self)
        data.pop("name")
        return data


# ----------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Error:
    """One problem of a recipe: the dotted key ``path`` and a ``message`` saying what is accepted."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<recipe>'}: {self.message}"


class RecipeError(ValueError):
    """A recipe could not be loaded; the message lists every error, one per line.

    Example:
        >>> try:
        ...     load_recipe("m2clip_k400", ["optim.lr=fast"])
        ... except RecipeError as error:
        ...     print(error.errors[0].path)
        optim.lr
    """

    def __init__(self, errors: list[Error], source: str = "recipe"):
        self.errors = list(errors)
        lines = [f"{source}: {len(self.errors)} error(s)"] + [str(e) for e in self.errors]
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Files, inheritance, overrides


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipes by name (``clipadapt ls recipes``).

    Example:
        >>> "m2clip_k400" in builtin_recipes()
        True
    """
    return {path.stem: path for path in sorted(RECIPES_DIR.glob("*.yaml"))}


def resolve_recipe_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe file: a path (relative to `relative_to` or the working directory) or a built-in name.

    Example:
        >>> resolve_recipe_path("m2clip_k400").name
        'm2clip_k400.yaml'
    """
    text = str(name_or_path)
    candidates = [Path(text)] if relative_to is None else [relative_to / text]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    builtin = builtin_recipes()
    stem = text[: -len(".yaml")] if text.endswith(".yaml") else text
    if stem in builtin and "/" not in stem:
        return builtin[stem]
    close = difflib.get_close_matches(stem, list(builtin), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = f" (relative to {relative_to})" if relative_to else ""
    raise RecipeError(
        [Error("_base_" if relative_to else "", f"no recipe file {text!r}{where} and no built-in recipe of that name; "
               f"built-in: {', '.join(builtin) or '(none)'}{hint}")],
        source=text,
    )


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.safe_load(file)
    except yaml.YAMLError as error:
        raise RecipeError([Error("", f"not valid YAML: {' '.join(str(error).split())}")], source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError([Error("", f"a recipe is a mapping of keys, got {type(data).__name__}")], source=str(path))
    return data


def _merge(base: Any, child: Any) -> Any:
    """Deep merge of mappings; anything else (lists included) in `child` replaces `base`."""
    if isinstance(base, dict) and isinstance(child, dict):
        merged = dict(base)
        for key, value in child.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return child


def _load_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise RecipeError([Error("_base_", f"inheritance cycle: {cycle}")], source=str(chain[0]))
    data = _read_yaml(path)
    bases = data.pop("_base_", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError([Error("_base_", f"expected a file or recipe name (or a list of them), got {bases!r}")], source=str(path))
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _load_with_bases(resolve_recipe_path(base, path.parent), (*chain, path)))
    return _merge(merged, data)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise RecipeError([Error(text, "an override is key=value with a dotted key, e.g. optim.lr=3e-4")], source="overrides")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError([Error(key, f"override {text!r} needs a dotted key such as data.frames")], source="overrides")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: keep the text as a string
    return key.split("."), value


def _apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> tuple[dict, list[Error]]:
    import copy

    data = copy.deepcopy(data)
    errors: list[Error] = []
    for text in overrides:
        try:
            parts, value = _parse_override(text)
        except RecipeError as error:
            errors.extend(error.errors)
            continue
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not (part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node)):
                    errors.append(Error(where, f"{part!r} is not an index of this list of {len(node)} item(s) (0..{len(node) - 1})"))
                    break
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if not isinstance(node.get(part), (dict, list)):
                        node[part] = {}
                    node = node[part]
            else:
                errors.append(Error(".".join(parts[:depth]), f"is a {type(node).__name__}, it has no key {part!r}"))
                break
    return data, errors


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """`data` with each ``dotted.key=value`` set; values are parsed as YAML scalars or lists.

    List items are addressed by index (``adapters.0.options.width=192``). Keys that do not exist
    are set anyway and reported by :func:`validate`, with the closest known key.

    Example:
        >>> apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=3e-4", "data.frames=16"])
        {'optim': {'lr': 0.0003}, 'data': {'frames': 16}}
    """
    data, errors = _apply_overrides(data, overrides)
    if errors:
        raise RecipeError(errors, source="overrides")
    return data


def load_recipe_dict(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, str]:
    """The merged raw mapping of a recipe (bases and overrides applied, not validated) and its name.

    Example:
        >>> data, name = load_recipe_dict("m2clip_k400", ["seed=3"])
        >>> data["seed"], name
        (3, 'm2clip_k400')
    """
    path = resolve_recipe_path(name_or_path)
    return apply_overrides(_load_with_bases(path), list(overrides)), path.stem


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, merge, override and validate a recipe; raise :class:`RecipeError` listing every error.

    Args:
        name_or_path: a YAML file or the name of a built-in recipe (``clipadapt ls recipes``).
        overrides: ``dotted.key=value`` strings applied after inheritance.

    Example:
        >>> load_recipe("m2clip_k400", ["data.frames=16"]).data.frames
        16
    """
    path = resolve_recipe_path(name_or_path)
    data, errors = _apply_overrides(_load_with_bases(path), list(overrides))
    errors += validate(data)
    name = path.stem
    if errors:
        raise RecipeError(errors, source=str(name_or_path))
    return from_dict(data, name=name, validated=True)


def to_yaml(recipe: Recipe) -> str:
    """The recipe as YAML text (stored in checkpoints and run folders).

    Example:
        >>> "optim:" in to_yaml(load_recipe("m2clip_k400"))
        True
    """
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------
# Validation


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


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list (each {_describe(args[0])})" if args else "a list"
    if hint is dict or origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _got(value: Any) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"got {shown} ({type(value).__name__})"


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` has the shape of `hint` (no recursion into dataclasses)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if hint is dict or origin is dict or dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _coerce_number(value: Any, hint: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept such strings where a number goes."""
    accepts_float = hint is float or float in get_args(hint)
    if accepts_float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_value(value: Any, hint: Any, path: str, meta: dict, errors: list[Error]) -> Any:
    value = _coerce_number(value, hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            errors.append(Error(path, f"expected a mapping with keys {', '.join(_field_names(hint))}, {_got(value)}"))
            return value
        return _check_mapping(value, hint, path, errors)
    origin, args = get_origin(hint), get_args(hint)
    list_arms = [a for a in args if get_origin(a) is list] if origin in (Union, types.UnionType) else []
    if isinstance(value, list) and list_arms:  # e.g. layers: "all" | int | list[int] given a list
        hint, origin, args = list_arms[0], list, get_args(list_arms[0])
    list_item = args[0] if origin is list else None
    if origin is list and dataclasses.is_dataclass(list_item):
        if not isinstance(value, list):
            errors.append(Error(path, f"expected a list of mappings, {_got(value)}"))
            return value
        return [_check_value(item, list_item, _join(path, i), {}, errors) for i, item in enumerate(value)]
    if origin is list and isinstance(value, list):
        value = [_check_value(item, list_item, _join(path, i), {}, errors) for i, item in enumerate(value)]
        if "length" in meta and len(value) != meta["length"]:
            errors.append(Error(path, f"expected {meta['length']} items, got {len(value)}"))
        if meta.get("nonempty") and not value:
            errors.append(Error(path, "must list at least one item"))
        return value
    if not _matches(value, hint):
        literal = [a for a in (args if origin in (Union, types.UnionType) else (hint,)) if get_origin(a) is Literal]
        choices = [c for lit in literal for c in get_args(lit)]
        hint_text = _did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) and choices else ""
        errors.append(Error(path, f"expected {_describe(hint)}, {_got(value)}" + (f"; {hint_text}" if hint_text else "")))
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            errors.append(Error(path, f"must be at least {meta['min']}, got {value}"))
        if "max" in meta and value > meta["max"]:
            errors.append(Error(path, f"must be at most {meta['max']}, got {value}"))
    return value


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _check_mapping(data: dict, cls, path: str, errors: list[Error]) -> dict:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    checked = {}
    for key, value in data.items():
        if key not in fields:
            hint = _did_you_mean(key, list(fields), " ")
            errors.append(Error(_join(path, key), f"unknown key; {hint}accepted: {', '.join(fields)}"))
            continue
        checked[key] = _check_value(value, hints[key], _join(path, key), dict(fields[key].metadata), errors)
    for name, spec in fields.items():
        if spec.metadata.get("required") and name not in data:
            errors.append(Error(_join(path, name), f"required ({_describe(hints[name])})"))
    return checked


def _import_plugins(plugins: Any, errors: list[Error]) -> None:
    if not isinstance(plugins, list):
        return
    for i, module in enumerate(plugins):
        if not isinstance(module, str):
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            errors.append(Error(f"plugins.{i}", f"cannot import plugin module {module!r}: {error}"))


def _registries() -> dict:
    """Registries to check names against; heads stay unchecked while none are registered."""
    import clipadapt

    try:
        import clipadapt.heads  # noqa: F401  (registers the built-in heads)
    except ModuleNotFoundError as error:
        if error.name not in ("clipadapt.heads",):
            raise
    registries = {"adapters": clipadapt.ADAPTERS}
    if len(clipadapt.HEADS):
        registries["heads"] = clipadapt.HEADS
    return registries


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


def _adapter_options(adapter_cls) -> set[str] | None:
    from clipadapt.inject import Adapter

    build = getattr(adapter_cls, "build", None)
    if build is not None and getattr(build, "__func__", None) is not Adapter.build.__func__:
        accepted = _accepted_kwargs(build)
    else:
        accepted = _accepted_kwargs(adapter_cls.__init__)
    return None if accepted is None else accepted - {"self", "dim", "site", "tower", "layer"}


def _check_components(checked: dict, errors: list[Error]) -> None:
    from clipadapt.inject import SITES

    registries = _registries()
    for section, registry in registries.items():
        entries = checked.get(section)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                continue
            if name not in registry:
                errors.append(Error(f"{section}.{i}.name", registry.unknown_message(name)))
                continue
            options = entry.get("options")
            if section == "adapters" and isinstance(options, dict):
                _check_kwargs(options, _adapter_options(registry.get(name)), f"{section}.{i}.options", f"adapter {name!r}", errors)
    evaluation = checked.get("eval")
    fuse_heads = evaluation.get("fuse_heads") if isinstance(evaluation, dict) else None
    if "heads" in registries and isinstance(fuse_heads, list):
        for i, name in enumerate(fuse_heads):
            if isinstance(name, str) and name not in registries["heads"]:
                errors.append(Error(f"eval.fuse_heads.{i}", registries["heads"].unknown_message(name)))
    adapters = checked.get("adapters")
    for i, entry in enumerate(adapters if isinstance(adapters, list) else []):
        site = entry.get("site") if isinstance(entry, dict) else None
        for one in [site] if isinstance(site, str) else site if isinstance(site, list) else []:
            if isinstance(one, str) and one not in SITES:
                hint = _did_you_mean(one, list(SITES))
                errors.append(Error(f"adapters.{i}.site", f"{one!r} is not a site; accepted: {', '.join(SITES)} or null" + (f"; {hint}" if hint else "")))


def _check_paths(checked: dict, errors: list[Error]) -> None:
    data = checked.get("data")
    if isinstance(data, dict):
        for f in dataclasses.fields(DataCfg):
            value = data.get(f.name)
            if f.name == "root" and data.get("dataset") == "synthetic":
                continue  # where the synthetic data will be written
            if f.metadata.get("path") and isinstance(value, str) and not Path(value).exists():
                errors.append(Error(f"data.{f.name}", f"{value!r} does not exist"))
        synthetic = data.get("synthetic")
        if isinstance(synthetic, dict) and synthetic:
            from clipadapt.data.synthetic import generate

            accepted = _accepted_kwargs(generate)
            _check_kwargs(synthetic, None if accepted is None else accepted - {"out_dir"}, "data.synthetic", "clipadapt.data.synthetic.generate", errors)
    resume = checked.get("resume")
    if isinstance(resume, str) and resume != "auto" and not Path(resume).is_file():
        errors.append(Error("resume", f"checkpoint {resume!r} does not exist; accepted: auto, null or a checkpoint file"))
    model = checked.get("model")
    weights = model.get("weights") if isinstance(model, dict) else None
    if isinstance(weights, str) and ("/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))):
        if not Path(weights).is_file():
            errors.append(Error("model.weights", f"weights file {weights!r} does not exist; accepted: null, a pretrained tag or a file"))


def _check_consistency(checked: dict, errors: list[Error]) -> None:
    schedule = checked.get("schedule")
    if isinstance(schedule, dict):
        warmup, epochs = schedule.get("warmup_epochs", 2), schedule.get("epochs", 12)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (warmup, epochs)) and warmup > epochs:
            errors.append(Error("schedule.warmup_epochs", f"warm-up ({warmup}) is longer than the run ({epochs} epochs)"))
    data = checked.get("data")
    if isinstance(data, dict):
        batch, accumulate = data.get("batch_size", 72), data.get("accumulate", 1)
        if isinstance(batch, int) and isinstance(accumulate, int) and accumulate > 0 and batch % accumulate:
            errors.append(Error("data.accumulate", f"batch_size {batch} is not divisible by accumulate {accumulate}"))


def validate(cfg: dict | Recipe) -> list[Error]:
    """Every error of a recipe mapping, each with its key path and what is accepted (empty: valid).

    Imports the recipe's ``plugins`` first, so the names they register are known.

    Example:
        >>> errors = validate({"adapters": [{"name": "ted", "sitee": "pre_mlp"}], "heads": [{"name": "vc"}], "precision": "bf17"})
        >>> list(map(str, errors))[:2]  # doctest: +NORMALIZE_WHITESPACE
        ["adapters.0.sitee: unknown key; did you mean 'site'? accepted: name, tower, layers, site, options, lr_mult",
         "precision: expected one of 'fp32', 'bf16', 'fp16', got 'bf17' (str); did you mean 'bf16'?"]
    """
    if isinstance(cfg, Recipe):
        cfg = cfg.to_dict()
    if not isinstance(cfg, dict):
        return [Error("", f"a recipe is a mapping of keys, {_got(cfg)}")]
    errors: list[Error] = []
    cfg = {k: v for k, v in cfg.items() if k != "_base_"}
    _import_plugins(cfg.get("plugins"), errors)
    checked = _check_mapping(cfg, Recipe, "", errors)
    _check_components(checked, errors)
    _check_paths(checked, errors)
    _check_consistency(checked, errors)
    return errors


def _build(cls, data: dict):
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        value = _coerce_number(value, hint)
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value)
        elif get_origin(hint) is list and dataclasses.is_dataclass(get_args(hint)[0]):
            value = [_build(get_args(hint)[0], item) for item in value]
        elif get_origin(hint) is list and isinstance(value, list):
            value = [_coerce_number(v, get_args(hint)[0]) for v in value]
        if hint is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


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
    recipe = _build(Recipe, data)
    recipe.name = name
    recipe.output_dir = recipe.output_dir.replace("${name}", name)
    return recipe


def require_data(recipe: Recipe, splits: tuple[str, ...] = ("train", "val")) -> None:
    """Raise :class:`RecipeError` naming every data path a run needs but the recipe leaves null.

    Example:
        >>> require_data(from_dict({"adapters": [], "heads": [{"name": "vc"}], "data": {"dataset": "synthetic"}}))
    """
    data = recipe.data
    if data.dataset == "synthetic":
        return
    if data.dataset in OFFICIAL_SPLITS:  # official annotation folders name every split
        needed = ["root", "annotations"]
    else:
        needed = (["root"] if data.dataset == "k400" else []) + [f"{split}_list" for split in splits]
    errors = [
        Error(f"data.{key}", f"a {data.dataset!r} run needs this path; set it in the recipe or as data.{key}=PATH")
        for key in needed
        if getattr(data, key) is None
    ]
    if errors:
        raise RecipeError(errors, source=recipe.name)
