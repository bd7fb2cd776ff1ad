"""One M2-CLIP K400 training step on ViT-B/16 (random weights), batch 2 × 8 frames, CPU.

Times forward, backward and the optimiser step, and the frozen visual forward of the same 16
frames (no grad) as the reference, all in one process; peak memory of each phase is measured in
a fresh subprocess (peak RSS above the RSS after building the model).

    python benchmarks/bench_step.py [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakMemory, write_json  # noqa: E402

K400_LIKE = [f"class {i}" + (f" extra{i}" if i < 116 else "") for i in range(400)]  # 520 prompt words


def build(batch: int, frames: int):
    import open_clip

    from clipadapt.models import build_m2clip

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None)
    model = build_m2clip(clip, K400_LIKE).train()
    groups = [{**g, "lr": 2.8125e-4 * g["lr_mult"]} for g in model.param_groups(0.01)]
    optimizer = torch.optim.AdamW(groups)
    video = torch.randn(batch, frames, 3, 224, 224)
    labels = torch.randint(0, 400, (batch,))
    return model, optimizer, video, labels


def step_phases(model, optimizer, video, labels) -> dict[str, float]:
    times = {}
    start = time.perf_counter()
    out = model(video, labels)
    times["forward"] = time.perf_counter() - start
    start = time.perf_counter()
    out["loss"].backward()
    times["backward"] = time.perf_counter() - start
    start = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    times["optimizer"] = time.perf_counter() - start
    times["step"] = sum(times.values())
    return times


def frozen_clip():
    import open_clip

    return open_clip.create_model("ViT-B-16", pretrained=None).eval()


def frozen_forward(clip, video) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        clip.encode_image(video.flatten(0, 1))
    return time.perf_counter() - start


def memory_phase(phase: str, batch: int, frames: int) -> None:
    """Run one phase in this (fresh) process and print its peak memory above the built model's."""
    if phase == "frozen":
        clip, video = frozen_clip(), torch.randn(batch, frames, 3, 224, 224)
        frozen_forward(clip, video)  # warm-up allocations
        with PeakMemory() as peak:
            frozen_forward(clip, video)
    else:
        model, optimizer, video, labels = build(batch, frames)
        step_phases(model, optimizer, video, labels)  # warm-up: optimiser state, text prefix cache
        with PeakMemory() as peak:
            step_phases(model, optimizer, video, labels)
    print(json.dumps({"phase": phase, "peak_mb": peak.mb}))


def breakdown(model, video, labels) -> dict[str, float]:
    """Where a training forward spends its time: the adapted visual tower and the class prompts."""
    start = time.perf_counter()
    features = model.encode_video(video)
    visual = time.perf_counter() - start
    start = time.perf_counter()
    classes = model.class_embeddings()
    text = time.perf_counter() - start
    start = time.perf_counter()
    (features.video.sum() + classes.sum()).backward()
    return {"visual forward (TED)": visual, "class prompts forward": text, "their backward": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--memory-phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_phase:
        return memory_phase(args.memory_phase, args.batch, args.frames)

    model, optimizer, video, labels = build(args.batch, args.frames)
    frozen = frozen_clip()
    step_phases(model, optimizer, video, labels)  # warm-up: caches the frozen text prefix
    frozen_forward(frozen, video)
    runs = {"frozen": [], "forward": [], "backward": [], "optimizer": [], "step": []}
    for _ in range(args.repeats):  # interleaved
        runs["frozen"].append(frozen_forward(frozen, video))
        for key, value in step_phases(model, optimizer, video, labels).items():
            runs[key].append(value)
    parts = breakdown(model, video, labels)
    model.zero_grad(set_to_none=True)
    median = {key: sorted(values)[len(values) // 2] for key, values in runs.items()}
    memory = {}
    for phase in ("frozen", "step"):
        result = subprocess.run([sys.executable, __file__, "--memory-phase", phase, "--batch", str(args.batch), "--frames", str(args.frames)],
                                capture_output=True, text=True, check=True)
        memory[phase] = json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]

    table = Table(title=f"M2-CLIP K400 step, ViT-B/16, batch {args.batch} × {args.frames} frames, CPU ({torch.get_num_threads()} threads)")
    for column in ("phase", "seconds (median)", "× frozen visual forward"):
        table.add_column(column)
    for key in ("frozen", "forward", "backward", "optimizer", "step"):
        table.add_row(key, f"{median[key]:.3f}", f"{median[key] / median['frozen']:.2f}")
    for key, value in parts.items():
        table.add_row(f"  of which: {key}", f"{value:.3f}", f"{value / median['frozen']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"peak memory above the built model: frozen forward {memory['frozen']:.0f} MB, training step {memory['step']:.0f} MB")
    path = write_json("bench_step", {"batch": args.batch, "frames": args.frames, "seconds": runs, "median": median,
                                     "step_over_frozen": median["step"] / median["frozen"], "breakdown": parts, "peak_mb": memory}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
