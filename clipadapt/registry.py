"""One small generic registry, used for adapters, heads, backbones and every named piece a recipe
picks: datasets, temporal poolings, training transforms, optimisers and precisions.

The entries clipadapt registers itself are known by name before their modules are imported
(those import torch): listing names imports nothing, and the first use of an object imports the
modules of the built-in entries, so they are registered before any plugin, as they always were.

Example:
    >>> from clipadapt.registry import Registry
    >>> colors = Registry("color")
    >>> @colors.register("red")
    ... class Red: ...
    >>> colors.get("red") is Red
    True
"""

from __future__ import annotations

import ast
import difflib
import importlib
from pathlib import Path
from typing import Callable, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")
PACKAGE = Path(__file__).parent


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object table filled through a decorator.

    Args:
        kind: what the registry holds ("adapter", "head", ...), used in error messages.
        builtins: ``{name: module}`` of the entries clipadapt's own modules register, in
            registration order; the names are known at once, the modules imported on first use.
    """

    def __init__(self, kind: str, builtins: Mapping[str, str] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = dict(builtins or {})
        self._loaded = not self._builtins

    @property
    def builtin_modules(self) -> dict[str, str]:
        """``{name: module}`` of the built-in entries, in registration order."""
        return dict(self._builtins)

    def load_builtins(self) -> None:
        """Import the modules of the built-in entries (once); each registers its entries."""
        if self._loaded:
            return
        self._loaded = True  # first: the modules register into this registry while they import
        try:
            for module in dict.fromkeys(self._builtins.values()):
                importlib.import_module(module)
        except BaseException:
            self._loaded = False
            raise
        missing = {name: module for name, module in self._builtins.items() if name not in self._items}
        if missing:
            raise RuntimeError(f"built-in {self.kind}(s) not registered by their modules: {missing}")

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Decorator registering an object under `name`.

        Registering a taken name is an error unless `override=True`. An object from outside
        clipadapt (a plugin) is registered after the built-in entries.
        """

        def decorator(obj: T) -> T:
            if not str(getattr(obj, "__module__", "")).startswith("clipadapt."):
                self.load_builtins()
            if name in self._items and not override and self._items[name] is not obj:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered ({self._items[name]!r}); "
                    "pass override=True to replace it"
                )
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The object registered as `name`; an unknown name lists the known ones and the closest match."""
        if name not in self._items and name in self._builtins:
            self.load_builtins()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}; known: {', '.join(known) or '(none)'}.{hint}"

    def names(self) -> list[str]:
        """The registered names, built-in ones included, sorted; imports nothing."""
        return sorted(self._items.keys() | self._builtins.keys())

    def items(self) -> list[tuple[str, T]]:
        self.load_builtins()
        return sorted(self._items.items())

    def items_in_order(self) -> list[tuple[str, T]]:
        """Items in registration order (backbone detection tries specs in this order)."""
        self.load_builtins()
        return list(self._items.items())

    def summary(self, name: str) -> str:
        """The first line of the docstring of what `name` registers. A built-in entry whose module
        is not imported yet is read from that module's source (the class or function decorated
        with its name), so ``clipadapt ls`` imports nothing.

        Example:
            >>> from clipadapt.registry import ADAPTERS
            >>> ADAPTERS.summary("bottleneck")
            'A Houlsby adapter; the delta is ``up(act(down(x)))``.'
        """
        if name in self._items:
            doc = self._items[name].__doc__
        elif name in self._builtins:
            doc = _registered_docstring(self._builtins[name], name)
        else:
            raise UnknownNameError(self.unknown_message(name))
        lines = (doc or "").strip().splitlines()
        return lines[0] if lines else ""

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._builtins

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def _registered_docstring(module: str, name: str) -> str | None:
    """The docstring of the class or function in clipadapt's `module` whose decorator registers `name`."""
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and decorator.args and getattr(decorator.args[0], "value", None) == name:
                    return ast.get_docstring(node)
    raise LookupError(f"{module} registers no {name!r} with a decorator")


# The built-in entries by the module that registers them (tests/test_registry.py keeps this
# equal to what those modules register).
ADAPTERS: Registry = Registry("adapter", {name: f"clipadapt.adapters.{name}" for name in ("bottleneck", "aim", "lora", "st", "ted")})
HEADS: Registry = Registry("head", {name: f"clipadapt.heads.{name}" for name in ("cmc", "cmlm", "contrastive", "vc")})
BACKBONES: Registry = Registry("backbone", {name: f"clipadapt.backbones.{name}" for name in ("timm", "open_clip", "openai_clip", "hf")})
DATASETS: Registry = Registry("dataset", dict.fromkeys(("list", "k400", "ssv2", "ucf101", "hmdb51", "synthetic"), "clipadapt.data.recipe"))
POOLINGS: Registry = Registry("pooling", dict.fromkeys(("mean", "conv"), "clipadapt.adapters.temporal_pool"))
TRANSFORMS: Registry = Registry("training transform", dict.fromkeys(("k400", "ssv2", "none"), "clipadapt.data.recipe"))
OPTIMIZERS: Registry = Registry("optimiser", {"adamw": "clipadapt.engine.optim"})
PRECISIONS: Registry = Registry("precision", dict.fromkeys(("fp32", "bf16", "fp16"), "clipadapt.engine.precision"))


def register_adapter(name: str, *, override: bool = False):
    """Register an adapter class under `name` so `inject(model, name, ...)` can build it.

    Example:
        >>> import torch.nn as nn, clipadapt
        >>> @clipadapt.register_adapter("zero", override=True)
        ... class Zero(clipadapt.Adapter):
        ...     def forward(self, x, ctx):
        ...         return x * 0
    """
    return ADAPTERS.register(name, override=override)


def register_head(name: str, *, override: bool = False):
    """Register a decoder head class under `name` (see `clipadapt.heads`)."""
    return HEADS.register(name, override=override)


def register_backbone(name: str, *, override: bool = False):
    """Register a backbone spec class under `name` (see `clipadapt.backbones`)."""
    return BACKBONES.register(name, override=override)


def register_dataset(name: str, *, override: bool = False):
    """Register a :class:`clipadapt.data.recipe.DatasetSource` subclass so recipes accept
    ``data.dataset: name`` (see the Recipes page for a whole example)."""
    return DATASETS.register(name, override=override)


def register_pooling(name: str, *, override: bool = False):
    """Register a temporal pooling factory ``(dim, width) -> nn.Module`` for ``video.pooling: name``;
    the module maps per-frame embeddings ``(B, T, E)`` to ``(frames (B, T, E), video (B, E))``."""
    return POOLINGS.register(name, override=override)


def register_transform(name: str, *, override: bool = False):
    """Register a training transform factory ``(size) -> transform | None`` for ``data.train_aug: name``;
    the transform maps a uint8 clip ``(T, 3, H, W)`` and a generator to float ``(T, 3, size, size)``."""
    return TRANSFORMS.register(name, override=override)


def register_optimizer(name: str, *, override: bool = False):
    """Register an optimiser factory ``(param_groups, optim_cfg) -> torch.optim.Optimizer`` for
    ``optim.name: name``; each group already carries its ``lr`` (``optim.lr × lr_mult``)."""
    return OPTIMIZERS.register(name, override=override)
