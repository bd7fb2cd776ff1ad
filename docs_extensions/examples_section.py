"""A griffe extension for the docs build: read a Google-style ``Example:`` section as griffe's
``Examples:`` section, so that its ``>>>`` lines render as highlighted code (griffe knows only
the plural; the singular would become an admonition whose ``>>>`` Markdown reads as quotes)."""

from __future__ import annotations

import re
from typing import Any

import griffe

EXAMPLE_HEADING = re.compile(r"^Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename every ``Example:`` section heading of a docstring to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = EXAMPLE_HEADING.sub("Examples:", obj.docstring.value)
