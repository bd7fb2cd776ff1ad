"""Cost of the hook machinery: TED injected with hooks vs the same modules applied inline.

ViT-B/16 (random weights), 8 frames at 224 px, CPU, no grad. Three forwards, interleaved:
the frozen model, the TED-injected model (hooks), and an inline reference that runs the same
blocks and the same TED modules by hand (no hooks). The hook overhead is hooks / inline − 1.

    python benchmarks/bench_inject.py [--repeats 5] [--out FILE]

``--families`` measures the injected/plain inference ratio of each family's ViT-B/16-sized visual
tower instead (`families_section`; random weights): plain, with TED in every block, and with a
probe whose delta is zero (the hooks' own cost), all in one run with their forwards interleaved:
open_clip's own blocks, timm's ``VisionTransformer``, timm's ``Eva`` (RoPE, SwiGLU), open_clip
with a timm trunk (SigLIP) and Hugging Face ``CLIPVisionModel``. Hooks on timm and Eva blocks
should cost no more than on open_clip's own. ``--small``: 2 blocks of width 64 at 32 px, where
the hooks' Python work weighs most:

    python benchmarks/bench_inject.py --families [--small] [--threads 1] [--frames 4] [--repeats 5]

``--mixed`` measures adapter sets instead (`mixed_batch_section`): one mixed batch of videos,
each through its own set, against separate forwards, and disabled sets against the frozen model:

    python benchmarks/bench_inject.py --mixed [--arch ViT-B-16] [--videos 4] [--sets 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import timeit
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


def mixed_batch_section(args) -> None:
    """Adapter sets: `args.sets` TED sets on one ViT, `args.videos` videos of `args.frames` frames
    spread over the sets round-robin, CPU, no grad. Interleaved runs:

    - frozen: the un-injected model on the whole batch;
    - disabled: the injected model inside ``clipadapt.disabled`` (what inactive sets cost);
    - one set: the whole batch through one active set (one adapter per block, full batch);
    - mixed: one forward, ``frames(model, T, sets=[...])``, each video through its own set;
    - per set: one forward per set on its videos (``activate`` then forward);
    - per video: one forward per video with its set active.
    """
    import open_clip

    torch.manual_seed(0)
    frozen = open_clip.create_model(args.arch, pretrained=None).eval()
    model = open_clip.create_model(args.arch, pretrained=None).eval()
    model.load_state_dict(frozen.state_dict())
    names = [f"task{i}" for i in range(args.sets)]
    for name in names:
        for _, _, module in clipadapt.inject(model, "ted", layers="all", width=args.width, adapter_set=name).modules:
            for param in module.parameters():
                torch.nn.init.normal_(param, std=0.02)
    per_video = [names[i % len(names)] for i in range(args.videos)]
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    video = torch.randn(args.videos * args.frames, 3, size, size)
    rows = {name: [r for i, n in enumerate(per_video) if n == name for r in range(i * args.frames, (i + 1) * args.frames)] for name in names}

    def run_frozen():
        return frozen.encode_image(video)

    def run_disabled():
        with clipadapt.disabled(model), clipadapt.frames(model, args.frames):
            return model.encode_image(video)

    def run_one_set():
        clipadapt.activate(model, names[0])
        with clipadapt.frames(model, args.frames):
            return model.encode_image(video)

    def run_mixed():
        with clipadapt.frames(model, args.frames, sets=per_video):
            return model.encode_image(video)

    def run_per_set():
        out = torch.empty(video.shape[0], frozen.visual.output_dim)
        for name, index in rows.items():
            clipadapt.activate(model, name)
            with clipadapt.frames(model, args.frames):
                out[index] = model.encode_image(video[index])
        return out

    def run_per_video():
        parts = []
        for i, name in enumerate(per_video):
            clipadapt.activate(model, name)
            with clipadapt.frames(model, args.frames):
                parts.append(model.encode_image(video[i * args.frames:(i + 1) * args.frames]))
        return torch.cat(parts)

    runs = {"frozen": run_frozen, "disabled": run_disabled, "one set": run_one_set, "mixed": run_mixed,
            "per set": run_per_set, "per video": run_per_video}
    with torch.no_grad():
        assert torch.equal(run_disabled(), run_frozen())
        torch.testing.assert_close(run_mixed(), run_per_video(), rtol=0, atol=1e-5)
        times = interleaved(runs, args.repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    console = Console()
    title = f"{args.arch}, {args.videos} videos × {args.frames} frames over {args.sets} TED sets, CPU, median of {args.repeats}"
    console.print(ratio_table(title, "forward", medians, "mixed"))
    ratios = {"mixed / per set": medians["mixed"] / medians["per set"], "mixed / per video": medians["mixed"] / medians["per video"],
              "disabled / frozen": medians["disabled"] / medians["frozen"], "mixed / one set": medians["mixed"] / medians["one set"]}
    for name, value in ratios.items():
        console.print(f"{name}: {value:.3f}")
    overhead = disabled_overhead(args.sets)
    console.print(f"{args.sets} inactive sets, tiny 12-block ViT, 8 images, median of 200: frozen {overhead['frozen'] * 1e6:.0f} µs, "
                  f"inactive {overhead['inactive'] * 1e6:.0f} µs ({overhead['per_block'] * 1e6:+.1f} µs per block); "
                  f"entering and leaving `disabled`: {overhead['enter and leave disabled'] * 1e6:.0f} µs; "
                  f"per block, the input capture {overhead['hook_seconds']['capture'] * 1e6:.2f} µs and the dispatcher "
                  f"{overhead['hook_seconds']['dispatcher'] * 1e6:.2f} µs a call")
    path = write_json("bench_inject_mixed", {"arch": args.arch, "frames": args.frames, "videos": args.videos, "sets": args.sets,
                                             "width": args.width, "repeats": args.repeats, "seconds": times, "median": medians,
                                             "ratios": ratios, "disabled_overhead": overhead}, args.out)
    console.print(f"wrote {path}")


def disabled_overhead(num_sets: int, repeats: int = 200) -> dict:
    """What `num_sets` inactive TED sets cost a small forward, where the hooks' own time shows:
    a 12-block width-64 ViT on 8 images of 32 px, frozen vs injected with no set active; and
    what entering and leaving ``clipadapt.disabled`` costs."""
    import open_clip

    def tiny():
        torch.manual_seed(0)
        return open_clip.CLIP(embed_dim=32, vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=12, head_width=32),
                              text_cfg=dict(context_length=16, vocab_size=100, width=32, layers=1, heads=2)).eval()

    frozen, model = tiny(), tiny()
    for i in range(num_sets):
        clipadapt.inject(model, "ted", layers="all", width=16, adapter_set=f"task{i}")
    clipadapt.freeze(frozen)  # the same requires_grad flags on both
    clipadapt.activate(model)  # every set inactive (what `disabled` sets, without entering it per call)
    images = torch.randn(8, 3, 32, 32)

    def run_frozen():
        return frozen.encode_image(images)

    def run_inactive():
        with clipadapt.frames(model, 8):
            return model.encode_image(images)

    def enter_disabled():
        with clipadapt.disabled(model):
            pass

    with torch.no_grad():
        assert torch.equal(run_inactive(), run_frozen())
        times = interleaved({"frozen": run_frozen, "inactive": run_inactive, "enter and leave disabled": enter_disabled}, repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    # the hooks' own time in one block with no set active: its input capture and its dispatcher
    hooks = model.__dict__["_clipadapt"].blocks[model.visual.transformer.resblocks[0]]
    capture = next(iter(model.visual.transformer.resblocks[0]._forward_pre_hooks.values()))
    dispatcher = hooks.dispatchers["pre_mlp"][0]
    tokens = torch.randn(8, 17, 64)
    calls = 20000
    hook_seconds = {
        "capture": timeit.timeit(lambda: capture(None, (tokens,), {}), number=calls) / calls,
        "dispatcher": timeit.timeit(lambda: dispatcher.pre_mlp(None, (tokens,), tokens), number=calls) / calls,
    }
    return {**medians, "per_block": (medians["inactive"] - medians["frozen"]) / 12, "hook_seconds": hook_seconds}


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


def families_section(args) -> None:
    """Print and write (JSON) the injected/plain ratios of every family (`family_ratios`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    result = family_ratios(args.frames, args.repeats, args.small)
    console = Console(width=160)
    console.print(family_table(result))
    console.print(f"wrote {write_json('bench_inject_families', result, args.out)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--mixed", action="store_true", help="measure adapter sets: a mixed batch vs separate forwards")
    parser.add_argument("--arch", default="ViT-B-16", help="--mixed: the open_clip architecture")
    parser.add_argument("--videos", type=int, default=4, help="--mixed: videos in the batch")
    parser.add_argument("--sets", type=int, default=2, help="--mixed: TED sets the videos are spread over")
    parser.add_argument("--width", type=int, default=384, help="--mixed: TED width")
    parser.add_argument("--families", action="store_true", help="the injected/plain ratio of every family, side by side")
    parser.add_argument("--small", action="store_true", help="--families: 2 blocks of width 64 at 32 px instead of ViT-B/16")
    parser.add_argument("--threads", type=int, default=None, help="--families: torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.mixed:
        return mixed_batch_section(args)
    if args.families:
        return families_section(args)
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
