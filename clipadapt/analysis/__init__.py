"""Counting what a model costs: parameters (and FLOPs)."""

from clipadapt.analysis.params import summary
from clipadapt.analysis.flops import FlopsReport, flops, flops_command, flops_report, plot_report, print_report, save_json

__all__ = ["summary"]
__all__ += ["FlopsReport", "flops", "flops_command", "flops_report", "plot_report", "print_report", "save_json"]
