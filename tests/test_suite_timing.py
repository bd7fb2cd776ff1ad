"""No test depends on the machine's speed or load: none sleeps to create a condition or reads a
clock to judge a duration (the code under test takes a `clock` a test can drive, as
`Trainer(clock=...)` and `run(clock=...)` do), a test waits for a child process only with the
one hang guard of `hang_guard.py`, and hypothesis neither times examples nor their generation.
Speed is measured in `benchmarks/`, never asserted here."""

import ast
import re
from pathlib import Path

from hypothesis import HealthCheck, settings

TESTS = Path(__file__).parent
TIMING = re.compile(r"\btime\.(sleep|perf_counter|monotonic|time|process_time|thread_time)\b|\bsleep\(|\bfrom time import")
TIMEOUT = re.compile(r"\btimeout\s*=\s*(?!HANG_GUARD_S\b)")


def _test_sources():
    return [path for path in sorted(TESTS.rglob("*.py")) if path != Path(__file__)]


def test_no_test_sleeps_or_reads_a_clock():
    found = [f"{path.relative_to(TESTS)}:{number}: {line.strip()}" for path in _test_sources()
             for number, line in enumerate(path.read_text().splitlines(), 1) if TIMING.search(line)]
    assert found == [], "\n".join(found)


def test_child_processes_are_waited_for_with_the_hang_guard_only():
    found = [f"{path.relative_to(TESTS)}:{number}: {line.strip()}" for path in _test_sources()
             for number, line in enumerate(path.read_text().splitlines(), 1) if TIMEOUT.search(line)]
    assert found == [], "\n".join(found)


def test_hypothesis_neither_times_examples_nor_their_generation():
    assert settings.default.deadline is None and HealthCheck.too_slow in settings.default.suppress_health_check
    overriding = []
    for path in _test_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "settings":
                for keyword in node.keywords:
                    if keyword.arg == "deadline" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is None):
                        overriding.append(f"{path.name}:{node.lineno}: deadline")
                    if keyword.arg == "suppress_health_check" and "too_slow" not in ast.unparse(keyword.value):
                        overriding.append(f"{path.name}:{node.lineno}: suppress_health_check without too_slow")
    assert overriding == []
