"""One M2-CLIP K400 training step on ViT-B/16 (random weights), batch 2 × 8 frames, CPU.

Times forward, backward and the optimiser step, and the frozen visual forward of the same 16
frames (no grad) as the reference, interleaved in one process. This is done twice, each in a
fresh process: with glibc ``malloc`` keeping freed memory (what ``Trainer.fit`` sets on the CPU,
`clipadapt.engine.retain_freed_memory`) and with glibc's defaults. Peak memory of each phase is
measured in a fresh process too (peak RSS above the RSS after building the model).

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
from common import PeakMemory, rss_mb, write_json

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


def phases(model, optimizer, video, labels) -> dict:
    """The three phases of a training step, as functions to call in order."""
    state = {}

    def forward():
        state["loss"] = model(video, labels)["loss"]

    def backward():
        state.pop("loss").backward()

    def optimizer_step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"forward": forward, "backward": backward, "optimizer": optimizer_step}


def step_phases(model, optimizer, video, labels) -> dict[str, float]:
    times = {}
    for name, run in phases(model, optimizer, video, labels).items():
        start = time.perf_counter()
        run()
        times[name] = time.perf_counter() - start
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


def set_allocator(allocator: str) -> None:
    """``retain``: what `Trainer.fit` sets on the CPU; ``system``: glibc untouched."""
    if allocator == "retain":
        from clipadapt.engine import retain_freed_memory

        retain_freed_memory()


def memory_phase(phase: str, batch: int, frames: int) -> dict:
    """Peak resident memory above the built model's (this process is fresh), in MB, during the
    second run of the frozen forward, or during each phase of the second training step (the
    first also builds the optimiser state and the text prefix cache)."""
    if phase == "frozen":
        clip, video = frozen_clip(), torch.randn(batch, frames, 3, 224, 224)
        base = rss_mb()
        frozen_forward(clip, video)
        with PeakMemory() as peak:
            frozen_forward(clip, video)
        return {"frozen": peak.peak - base}
    model, optimizer, video, labels = build(batch, frames)
    base = rss_mb()
    step_phases(model, optimizer, video, labels)
    peaks = {}
    for name, run in phases(model, optimizer, video, labels).items():
        with PeakMemory() as peak:
            run()
        peaks[name] = peak.peak - base
    return {**peaks, "step": max(peaks.values())}


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


def timings(batch: int, frames: int, repeats: int) -> dict:
    """Interleaved frozen forwards and training steps in this (fresh) process."""
    model, optimizer, video, labels = build(batch, frames)
    frozen = frozen_clip()
    step_phases(model, optimizer, video, labels)  # warm-up: caches the frozen text prefix
    frozen_forward(frozen, video)
    runs = {"frozen": [], "forward": [], "backward": [], "optimizer": [], "step": []}
    for _ in range(repeats):
        runs["frozen"].append(frozen_forward(frozen, video))
        for key, value in step_phases(model, optimizer, video, labels).items():
            runs[key].append(value)
    parts = breakdown(model, video, labels)
    median = {key: sorted(values)[len(values) // 2] for key, values in runs.items()}
    return {"seconds": runs, "median": median, "step_over_frozen": median["step"] / median["frozen"], "breakdown": parts}


def in_fresh_process(args, job: str, allocator: str, phase: str = "") -> dict:
    command = [sys.executable, __file__, "--job", job, "--allocator", allocator, "--phase", phase,
               "--batch", str(args.batch), "--frames", str(args.frames), "--repeats", str(args.repeats)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--job", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--allocator", default="retain", help=argparse.SUPPRESS)
    parser.add_argument("--phase", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        set_allocator(args.allocator)
        result = timings(args.batch, args.frames, args.repeats) if args.job == "time" else memory_phase(args.phase, args.batch, args.frames)
        return print(json.dumps(result))

    allocators = {"retain": "malloc keeps freed memory (Trainer on CPU)", "system": "glibc malloc defaults"}
    results = {}
    for allocator in allocators:
        results[allocator] = in_fresh_process(args, "time", allocator)
        results[allocator]["peak_mb"] = {**in_fresh_process(args, "memory", allocator, "frozen"),
                                         **in_fresh_process(args, "memory", allocator, "step")}

    title = f"M2-CLIP K400 step, ViT-B/16, batch {args.batch} × {args.frames} frames, CPU ({torch.get_num_threads()} threads)"
    table = Table(title=title, caption="peak MB: resident memory above the built model's during the phase")
    table.add_column("phase")
    for allocator in allocators:
        table.add_column(f"s, {allocator}")
        table.add_column(f"× frozen, {allocator}")
        table.add_column(f"peak MB, {allocator}")

    def row(label: str, values: dict[str, float], peaks: dict[str, float] | None = None) -> None:
        cells = []
        for allocator in allocators:
            frozen = results[allocator]["median"]["frozen"]
            peak = f"{peaks[allocator]:.0f}" if peaks else ""
            cells += [f"{values[allocator]:.3f}", f"{values[allocator] / frozen:.2f}", peak]
        table.add_row(label, *cells)

    for key in ("frozen", "forward", "backward", "optimizer", "step"):
        row(key, {a: results[a]["median"][key] for a in allocators}, {a: results[a]["peak_mb"][key] for a in allocators})
    for key in results["retain"]["breakdown"]:
        row(f"  of which: {key}", {a: results[a]["breakdown"][key] for a in allocators})
    console = Console(width=140)
    console.print(table)
    for allocator, label in allocators.items():
        console.print(f"{allocator}: {label}; step over frozen forward: {results[allocator]['step_over_frozen']:.2f}×")
    path = write_json("bench_step", {"batch": args.batch, "frames": args.frames, "allocators": allocators,
                                     "results": results}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
