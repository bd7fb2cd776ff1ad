"""Cost of the hook machinery, in two sections run side by side.

``hooks``: TED injected with hooks vs the same modules applied inline. ViT-B/16 (random
weights), 8 frames at 224 px, CPU, no grad. Three forwards, interleaved: the frozen model, the
TED-injected model (hooks), and an inline reference that runs the same blocks and the same TED
modules by hand (no hooks). The hook overhead is hooks / inline − 1.

``families``: the injected/plain inference ratio of each family's ViT-B/16-sized visual tower
(random weights), plain, with TED in every block, and with a probe whose delta is zero (the
hooks' own cost), all measured in one run with their forwards interleaved:
open_clip's own blocks, timm's ``VisionTransformer``, timm's ``Eva`` (RoPE, SwiGLU), open_clip
with a timm trunk (SigLIP) and Hugging Face ``CLIPVisionModel``. Hooks on timm and Eva blocks
should cost no more than on open_clip's own.

    python benchmarks/bench_inject.py [--sections hooks,families] [--small] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
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


FAMILY_MODELS = {
    "open_clip (resblocks)": ("open_clip", "ViT-B-16"),
    "timm VisionTransformer": ("timm", "vit_base_patch16_clip_224"),
    "timm Eva (RoPE, SwiGLU)": ("timm", "eva02_base_patch16_clip_224"),
    "open_clip + timm trunk (SigLIP)": ("open_clip", "ViT-B-16-SigLIP"),
    "hf CLIPVisionModel": ("hf", "ViT-B/16"),
}


def build_family_model(library: str, name: str, small: bool) -> torch.nn.Module:
    """A random-weight model `name` of `library` (nothing downloaded); `small`: the same layout at
    2 blocks of width 64 on 32 px (`clipadapt.backbones.shrink`), where the hooks' Python work
    weighs most."""
    from clipadapt.backbones.shrink import small_open_clip, small_timm

    if library == "open_clip":
        import open_clip

        from clipadapt.backbones.open_clip import quiet_root_logger

        if small:
            return small_open_clip(name)
        with quiet_root_logger():
            return open_clip.create_model(name, pretrained=None)
    if library == "timm":
        import timm

        return small_timm(name, num_classes=0) if small else timm.create_model(name, pretrained=False, num_classes=0)
    from transformers import CLIPVisionConfig, CLIPVisionModel

    sizes = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
                 image_size=32) if small else dict(patch_size=16, image_size=224)
    return CLIPVisionModel(CLIPVisionConfig(**sizes))


def encode_images(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "encode_image"):
        return model.encode_image(images)
    if hasattr(model, "vision_model"):
        return model(pixel_values=images).pooler_output
    return model(images)


@clipadapt.register_adapter("hook_probe", override=True)
class HookProbe(clipadapt.Adapter):
    """A zero delta and no parameters: what it costs is the hooks' own work."""

    sites = ("pre_mlp",)

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x, ctx):
        return x.new_zeros(())


FAMILY_ADAPTERS = {"ted": {"width": 384}, "hook_probe": {}}


