"""Cost of the hook machinery: TED injected with hooks vs the same modules applied inline.

ViT-B/16 (random weights), 8 frames at 224 px, CPU, no grad. Three forwards, interleaved:
the frozen model, the TED-injected model (hooks), and an inline reference that runs the same
blocks and the same TED modules by hand (no hooks). The hook overhead is hooks / inline − 1.

    python benchmarks/bench_inject.py [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, ratio_table, write_json  # noqa: E402

import clipadapt  # noqa: E402


def inline_forward(visual, adapters, video, num_frames):
    """open_clip's VisionTransformer forward written out, TED applied by hand before each MLP."""
    ctx = SimpleNamespace(num_frames=num_frames, num_prefix_tokens=1, grid=lambda tokens: visual.grid_size)
    x = visual._embeds(video)
    for block, adapter in zip(visual.transformer.resblocks, adapters):
        assert isinstance(block.ls_1, torch.nn.Identity)  # the hooks sit on ls_1: do not call it here
        x = x + block.attention(block.ln_1(x))
        x = x + adapter(x, ctx)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import open_clip

    torch.manual_seed(0)
    frozen = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    adapted = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    adapted.load_state_dict(frozen.state_dict())
    handle = clipadapt.inject(adapted, "ted", tower="visual", layers="all", width=384)
    modules = [module for _, _, module in handle.modules]
    for module in modules:  # trained-looking adapters: the convolutions are no longer zero
        for param in module.parameters():
            torch.nn.init.normal_(param, std=0.02)
    video = torch.randn(args.frames, 3, 224, 224)

    def run_frozen():
        return frozen.encode_image(video)

    def run_hooks():
        with clipadapt.frames(adapted, args.frames):
            return adapted.encode_image(video)

    def run_inline():
        return inline_forward(adapted.visual, modules, video, args.frames)

    runs = {"frozen": run_frozen, "ted (hooks)": run_hooks, "ted (inline)": run_inline}
    with torch.no_grad():
        torch.testing.assert_close(run_hooks(), run_inline(), rtol=1e-4, atol=1e-4)
        times = interleaved(runs, args.repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    overhead = medians["ted (hooks)"] / medians["ted (inline)"] - 1
    table = ratio_table(f"ViT-B/16, {args.frames} frames, CPU, median of {args.repeats}", "forward", medians, "frozen")
    console = Console()
    console.print(table)
    console.print(f"hook overhead over the inline reference: {100 * overhead:+.2f}%")
    path = write_json("bench_inject", {"frames": args.frames, "repeats": args.repeats, "seconds": times, "median": medians, "hook_overhead": overhead}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
