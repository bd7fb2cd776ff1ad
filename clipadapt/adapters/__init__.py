"""Built-in adapters, one per file. Importing this package registers them."""

from clipadapt.adapters import bottleneck, ted  # noqa: F401
from clipadapt.adapters.bottleneck import Bottleneck, BottleneckAdapter
from clipadapt.adapters.ted import TEDAdapter

__all__ = ["Bottleneck", "BottleneckAdapter", "TEDAdapter"]
