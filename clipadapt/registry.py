"""One small generic registry, used for adapters, heads, backbones and every named piece a recipe
picks: datasets, temporal poolings, training transforms, optimisers and precisions.

Example:
    >>> from clipadapt.registry import Registry
    >>> colors = Registry("color")
    >>> @colors.register("red")
    ... class Red: ...
    >>> colors.get("red") is Red
    True
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object table filled through a decorator.

    Args:
        kind: what the registry holds ("adapter", "head", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Decorator registering an object under `name`.

        Registering a taken name is an error unless `override=True`.
        """

        def decorator(obj: T) -> T:
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
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._items)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}; known: {', '.join(known) or '(none)'}.{hint}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def items_in_order(self) -> list[tuple[str, T]]:
        """Items in registration order (backbone detection tries specs in this order)."""
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


ADAPTERS: Registry = Registry("adapter")
HEADS: Registry = Registry("head")
BACKBONES: Registry = Registry("backbone")
DATASETS: Registry = Registry("dataset")
POOLINGS: Registry = Registry("pooling")
TRANSFORMS: Registry = Registry("training transform")
OPTIMIZERS: Registry = Registry("optimiser")
PRECISIONS: Registry = Registry("precision")


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
