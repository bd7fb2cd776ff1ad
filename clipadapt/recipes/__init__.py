"""Recipes, in one folder: the built-in YAML files and the code that reads and checks them.

- ``files.py``: bounded YAML reading, ``_base_`` inheritance and ``key=value`` overrides;
- ``schema.py``: the typed schema (`Recipe` and its sections), validation, loading;
- ``checks.py``: the checks beyond types (registered names, options, files, shapes, plugins);
- ``*.yaml``: the built-in recipes (``clipadapt ls recipes``), shipped inside the package.

A recipe goes one way through them: ``files`` reads it to a mapping, ``schema`` checks its types
and asks ``checks`` for the rest, and the engine receives a validated `Recipe`.

Example:
    >>> from clipadapt.recipes import load_recipe
    >>> recipe = load_recipe("quickstart", ["optim.lr=3e-4"])
    >>> recipe.optim.lr
    0.0003
"""

from clipadapt.recipes.schema import *  # noqa: F401,F403  (the public names of the recipe code)
from clipadapt.recipes.schema import __all__  # noqa: F401
