"""Cost of the hook machinery, in two sections run side by side.

``hooks``: TED injected with hooks vs the same modules applied inline. ViT-B/16 (random
weights), 8 frames at 224 px, CPU, no grad. Three forwards, interleaved: the frozen model, the
TED-injected model (hooks), and an inline reference that runs the same blocks and the same TED
modules by hand (no hooks). The hook overhead is hooks / inline − 1.

``families``: the injected/plain inference ratio of each family's ViT-B/16-sized visual tower
(random weights, TED in every block), all measured in one run with their forwards interleaved:
open_clip's own blocks, timm's ``VisionTransformer``, timm's ``Eva`` (RoPE, SwiGLU), open_clip
with a timm trunk (SigLIP) and Hugging Face ``CLIPVisionModel``. Hooks on timm and Eva blocks
should cost no more than on open_clip's own.

    python benchmarks/bench_inject.py [--sections hooks,families] [--repeats 5] [--out FILE]
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


FAMILY_MODELS = {
    "open_clip (resblocks)": ("open_clip", "ViT-B-16"),
    "timm VisionTransformer": ("timm", "vit_base_patch16_clip_224"),
    "timm Eva (RoPE, SwiGLU)": ("timm", "eva02_base_patch16_clip_224"),
    "open_clip + timm trunk (SigLIP)": ("open_clip", "ViT-B-16-SigLIP"),
    "hf CLIPVisionModel": ("hf", "ViT-B/16"),
}


def build_family_model(library: str, name: str) -> torch.nn.Module:
    """A random-weight model `name` of `library` (nothing downloaded)."""
    if library == "open_clip":
        import open_clip

        from clipadapt.backbones.open_clip import quiet_root_logger

        with quiet_root_logger():
            return open_clip.create_model(name, pretrained=None)
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=0)
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return CLIPVisionModel(CLIPVisionConfig(patch_size=16, image_size=224))


def encode_images(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "encode_image"):
        return model.encode_image(images)
    if hasattr(model, "vision_model"):
        return model(pixel_values=images).pooler_output
    return model(images)


def family_ratios(frames: int, repeats: int) -> dict:
    """Median plain and TED-injected forward times of every family in `FAMILY_MODELS`, one round
    calling each of the ten forwards once, and the injected/plain ratio per family."""
    images = torch.randn(frames, 3, 224, 224)
    runs = {}
    for label, (library, name) in FAMILY_MODELS.items():
        torch.manual_seed(0)
        plain = build_family_model(library, name).eval()
        adapted = build_family_model(library, name).eval()
        adapted.load_state_dict(plain.state_dict())
        handle = clipadapt.inject(adapted, "ted", tower="visual", layers="all", width=384)
        for _, _, module in handle.modules:  # trained-looking adapters: the convolutions are no longer zero
            for param in module.parameters():
                torch.nn.init.normal_(param, std=0.02)

        def run_plain(model=plain):
            return encode_images(model, images)

        def run_adapted(model=adapted):
            with clipadapt.frames(model, frames):
                return encode_images(model, images)

        runs[f"{label} plain"], runs[f"{label} ted"] = run_plain, run_adapted
    with torch.no_grad():
        times = interleaved(runs, repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {label: medians[f"{label} ted"] / medians[f"{label} plain"] for label in FAMILY_MODELS}
    return {"frames": frames, "repeats": repeats, "seconds": times, "median": medians, "ratio": ratios}


def family_table(result: dict):
    from rich.table import Table

    table = Table(title=f"TED in every block / plain, ViT-B/16-sized visual towers, {result['frames']} frames "
                        f"at 224 px, CPU, median of {result['repeats']}")
    for column in ("family", "plain s", "ted s", "ted / plain"):
        table.add_column(column)
    for label, ratio in result["ratio"].items():
        table.add_row(label, f"{result['median'][f'{label} plain']:.3f}", f"{result['median'][f'{label} ted']:.3f}",
                      f"{ratio:.3f}")
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
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    unknown = sections - {"hooks", "families"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; accepted: hooks, families")
    console, results = Console(), {}
    if "hooks" in sections:
        result = results["hooks"] = hook_overhead(args.frames, args.repeats)
        console.print(ratio_table(f"ViT-B/16, {args.frames} frames, CPU, median of {args.repeats}", "forward",
                                  result["median"], "frozen"))
        console.print(f"hook overhead over the inline reference: {100 * result['hook_overhead']:+.2f}%")
    if "families" in sections:
        results["families"] = family_ratios(args.frames, args.repeats)
        console.print(family_table(results["families"]))
    path = write_json("bench_inject", results, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
