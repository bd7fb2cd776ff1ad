"""Fixtures shared by the whole suite; the tiny models themselves live in `tiny.py`.

No test depends on the machine's speed: hypothesis's per-example deadline (200 ms by default)
and its "too slow" health check time the test, not the code, so the suite's profile turns both
off (tests/test_suite_timing.py checks it)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("load_independent", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("load_independent")

from tiny import family, tiny  # noqa: E402,F401  (fixtures)
