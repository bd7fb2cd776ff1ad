"""The checks of a recipe mapping beyond its types: registered names, component options, files,
shapes nothing could hold, keys that do not fit together, and the import of its plugins.

They run on the raw mapping (after :mod:`clipadapt.recipes`'s schema pass, whatever it found), so every
error of a recipe is reported at once.

Example:
    >>> errors = []
    >>> check_beyond_types({"adapters": [{"name": "tedd"}], "heads": [{"name": "vc"}]}, False, errors, [])
    >>> [e.path for e in errors]
    ['adapters.0.name']
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipadapt.recipes.files import Error

__all__ = ["check_beyond_types", "import_plugins", "registries", "component_options", "dataset_source",
           "estimate_parameters", "MAX_OPTION_INT", "MAX_MODEL_PARAMETERS", "MAX_BATCH_BYTES"]

MAX_OPTION_INT = 1 << 19  # no width, size or vocabulary of a CLIP comes near this
MAX_MODEL_PARAMETERS = 5e9  # what model.config may ask for (ViT-bigG/14 has 2.5e9)
MAX_BATCH_BYTES = 64 << 30  # one micro-batch of float32 clips



# ----------------------------------------------------------------------------------------------
# Words


def closest(name: Any, candidates: list[str]) -> str | None:
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


def did_you_mean(name: Any, candidates: list[str], end: str = "") -> str:
    close = closest(name, candidates)
    return f"did you mean {close!r}?{end}" if close else ""


def got(value: Any) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"got {shown} ({type(value).__name__})"


def value_at(data: Any, parts: list) -> Any:
    for part in parts:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and -len(data) <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


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
    """The registries recipe names are looked up in (each knows its built-in names and imports
    their modules on first use of an entry)."""
    from clipadapt import registry

    return {"adapters": registry.ADAPTERS, "heads": registry.HEADS, "datasets": registry.DATASETS,
            "poolings": registry.POOLINGS, "transforms": registry.TRANSFORMS, "optimizers": registry.OPTIMIZERS,
            "precisions": registry.PRECISIONS, "backbones": registry.BACKBONES}


NAMED_FIELDS = (("model.family", "backbones"), ("video.pooling", "poolings"), ("data.dataset", "datasets"), ("data.train_aug", "transforms"),
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
            hint = did_you_mean(key, sorted(accepted), " ")
            errors.append(Error(join(path, key), f"not an option of {what}; {hint}accepted: {', '.join(sorted(accepted)) or '(none)'}"))


def component_options(cls, kind: str) -> set[str] | None:
    """The option names a registered adapter or head accepts (None: any): for an adapter,
    `clipadapt.inject.adapter_options`; for a head, its classmethod ``accepted_options()`` or
    else its ``__init__`` signature without the model the decoder passes itself."""
    if kind == "adapters":
        from clipadapt.inject import adapter_options

        return adapter_options(cls)
    declared = getattr(cls, "accepted_options", None)
    if callable(declared):
        accepted = declared()
        return None if accepted is None else set(accepted)
    accepted = _accepted_kwargs(cls.__init__)
    return None if accepted is None else accepted - {"self", "model"}


def _large_ints(node: Any, path: str, limit: int = MAX_OPTION_INT):
    """(path, value) of every integer in `node` beyond `limit` (a width or size no model has)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _large_ints(value, join(path, key), limit)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _large_ints(value, join(path, i), limit)
    elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > limit:
        yield path, node


