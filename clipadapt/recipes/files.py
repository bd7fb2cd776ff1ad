"""Recipe files: bounded YAML reading, ``_base_`` inheritance (with ``_delete_``) and ``key=value``
overrides. What comes out is a plain mapping; :mod:`clipadapt.recipes` checks it against the schema.

YAML is read with PyYAML's safe loader, and before a document is built its size with every alias
expanded is counted: a few bytes of nested aliases (a "billion laughs" document) are refused with
one line instead of filling the memory of whatever walks the result.

Example:
    >>> from clipadapt.recipes.files import load_yaml
    >>> load_yaml("a: &x [1, 2]\\nb: *x\\n")
    {'a': [1, 2], 'b': [1, 2]}
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Error",
    "RecipeError",
    "MAX_RECIPE_BYTES",
    "MAX_YAML_NODES",
    "load_yaml",
    "read_yaml_file",
    "builtin_recipes",
    "resolve_recipe_path",
    "merge",
    "apply_overrides",
    "apply_overrides_collecting",
    "load_with_bases",
]

RECIPES_DIR = Path(__file__).parent  # the built-in recipes lie beside this code
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of YAML; 1 MiB is generous
MAX_YAML_NODES = 100_000  # scalars, sequences and mappings after alias expansion
DELETE = "_delete_"  # in a child's mapping: replace the base's mapping instead of merging into it


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
        ...     load_yaml("[1, 2", source="inline")
        ... except RecipeError as error:
        ...     print(error.errors[0].message.split(":")[0])
        not valid YAML
    """

    def __init__(self, errors: list[Error], source: str = "recipe"):
        self.errors = list(errors)
        self.source = source
        lines = [f"{source}: {len(self.errors)} error(s)"] + [str(e) for e in self.errors]
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Bounded YAML


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes of the document with aliases expanded (a shared node counts once per use), computed
    once per distinct node; raises ValueError past `limit` or on a node that contains itself."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes and not children_done:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            sizes[key] = 1
            continue
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > limit:
                raise ValueError(f"expands to more than {limit} nodes (nested aliases?); refused before building it")
            continue
        if key in on_path:
            raise ValueError("an alias refers to a node that contains it (a recursive document)")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise ValueError("an alias refers to a node that contains it (a recursive document)")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def load_yaml(text: str, source: str = "recipe", limit: int = MAX_YAML_NODES) -> Any:
    """``yaml.safe_load(text)``, refusing documents whose alias expansion exceeds `limit` nodes.

    Example:
        >>> bomb = "a: &a [x, x]\\n" + "".join(f"{c}: &{c} [*{p}, *{p}]\\n" for p, c in zip("abcdefghijklmnopqrs", "bcdefghijklmnopqrst"))
        >>> load_yaml(bomb)
        Traceback (most recent call last):
        ...
        clipadapt.recipes.files.RecipeError: recipe: 1 error(s)
        <recipe>: not a recipe: expands to more than 100000 nodes (nested aliases?); refused before building it
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _expanded_size(node, limit)
            return loader.construct_document(node)
        except yaml.YAMLError as error:
            raise RecipeError([Error("", f"not valid YAML: {' '.join(str(error).split())}")], source=source) from None
        except ValueError as error:
            raise RecipeError([Error("", f"not a recipe: {error}")], source=source) from None
        except RecursionError:
            raise RecipeError([Error("", "not a recipe: nested too deeply")], source=source) from None
    finally:
        loader.dispose()


def read_yaml_file(path: Path, what: str = "recipe") -> Any:
    """The YAML document of a file of at most :data:`MAX_RECIPE_BYTES`; a binary, oversized or
    unreadable file is a one-line :class:`RecipeError` naming it."""

    def refuse(message: str) -> RecipeError:
        return RecipeError([Error("", message)], source=str(path))

    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_RECIPE_BYTES + 1)
    except OSError as error:
        raise refuse(f"cannot read this {what}: {error.strerror or error}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise refuse(f"larger than {MAX_RECIPE_BYTES // 1024} KiB; a {what} is a short YAML file")
    if b"\0" in raw:
        raise refuse(f"a binary file, not a YAML {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse(f"not UTF-8 text; a {what} is a YAML file") from None
    return load_yaml(text, source=str(path))


# ----------------------------------------------------------------------------------------------
# Files and inheritance


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
    candidate = Path(text) if relative_to is None else relative_to / text
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


def merge(base: Any, child: Any) -> Any:
    """`child` over `base`: mappings merge key by key, anything else in `child` (lists included)
    replaces `base`. A child mapping that is empty, or that holds ``_delete_: true``, replaces the
    base's mapping instead of merging into it (mmengine's convention).

    Example:
        >>> merge({"compare": {"a": [], "b": []}, "optim": {"lr": 1, "eps": 2}}, {"compare": {}, "optim": {"lr": 3}})
        {'compare': {}, 'optim': {'lr': 3, 'eps': 2}}
        >>> merge({"options": {"width": 8, "init": "zero"}}, {"options": {"_delete_": True, "width": 4}})
        {'options': {'width': 4}}
    """
    if isinstance(base, dict) and isinstance(child, dict):
        if not child or child.get(DELETE) is True:
            return strip_delete(child)
        merged = dict(base)
        for key, value in child.items():
            if key != DELETE:
                merged[key] = merge(base[key], value) if key in base else strip_delete(value)
        return merged
    return strip_delete(child)


def strip_delete(node: Any) -> Any:
    """`node` without ``_delete_: true`` markers (at every depth), which only steer :func:`merge`."""
    if isinstance(node, dict):
        return {k: strip_delete(v) for k, v in node.items() if not (k == DELETE and v is True)}
    if isinstance(node, list):
        return [strip_delete(v) for v in node]
    return node


def load_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The mapping of recipe file `path` with its ``_base_`` chain merged in (see :func:`merge`)."""
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise RecipeError([Error("_base_", f"inheritance cycle: {cycle}")], source=str(chain[0]))
    data = read_yaml_file(path, "recipe" if not chain else "_base_ recipe")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([Error("", f"a recipe is a mapping of keys, got {type(data).__name__}")], source=str(path))
    if data.get(DELETE) is not None:
        raise RecipeError([Error(DELETE, "goes inside a mapping to replace the base's; to start afresh, drop _base_")], source=str(path))
    bases = data.pop("_base_", None)
    if bases is None:
        return strip_delete(data)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError([Error("_base_", f"expected a file or recipe name (or a list of them), got {bases!r}")], source=str(path))
    merged: dict = {}
    for base in bases:
        merged = merge(merged, load_with_bases(resolve_recipe_path(base, path.parent), (*chain, path)))
    return merge(merged, data)


# ----------------------------------------------------------------------------------------------
# Overrides


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise RecipeError([Error(text, "an override is key=value with a dotted key, e.g. optim.lr=3e-4")], source="overrides")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError([Error(key, f"override {text!r} needs a dotted key such as data.frames")], source="overrides")
    try:
        value = load_yaml(raw, source=key) if raw.strip() else None
    except RecipeError as error:
        if not error.errors[0].message.startswith("not valid YAML"):
            raise RecipeError([Error(key, error.errors[0].message)], source="overrides") from None
        value = raw  # not YAML: keep the text as a string
    return key.split("."), value


def apply_overrides_collecting(data: dict, overrides: list[str] | tuple[str, ...]) -> tuple[dict, list[Error]]:
    """:func:`apply_overrides` that returns the overrides' errors instead of raising them."""
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
    are set anyway and reported by :func:`clipadapt.recipes.validate`, with the closest known key.

    Example:
        >>> apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=3.0e-4", "data.frames=16"])
        {'optim': {'lr': 0.0003}, 'data': {'frames': 16}}
    """
    data, errors = apply_overrides_collecting(data, overrides)
    if errors:
        raise RecipeError(errors, source="overrides")
    return data
