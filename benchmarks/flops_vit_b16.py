"""FLOPs of M2-CLIP's model on ViT-B/16: frozen tower, TED adapters, text tower and text adapter.

Prints the component table for 8 frames at 224 px (4 crops x 3 clips, 400 classes), then the
visual path per view for 8, 16 and 32 frames next to the paper's Table 1, with clipadapt's TED
(the first frame's zero difference skipped) and the release's (it goes through the TD branch).
Random weights, no network. Writes benchmarks/results/flops_vit_b16.json (and a PNG with --plot).

    python benchmarks/flops_vit_b16.py [--plot benchmarks/results/flops_vit_b16.png]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import open_clip
from rich.console import Console
from rich.table import Table

import clipadapt
from clipadapt.analysis.flops import flops_report, plot_report, print_report

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_GFLOPS = {8: 214, 16: 422, 32: 842}  # M2-CLIP Table 1, per view


def m2clip_model(zero_first_frame: bool = True):
    """ViT-B/16 (random weights) with TED in all 12 blocks before the MLP and the last-block text adapter."""
    clip = open_clip.create_model("ViT-B-16", pretrained=None)
    clipadapt.inject(clip, "ted", layers=range(12), site="pre_mlp", width=384, zero_first_frame=zero_first_frame)
    clipadapt.inject(clip, "bottleneck", tower="text", layers=[-1], site="pre_mlp", width=384, init="default")
    return clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(RESULTS / "flops_vit_b16.json"))
    parser.add_argument("--plot", default=None, help="also draw where FLOPs and parameters go (PNG)")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    console = Console()

    models = {"clipadapt TED": m2clip_model(zero_first_frame=True), "release TED": m2clip_model(zero_first_frame=False)}
    report = flops_report(models["clipadapt TED"], num_frames=8, image_size=224, views=12, num_classes=400, context_length=77)
    print_report(report, console)

    table = Table(title="visual path per view (GFLOPs, 1 multiply-add = 1 FLOP) vs M2-CLIP Table 1")
    for column in ("frames", "frozen tower", "clipadapt TED", "path (clipadapt)", "release TED", "path (release)", "paper"):
        table.add_column(column, justify="right")
    rows = []
    for num_frames, paper in PAPER_GFLOPS.items():
        views = {name: flops_report(model, num_frames=num_frames, image_size=224) for name, model in models.items()}
        row = {
            "frames": num_frames,
            "frozen_tower": views["release TED"].component("visual.backbone").gflops_per_view,
            "ted_clipadapt": views["clipadapt TED"].component("visual.adapters.ted").gflops_per_view,
            "path_clipadapt": views["clipadapt TED"].gflops_per_view,
            "ted_release": views["release TED"].component("visual.adapters.ted").gflops_per_view,
            "path_release": views["release TED"].gflops_per_view,
            "paper": paper,
        }
        rows.append(row)
        table.add_row(*(f"{value:.1f}" if isinstance(value, float) else str(value) for value in row.values()))
    console.print(table)

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report.to_dict(), "frames_vs_paper": rows}, indent=2) + "\n")
    console.print(f"wrote {path}")
    if args.plot:
        console.print(f"wrote {plot_report(report, args.plot)}")


if __name__ == "__main__":
    main()
