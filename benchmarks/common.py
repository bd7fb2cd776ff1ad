"""Shared helpers of the benchmark scripts: timing, peak memory, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of each ``runs[name]()`` over `repeats` rounds, one call of each per round (so
    drifts of a shared machine hit all alike), after one untimed warm-up call of each."""
    for fn in runs.values():
        fn()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_table(title: str, first: str, medians: dict[str, float], reference: str, unit: str = "s"):
    """A rich table of median times (in `unit`: ``s`` or ``ms``) and their ratio to ``medians[reference]``."""
    from rich.table import Table

    table = Table(title=title)
    for column in (first, f"{unit} (median)", f"× {reference}"):
        table.add_column(column)
    scale = 1e3 if unit == "ms" else 1.0
    for name, value in medians.items():
        table.add_row(name, f"{value * scale:.3f}", f"{value / medians[reference]:.3f}")
    return table


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak resident memory above the level at entry while the block runs, sampled every 2 ms.

    Example:
        >>> with PeakMemory() as peak:
        ...     run()
        >>> peak.mb
    """

    def __enter__(self):
        import threading

        self.base = self.peak = rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self.peak = max(self.peak, rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        return False

    @property
    def mb(self) -> float:
        return self.peak - self.base


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_json(name: str, payload: dict, out: str | os.PathLike | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**payload, "machine": machine()}, indent=2))
    return path
