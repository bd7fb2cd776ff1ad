"""Printing for people and for logs: a table is printed whole, never cut at 80 columns.

On a terminal rich fits a table to the window. Into a pipe or a file (a log, CI) rich assumes 80
columns and shortens cells to ``fused/t…``; `print_table` prints there at the table's own width,
so every value is written in full.
"""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement

WIDEST = 1 << 14  # columns: wider than any table clipadapt prints


def print_table(table, console: Console | None = None) -> None:
    """Print `table` (any rich renderable) with `console`: fitted to a terminal, whole elsewhere.

    Example:
        >>> from rich.table import Table
        >>> table = Table("epoch", "fused/top1 (a long header)"); table.add_row("1", "92.19")
        >>> print_table(table)   # doctest: +SKIP
    """
    console = console or Console()
    if console.is_terminal:
        console.print(table)
        return
    needed = Measurement.get(console, console.options.update_width(WIDEST), table).maximum
    if needed <= console.width:
        console.print(table)
        return
    Console(file=console.file, width=needed, color_system=None, highlight=False).print(table)
