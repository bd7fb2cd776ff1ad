"""A one-minute tour on a tiny random-weight CLIP: inject, summarise, run, save, load, eject."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from rich.console import Console

import clipadapt


def tiny_clip(seed: int = 0):
    """A small open_clip CLIP with random weights (no download): 4×4 patches of 8 px, width 64."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=4, head_width=32),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, layers=2, heads=2),
    )


def run(console: Console | None = None) -> dict:
    """Inject TED into every visual block and a text adapter into the last text block of a tiny
    CLIP, print the summary, encode a batch of videos, and check save → load → eject."""
    console = console or Console()
    clip = tiny_clip().eval()
    video = torch.randn(2, 8, 3, 32, 32)  # (B, T, 3, H, W)
    with torch.no_grad():
        frozen = clip.encode_image(video.flatten(0, 1))

    clipadapt.inject(clip, "ted", tower="visual", layers="all", site="pre_mlp", width=32)
    clipadapt.inject(clip, "bottleneck", tower="text", layers=[-1], site="pre_mlp", width=24)
    info = clipadapt.summary(clip, console=console)
    with torch.no_grad(), clipadapt.frames(clip, 8):
        adapted = clip.encode_image(video.flatten(0, 1))
    console.print(f"per-frame features {tuple(adapted.shape)}; identical to the frozen model at injection: {torch.equal(frozen, adapted)}")

    with tempfile.TemporaryDirectory() as tmp:
        path = clipadapt.save_adapters(clip, Path(tmp) / "ted.safetensors")
        fresh = tiny_clip().eval()
        clipadapt.load_adapters(fresh, path)
        with torch.no_grad(), clipadapt.frames(fresh, 8):
            reloaded = fresh.encode_image(video.flatten(0, 1))
        console.print(f"saved {path.stat().st_size / 1e3:.0f} kB of adapters; reloaded model agrees: {torch.equal(adapted, reloaded)}")
    clipadapt.eject(clip)
    with torch.no_grad():
        console.print(f"after eject the model is the frozen one again: {torch.equal(frozen, clip.encode_image(video.flatten(0, 1)))}")
    return info
