"""Fixtures shared by the whole suite; the tiny models themselves live in `tiny.py`."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tiny import family, tiny  # noqa: E402,F401  (fixtures)
