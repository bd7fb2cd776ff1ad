"""The former home of the recipe code, kept so ``from clipadapt.config import load_recipe`` works:
everything here is `clipadapt.recipes`."""

from clipadapt.recipes import *  # noqa: F401,F403
from clipadapt.recipes import __all__  # noqa: F401
