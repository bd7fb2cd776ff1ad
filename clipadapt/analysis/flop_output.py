"""The FLOPs report for people and files: a rich table, JSON, a bar chart, and the CLI's `flops_command`."""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn
from rich import box
from rich.console import Console
from rich.table import Table

from clipadapt.analysis.flop_report import FlopsReport, flops_report


def print_report(report: FlopsReport, console: Console | None = None) -> None:
    """Print the report as a rich table (one row per component), then the totals and the convention.

    Example:
        >>> print_report(flops_report(clip, num_frames=8))
    """
    table = Table(title=f"{report.model}: one view = {report.num_frames} frames at {report.image_size} px",
                  box=box.SIMPLE_HEAD)
    table.add_column("component", no_wrap=True)
    for column in ("GFLOPs\nper view", "%", "GFLOPs\nper prompt", "params\n(M)", "trainable\n(M)"):
        table.add_column(column, justify="right")
    for c in report.components:
        share = 100 * c.flops_per_view / report.flops_per_view if report.flops_per_view else 0.0
        table.add_row(
            c.name,
            f"{c.gflops_per_view:.2f}" if c.flops_per_view else "",
            f"{share:.1f}" if c.flops_per_view else "",
            f"{c.gflops_per_prompt:.3f}" if c.flops_per_prompt else "",
            f"{c.params / 1e6:.3f}",
            f"{c.trainable_params / 1e6:.3f}",
        )
    table.add_section()
    table.add_row("total", f"{report.gflops_per_view:.2f}", "100", f"{report.text_gflops_per_prompt:.3f}",
                  f"{report.total_params / 1e6:.3f}", f"{report.trainable_params / 1e6:.3f}")
    lines = [
        f"parameters: {report.trainable_params:,} trainable of {report.total_params:,}",
        f"per view: {report.gflops_per_view:.2f} GFLOPs ({report.gflops_per_frame:.2f} per frame); "
        f"x {report.views} views = {report.gflops_all_views:.1f} GFLOPs per video",
    ]
    if report.context_length:
        lines.append(
            f"text: {report.text_gflops_per_prompt:.3f} GFLOPs per prompt of {report.context_length} tokens; "
            f"x {report.num_classes} classes = {report.text_gflops_all_classes:.1f} GFLOPs, once (cacheable)"
        )
    lines += [
        f"unsupported ops: {_ops(report.unsupported_ops) or 'none'}",
        f"ignored (elementwise, zero FLOPs): {', '.join(op.removeprefix('aten::') for op in report.ignored_ops) or 'none'}",
        f"convention: {report.convention}",
    ]
    console = console or Console()
    console.print(table)
    console.print("\n".join(lines), highlight=False)


def _ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in ops.items())


def save_json(report: FlopsReport, path: str | Path) -> Path:
    """Write the report (every field and derived number) to `path` as JSON; returns the path.

    Example:
        >>> save_json(report, "flops.json")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def plot_report(report: FlopsReport, path: str | Path) -> Path:
    """Draw where the FLOPs and parameters go (horizontal bars, one PNG); returns the path.

    Example:
        >>> plot_report(report, "flops.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name for c in report.components]
    rows = range(len(names))
    figure, (ax_flops, ax_params) = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.8), sharey=True)
    ax_flops.barh(rows, [c.gflops_per_view for c in report.components], color="tab:blue", label="per view")
    ax_flops.barh(rows, [c.gflops_per_prompt for c in report.components], color="tab:orange", label="per prompt (text)")
    ax_flops.set_xlabel("GFLOPs (1 multiply-add = 1 FLOP)")
    ax_flops.set_title(f"{report.gflops_per_view:.1f} GFLOPs per view, {report.num_frames} frames")
    ax_flops.legend(loc="lower right")
    frozen = [c.params - c.trainable_params for c in report.components]
    ax_params.barh(rows, [p / 1e6 for p in frozen], color="tab:gray", label="frozen")
    ax_params.barh(rows, [c.trainable_params / 1e6 for c in report.components], left=[p / 1e6 for p in frozen],
                   color="tab:green", label="trainable")
    ax_params.set_xlabel("parameters (M)")
    ax_params.set_title(f"{report.trainable_params / 1e6:.2f}M trainable of {report.total_params / 1e6:.1f}M")
    ax_params.legend(loc="lower right")
    ax_flops.set_yticks(list(rows), names)
    ax_flops.invert_yaxis()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def flops_command(
    model: nn.Module,
    *,
    frames: int = 8,
    views: int = 1,
    num_classes: int = 0,
    image_size: int | None = None,
    context_length: int | None = None,
    json_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    console: Console | None = None,
) -> FlopsReport:
    """What ``clipadapt flops RECIPE`` runs on the recipe's model: count, print, write JSON and PNG.

    Example:
        >>> flops_command(clip, frames=8, views=12, num_classes=400, json_path="flops.json")
    """
    report = flops_report(model, num_frames=frames, image_size=image_size, views=views,
                          num_classes=num_classes, context_length=context_length)
    console = console or Console()
    print_report(report, console)
    if json_path is not None:
        console.print(f"wrote {save_json(report, json_path)}")
    if plot_path is not None:
        console.print(f"wrote {plot_report(report, plot_path)}")
    return report
