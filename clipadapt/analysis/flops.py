"""FLOPs per view, per component, counted the way video papers count them.

The public names, gathered from the modules that hold them:

- `clipadapt.analysis.flop_count`: counting one traced call (`flops`, `FlopCount`), the operator
  handlers fvcore lacks, and the convention (`CONVENTION`, `IGNORED_OPS`);
- `clipadapt.analysis.flop_components`: the components a count is split into (`find_clip`);
- `clipadapt.analysis.flop_report`: the report per view and per component (`flops_report`,
  `FlopsReport`, `Component`, `default_view_forward`);
- `clipadapt.analysis.flop_output`: the report as a table, JSON and a chart (`print_report`,
  `save_json`, `plot_report`) and what ``clipadapt flops`` runs (`flops_command`).
"""

from __future__ import annotations

from clipadapt.analysis.flop_components import find_clip
# the handlers and constants below stay importable from here too
from clipadapt.analysis.flop_count import (
    CONVENTION,
    HANDLERS,
    IGNORED_OPS,
    ZERO_FLOP_OPS,
    FlopCount,
    baddbmm_flops,
    flops,
    native_mha_flops,
    sdpa_flops,
)
from clipadapt.analysis.flop_output import flops_command, plot_report, print_report, save_json
from clipadapt.analysis.flop_report import GIGA, Component, FlopsReport, default_view_forward, flops_report

__all__ = [
    "CONVENTION",
    "IGNORED_OPS",
    "Component",
    "FlopCount",
    "FlopsReport",
    "default_view_forward",
    "find_clip",
    "flops",
    "flops_command",
    "flops_report",
    "plot_report",
    "print_report",
    "save_json",
]
