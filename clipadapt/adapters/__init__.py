"""Built-in adapters, one per file. Importing this package registers them."""

from clipadapt.adapters import aim, bottleneck, lora, st, ted  # noqa: F401
from clipadapt.adapters.aim import AIMAdapter
from clipadapt.adapters.bottleneck import Bottleneck, BottleneckAdapter
from clipadapt.adapters.lora import LoRAAdapter
from clipadapt.adapters.st import STAdapter
from clipadapt.adapters.ted import TEDAdapter

__all__ = ["AIMAdapter", "Bottleneck", "BottleneckAdapter", "LoRAAdapter", "STAdapter", "TEDAdapter"]
