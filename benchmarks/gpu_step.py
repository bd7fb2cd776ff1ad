"""M2-CLIP K400 on a GPU: training and inference clips/s, peak memory and model FLOP utilisation.

ViT-B/16 (random weights; speed does not depend on them), 8 frames at 224 px, bf16 autocast,
batch 32 by default. The FLOPs of one training step are counted by
``torch.utils.flop_counter.FlopCounterMode`` (what the step really executes, backward included)
and compared with the card's measured bf16 matmul rate. One invocation, a few minutes.

    python benchmarks/gpu_step.py [--batch 32] [--steps 10] [--out FILE]
    python benchmarks/gpu_step.py --device cpu --batch 2 --steps 1     # a smoke test without a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import K400_LIKE  # noqa: E402
from common import write_json  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Measured dense bf16 matmul rate in TFLOP/s (2 FLOPs per multiply-add)."""
    if device.type != "cuda":
        size, repeats = 1024, 3
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    from clipadapt.models import build_m2clip

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    console = Console()
    peak_rate = matmul_rate(device)
    torch.manual_seed(0)
    model = build_m2clip(open_clip.create_model("ViT-B-16", pretrained=None), K400_LIKE).to(device).train()
    optimizer = torch.optim.AdamW([{**g, "lr": 2.8125e-4 * g["lr_mult"]} for g in model.param_groups(0.01)])
    video = torch.randn(args.batch, args.frames, 3, 224, 224, device=device)
    labels = torch.randint(0, 400, (args.batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def train_step():
        with autocast:
            loss = model(video, labels)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def measure(step, steps: int) -> tuple[float, float, float]:
        """FLOPs of one call (after a warm-up call), mean seconds per call, peak GiB."""
        step()  # warm-up: caches the frozen text prefix / the class embeddings
        with FlopCounterMode(display=False) as counter:
            step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        return counter.get_total_flops(), (time.perf_counter() - start) / steps, memory

    step_flops, train_seconds, train_memory = measure(train_step, args.steps)
    model.eval()
    with torch.no_grad(), autocast:
        infer_flops, infer_seconds, infer_memory = measure(lambda: model(video), args.steps)

    rows = {
        "train": {"clips_per_s": args.batch / train_seconds, "seconds": train_seconds, "tflop": step_flops / 1e12,
                  "mfu": step_flops / train_seconds / 1e12 / peak_rate, "peak_gib": train_memory},
        "inference": {"clips_per_s": args.batch / infer_seconds, "seconds": infer_seconds, "tflop": infer_flops / 1e12,
                      "mfu": infer_flops / infer_seconds / 1e12 / peak_rate, "peak_gib": infer_memory},
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table = Table(title=f"M2-CLIP K400, ViT-B/16, batch {args.batch} × {args.frames} frames, bf16, {name}")
    for column in ("", "clips/s", "s / batch", "TFLOP / batch", "MFU", "peak GiB"):
        table.add_column(column)
    for key, row in rows.items():
        table.add_row(key, f"{row['clips_per_s']:.1f}", f"{row['seconds']:.3f}", f"{row['tflop']:.2f}", f"{100 * row['mfu']:.1f}%", f"{row['peak_gib']:.2f}")
    console.print(table)
    console.print(f"measured bf16 matmul rate: {peak_rate:.0f} TFLOP/s (2 FLOPs per multiply-add, as FlopCounterMode counts)")
    path = write_json("gpu_step", {"batch": args.batch, "frames": args.frames, "device": name, "matmul_tflops": peak_rate, **rows}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