def family_ratios(frames: int, repeats: int, small: bool = False) -> dict:
    """Median forward times of every family in `FAMILY_MODELS`, plain and with each adapter of
    `FAMILY_ADAPTERS` in every visual block (one round calls each forward once), and the
    injected/plain ratio per family and adapter."""
    size = 32 if small else 224
    images = torch.randn(frames, 3, size, size)
    runs = {}
    for label, (library, name) in FAMILY_MODELS.items():
        torch.manual_seed(0)
        plain = build_family_model(library, name, small).eval()
        runs[f"{label} | plain"] = functools.partial(encode_images, plain, images)
        for adapter, options in FAMILY_ADAPTERS.items():
            adapted = build_family_model(library, name, small).eval()
            adapted.load_state_dict(plain.state_dict())
            if small and "width" in options:
                options = {**options, "width": 16}
            handle = clipadapt.inject(adapted, adapter, tower="visual", layers="all", **options)
            for _, _, module in handle.modules:  # trained-looking adapters: the convolutions are no longer zero
                for param in module.parameters():
                    torch.nn.init.normal_(param, std=0.02)
            runs[f"{label} | {adapter}"] = functools.partial(encode_frames, adapted, images, frames)
    with torch.no_grad():
        times = interleaved(runs, repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}

    def ratios(of: dict) -> dict:
        return {label: {adapter: of[f"{label} | {adapter}"] / of[f"{label} | plain"] for adapter in FAMILY_ADAPTERS}
                for label in FAMILY_MODELS}

    return {"frames": frames, "repeats": repeats, "size": "small" if small else "ViT-B/16", "image_size": size,
            "threads": torch.get_num_threads(), "seconds": times, "median": medians, "fastest": fastest,
            "ratio": ratios(medians), "ratio_fastest": ratios(fastest)}


def encode_frames(model: torch.nn.Module, images: torch.Tensor, frames: int) -> torch.Tensor:
    with clipadapt.frames(model, frames):
        return encode_images(model, images)


def family_table(result: dict):
    """Ratios of the medians and of the fastest rounds (the least disturbed by other load on a
    shared machine), side by side."""
    from rich.table import Table

    sizes = "ViT-B/16-sized" if result["size"] == "ViT-B/16" else "small (2 blocks of width 64)"
    table = Table(title=f"injected / plain, {sizes} visual towers, every block, {result['frames']} frames at "
                        f"{result['image_size']} px, CPU ({result['threads']} threads), {result['repeats']} rounds")
    columns = [f"{a} / plain ({stat})" for stat in ("median", "fastest") for a in FAMILY_ADAPTERS]
    for column in ("family", "plain ms (median)", *columns):
        table.add_column(column)
    for label in FAMILY_MODELS:
        cells = [f"{result[key][label][a]:.3f}" for key in ("ratio", "ratio_fastest") for a in FAMILY_ADAPTERS]
        table.add_row(label, f"{1e3 * result['median'][f'{label} | plain']:.1f}", *cells)
    return table


def hook_overhead(frames: int, repeats: int) -> dict:
    """TED with hooks vs the same modules applied inline on open_clip's ViT-B/16."""
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
    video = torch.randn(frames, 3, 224, 224)

    def run_frozen():
        return frozen.encode_image(video)

    def run_hooks():
        with clipadapt.frames(adapted, frames):
            return adapted.encode_image(video)

    def run_inline():
        return inline_forward(adapted.visual, modules, video, frames)

    runs = {"frozen": run_frozen, "ted (hooks)": run_hooks, "ted (inline)": run_inline}
    with torch.no_grad():
        torch.testing.assert_close(run_hooks(), run_inline(), rtol=1e-4, atol=1e-4)
        times = interleaved(runs, repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    overhead = medians["ted (hooks)"] / medians["ted (inline)"] - 1
    return {"frames": frames, "repeats": repeats, "seconds": times, "median": medians, "hook_overhead": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="hooks,families", help="comma-separated: hooks, families")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="families: 2 blocks of width 64 at 32 px instead of ViT-B/16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    unknown = sections - {"hooks", "families"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; accepted: hooks, families")
    console, results = Console(width=160), {}
    if "hooks" in sections:
        result = results["hooks"] = hook_overhead(args.frames, args.repeats)
        console.print(ratio_table(f"ViT-B/16, {args.frames} frames, CPU, median of {args.repeats}", "forward",
                                  result["median"], "frozen"))
        console.print(f"hook overhead over the inline reference: {100 * result['hook_overhead']:+.2f}%")
    if "families" in sections:
        results["families"] = family_ratios(args.frames, args.repeats, args.small)
        console.print(family_table(results["families"]))
    path = write_json("bench_inject", results, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
