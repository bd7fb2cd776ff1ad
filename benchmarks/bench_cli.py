"""How long the command line takes to start: `clipadapt --version`, `--help` and `ls adapters`
against a bare `python -c pass`, side by side in one run (one call of each per round, so drifts
of a shared machine hit all alike). CPU time is the child's user + system time (from
``resource.getrusage(RUSAGE_CHILDREN)``), wall time is measured around the call.
``--baseline DIR`` adds the same commands run from another checkout (rows marked ``(DIR)``).

    python benchmarks/bench_cli.py [--repeats 10] [--baseline ../other-checkout] [--out benchmarks/results/bench_cli.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common import write_json

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "clipadapt --version": ["-m", "clipadapt.cli", "--version"],
    "clipadapt --help": ["-m", "clipadapt.cli", "--help"],
    "clipadapt ls adapters": ["-m", "clipadapt.cli", "ls", "adapters"],
}
REFERENCE = "python -c pass"


def run_once(args: list[str], root: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child ``python *args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, *args], env=env, cwd=root, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to run the same commands from")
    options = parser.parse_args()
    runs = {name: (args, ROOT) for name, args in COMMANDS.items()}
    if options.baseline:
        runs |= {f"{name} ({options.baseline})": (args, options.baseline.resolve())
                 for name, args in COMMANDS.items() if name != REFERENCE}
    for args, root in runs.values():  # warm the file cache
        run_once(args, root)
    cpu = {name: [] for name in runs}
    wall = {name: [] for name in runs}
    for _ in range(options.repeats):
        for name, (args, root) in runs.items():
            used, took = run_once(args, root)
            cpu[name].append(used)
            wall[name].append(took)
    rows = {name: {"cpu_s": statistics.median(cpu[name]), "wall_s": statistics.median(wall[name])} for name in runs}
    for row in rows.values():
        row["cpu_ratio"] = row["cpu_s"] / rows[REFERENCE]["cpu_s"]
        row["wall_ratio"] = row["wall_s"] / rows[REFERENCE]["wall_s"]
    table = Table(title=f"command line start-up, median of {options.repeats} interleaved runs")
    for column in ("command", "CPU s", f"CPU × {REFERENCE}", "wall s", f"wall × {REFERENCE}"):
        table.add_column(column)
    for name, row in rows.items():
        table.add_row(name, f"{row['cpu_s']:.3f}", f"{row['cpu_ratio']:.2f}", f"{row['wall_s']:.3f}", f"{row['wall_ratio']:.2f}")
    Console(width=120).print(table)
    path = write_json("bench_cli", {"repeats": options.repeats, "rows": rows, "load_average": os.getloadavg()}, options.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