def check_names(cfg: dict, plugins_skipped: bool, errors: list[Error], skipped: list[str]) -> None:
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
                component = known[section].get(name)
                _check_kwargs(options, component_options(component, section), f"{section}.{i}.options", what, errors)
                for key, choices in getattr(component, "option_choices", {}).items():
                    value = options.get(key)
                    if value is not None and value not in choices:
                        hint = did_you_mean(value, list(choices))
                        errors.append(Error(f"{section}.{i}.options.{key}", f"{value!r} is not one of {', '.join(choices)}"
                                            + (f"; {hint}" if hint else "")))
                for path, value in _large_ints(options, f"{section}.{i}.options"):
                    errors.append(Error(path, f"{value} is beyond any model's sizes (at most {MAX_OPTION_INT})"))
            site = entry.get("site")
            for one in [site] if isinstance(site, str) else site if isinstance(site, list) else []:
                if isinstance(one, str) and one not in SITES:
                    hint = did_you_mean(one, list(SITES))
                    errors.append(Error(f"{section}.{i}.site", f"{one!r} is not a site; accepted: {', '.join(SITES)} or null" + (f"; {hint}" if hint else "")))
    for path, kind in NAMED_FIELDS:
        value = value_at(cfg, path.split("."))
        if isinstance(value, str) and value not in known[kind]:
            unknown(path, kind, value)
    check_text_tower(cfg, known, errors)
    fuse_heads = value_at(cfg, ["eval", "fuse_heads"])
    for i, name in enumerate(fuse_heads if isinstance(fuse_heads, list) else []):
        if isinstance(name, str) and name not in known["heads"]:
            unknown(f"eval.fuse_heads.{i}", "heads", name)


def check_text_tower(cfg: dict, known: dict, errors: list[Error]) -> None:
    """On a family without a text tower (timm), text adapters and heads that need text are errors."""
    from clipadapt.heads.base import TEXT_NEEDS

    family = value_at(cfg, ["model", "family"])
    if not isinstance(family, str) or family not in known["backbones"]:
        return
    if known["backbones"].get(family).has_text():
        return
    visual_heads = ", ".join(name for name, head in known["heads"].items() if not set(getattr(head, "needs", ())) & TEXT_NEEDS)
    def entries(section: str):
        listed = cfg.get(section)
        return [(i, e) for i, e in enumerate(listed if isinstance(listed, list) else []) if isinstance(e, dict)]

    for i, entry in entries("adapters"):
        if entry.get("tower") == "text":
            errors.append(Error(f"adapters.{i}.tower", f"model.family {family!r} has no text tower; accepted: visual"))
    for i, entry in entries("heads"):
        name = entry.get("name")
        needs = set(getattr(known["heads"].get(name), "needs", ())) & TEXT_NEEDS if isinstance(name, str) and name in known["heads"] else ()
        if needs:
            errors.append(Error(f"heads.{i}.name", f"head {name!r} needs the text tower ({', '.join(sorted(needs))}), "
                                                   f"which model.family {family!r} lacks; heads without text: {visual_heads}"))


def dataset_source(cfg_or_recipe: Any):
    """The registered :class:`clipadapt.data.recipe.DatasetSource` of a recipe's ``data.dataset``."""
    data = cfg_or_recipe.get("data") if isinstance(cfg_or_recipe, dict) else cfg_or_recipe.data
    name = (data or {}).get("dataset", "list") if isinstance(data, dict) else data.dataset
    return registries()["datasets"].get(name)()


PATH_KEYS = ("root", "train_list", "val_list", "test_list", "label_map", "annotations")


def check_paths(cfg: dict, errors: list[Error]) -> None:
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
    _check_init_adapters(cfg, errors)
    weights = value_at(cfg, ["model", "weights"])
    if isinstance(weights, str) and ("/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))):
        if not Path(weights).is_file():
            errors.append(Error("model.weights", f"weights file {weights!r} does not exist; accepted: null, a pretrained tag or a file"))


def _check_init_adapters(cfg: dict, errors: list[Error]) -> None:
    """``model.init_adapters``: each file exists and is an adapter file; the sets they load are
    named apart from each other and from the recipe's own adapters (the ``default`` set)."""
    entries = value_at(cfg, ["model", "init_adapters"])
    if not isinstance(entries, list):
        return
    from clipadapt.saving import read_metadata

    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue
        where = f"model.init_adapters.{i}"
        try:
            specs = read_metadata(entry["path"])["injections"]
        except (OSError, ValueError) as error:
            errors.append(Error(f"{where}.path", str(error).splitlines()[0]))
            continue
        names = [entry["adapter_set"]] if isinstance(entry.get("adapter_set"), str) else \
            list(dict.fromkeys(s.get("adapter_set", "default") for s in specs if isinstance(s, dict)))
        for name in names:
            if name == "default" and cfg.get("adapters"):
                errors.append(Error(f"{where}.adapter_set", f"{entry['path']} loads as set 'default', which the recipe's adapters "
                                    "use; give the entry an adapter_set name"))
            elif name in seen:
                errors.append(Error(f"{where}.adapter_set", f"set {name!r} is loaded by model.init_adapters.{seen[name]} too; "
                                    "give each entry its own adapter_set"))
            seen.setdefault(name, i)


def estimate_parameters(config: Any) -> int:
    """A rough upper estimate of the parameters a ``model.config`` asks for: 12·width²·layers per
    transformer (attention and a 4× MLP) plus vocabulary × width, found at any depth under the
    keys open_clip, Hugging Face and timm use, and the family-neutral ``text_width``/``text_layers``.

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
        text_width, text_layers = number("text_width"), number("text_layers")
        total += 12 * width * width * layers + 12 * text_width * text_width * text_layers + number("vocab_size") * max(width, text_width)
        total += sum(estimate_parameters(value) for value in config.values() if isinstance(value, (dict, list)))
    elif isinstance(config, list):
        total += sum(estimate_parameters(value) for value in config)
    return total


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def check_shapes(cfg: dict, errors: list[Error], bad: set[str]) -> None:
    """Refuse what would allocate absurd amounts before anything is built (`bad`: keys already in error)."""
    config = value_at(cfg, ["model", "config"])
    if isinstance(config, dict):
        for path, value in _large_ints(config, "model.config"):
            errors.append(Error(path, f"{value} is beyond any CLIP's sizes (at most {MAX_OPTION_INT})"))
        estimate = estimate_parameters(config)
        if estimate > MAX_MODEL_PARAMETERS:
            errors.append(Error("model.config", f"asks for about {estimate:.2g} parameters; at most {MAX_MODEL_PARAMETERS:.0g}"))
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    batch, accumulate, frames, size = (data.get(k, d) for k, d in (("batch_size", 72), ("accumulate", 1), ("frames", 8), ("size", 224)))
    size = 224 if size is None else size  # null: the model's own side, which CLIP's 224 stands in for here
    involved = {"data", "data.batch_size", "data.accumulate", "data.frames", "data.size"}
    if all(_is_int(v) and v > 0 for v in (batch, accumulate, frames, size)) and not involved & bad:
        step_bytes = -(-batch // accumulate) * frames * 3 * size * size * 4
        if step_bytes > MAX_BATCH_BYTES:
            errors.append(Error("data.batch_size", f"one step's clips would take {step_bytes / 2**30:.0f} GiB "
                                f"(batch_size/accumulate × frames × 3 × size² × 4 bytes); at most {MAX_BATCH_BYTES >> 30} GiB"))


def check_consistency(cfg: dict, errors: list[Error], bad: set[str]) -> None:
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
    reported = value_at(cfg, ["eval", "heads"])
    for i, name in enumerate(reported if isinstance(reported, list) else []):
        if isinstance(name, str) and name not in (*names, "fused"):
            errors.append(Error(f"eval.heads.{i}", f"{name!r} is not a head of this recipe; accepted: {', '.join(map(str, names))}, fused"
                                + (f"; {did_you_mean(name, [*map(str, names), 'fused'])}" if closest(name, [*map(str, names), "fused"]) else "")))
    if not {"model", "model.precision_frozen", "precision"} & bad:
        _check_precision(cfg, errors)


def _check_precision(cfg: dict, errors: list[Error]) -> None:
    """``model.precision_frozen`` runs under the autocast of ``precision``, in the same dtype."""
    frozen, precision = value_at(cfg, ["model", "precision_frozen"]), cfg.get("precision", "bf16")
    if isinstance(frozen, str) and isinstance(precision, str) and frozen != precision:
        errors.append(Error("model.precision_frozen", f"frozen weights in {frozen} need precision: {frozen} (its autocast "
                            f"runs every layer in {frozen}); got precision {precision}. Accepted: precision_frozen null, "
                            f"or equal to precision (bf16 or fp16)"))


def check_beyond_types(cfg: dict, plugins_skipped: bool, errors: list[Error], skipped: list[str]) -> None:
    """Append to `errors` what is wrong with `cfg` beyond its types; with `plugins_skipped`, names only
    a plugin could register are described in `skipped` instead."""
    check_names(cfg, plugins_skipped, errors, skipped)
    check_paths(cfg, errors)
    bad = {e.path for e in errors}
    check_shapes(cfg, errors, bad)
    check_consistency(cfg, errors, bad)
