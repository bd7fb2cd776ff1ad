"""FLOP counting: analytic counts on tiny configs, agreement with torch's FlopCounterMode, the
component breakdown, and the ViT-B/16 numbers of the M2-CLIP comparison."""

import json
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import clipadapt
from clipadapt.analysis.flops import flops, flops_command, flops_report
from tiny import tiny_open_clip

FRAMES = 2


def flop_counter_multiply_adds(model: nn.Module, run) -> float:
    """torch's own count of `run()` (2 FLOPs per multiply-add, no norms), in multiply-adds.

    FlopCounterMode sees neither nn.MultiheadAttention's inference fast path nor the fused CPU
    attention kernel, so the model runs in train mode (no fast path) under the math attention
    backend; without gradient, as nothing here is backpropagated.
    """
    model.train()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            run()
    finally:
        model.eval()
    return counter.get_total_flops() / 2


def tiny_visual_multiply_adds(num_frames: int) -> int:
    """tiny_open_clip's visual path by hand: 4x4 patches of 8 px, width 64, 2 blocks, 17 tokens."""
    tokens, width, hidden, patches = 17, 64, 256, 16
    patch_embedding = patches * width * 3 * 8 * 8
    attention = 2 * tokens * tokens * width  # QK^T and AV
    block = tokens * width * 3 * width + tokens * width * width + attention + 2 * tokens * width * hidden
    layer_norms = 6 * tokens * width * 5  # ln_pre, 2 per block, ln_post; 5 per element (fvcore)
    projection = width * 32  # the class token to the joint space
    return num_frames * (patch_embedding + 2 * block + layer_norms + projection)


def test_visual_count_equals_the_analytic_count_with_attention_matmuls():
    report = flops_report(tiny_open_clip(), num_frames=FRAMES)
    assert report.flops_per_view == tiny_visual_multiply_adds(FRAMES)
    assert report.operators_per_view["attention"] == FRAMES * 2 * (2 * 17 * 17 * 64)


def test_fused_multihead_attention_counts_projections_and_attention_matmuls():
    attention = nn.MultiheadAttention(64, 4, batch_first=True).eval()
    tokens = torch.randn(3, 10, 64)
    count = flops(attention, tokens, call=lambda m, x: m(x, x, x, need_weights=False))
    assert count.total == 3 * (4 * 10 * 64 * 64 + 2 * 10 * 10 * 64)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3), heads=st.integers(1, 3), len_q=st.integers(1, 9), len_k=st.integers(1, 9),
    dim=st.integers(1, 8), dim_v=st.integers(1, 8),
)
def test_scaled_dot_product_attention_counts_both_matmuls(batch, heads, len_q, len_k, dim, dim_v):
    q, k, v = torch.randn(batch, heads, len_q, dim), torch.randn(batch, heads, len_k, dim), torch.randn(batch, heads, len_k, dim_v)
    count = flops(nn.Identity(), (q, k, v), call=lambda m, *qkv: F.scaled_dot_product_attention(*qkv))
    assert count.total == batch * heads * len_q * len_k * (dim + dim_v)


def test_baddbmm_counts_its_batched_product():
    bias, left, right = torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    count = flops(nn.Identity(), (bias, left, right), call=lambda m, *xs: torch.baddbmm(*xs))
    assert count.total == 2 * 3 * 4 * 5


def test_operators_without_a_handler_are_listed_as_unsupported():
    points = torch.randn(5, 3)
    count = flops(nn.Identity(), points, call=lambda m, x: torch.cdist(x, x))
    assert count.unsupported_ops == {"aten::cdist": 1}


def test_elementwise_operators_are_listed_as_ignored():
    count = flops(nn.GELU(), torch.randn(4, 8))
    assert (count.total, count.ignored_ops) == (0, {"aten::gelu": 1})


def test_model_without_adapters_has_zero_adapter_flops():
    report = flops_report(tiny_open_clip(), num_frames=FRAMES)
    assert [c.name for c in report.components] == ["visual.backbone", "text.backbone"]


def test_doubling_the_frames_doubles_the_visual_cost():
    clip = tiny_open_clip()
    assert flops_report(clip, num_frames=4).flops_per_view == 2 * flops_report(clip, num_frames=2).flops_per_view


def test_components_partition_flops_and_parameters(tiny, family):
    clipadapt.inject(tiny, "ted", layers="all", width=16)
    if family != "timm":
        clipadapt.inject(tiny, "bottleneck", tower="text", layers=[-1], width=8)
    report = flops_report(tiny, num_frames=FRAMES)
    components = report.components
    assert sum(c.flops_per_view for c in components) == report.flops_per_view
    assert sum(c.flops_per_prompt for c in components) == report.text_flops_per_prompt
    assert sum(c.params for c in components) == report.total_params
    assert sum(c.trainable_params for c in components) == report.trainable_params
    assert report.component("visual.adapters.ted").trainable_params == clipadapt.injections(tiny)[0].num_params()


def test_ted_without_first_frame_skips_one_frame_of_its_difference_branch():
    costs = {}
    for zero_first_frame in (True, False):
        clip = tiny_open_clip()
        clipadapt.inject(clip, "ted", layers="all", width=16, zero_first_frame=zero_first_frame)
        costs[zero_first_frame] = flops_report(clip, num_frames=FRAMES).component("visual.adapters.ted").flops_per_view
    patches, width, bottleneck, blocks = 16, 64, 16, 2
    difference_branch_per_frame = patches * (2 * width * bottleneck + bottleneck * 9)
    assert costs[False] - costs[True] == blocks * difference_branch_per_frame


@clipadapt.register_adapter("reuse_attention_demo", override=True)
class ReuseAttention(clipadapt.Adapter):
    """Runs the block's own frozen attention again (as AIM's temporal adapter does)."""

    sites = ("pre_attn",)

    def __init__(self, dim):
        super().__init__()

    def forward(self, x, ctx):
        return ctx.block.attend(x) * 0


def test_adapter_that_reuses_the_frozen_attention_pays_for_it():
    clip = tiny_open_clip()
    clipadapt.inject(clip, "reuse_attention_demo", layers="all")
    report = flops_report(clip, num_frames=FRAMES)
    tokens, width = 17, 64
    attention = tokens * width * 4 * width + 2 * tokens * tokens * width  # projections, QK^T, AV
    assert report.component("visual.backbone").flops_per_view == tiny_visual_multiply_adds(FRAMES)
    assert report.component("visual.adapters.reuse_attention_demo").flops_per_view == FRAMES * 2 * attention


def test_matches_flop_counter_mode_on_a_wide_model():
    clip = tiny_open_clip(width=256)
    clipadapt.inject(clip, "ted", layers="all", width=64)
    report = flops_report(clip, num_frames=FRAMES)
    frames = torch.randn(FRAMES, 3, 32, 32)

    def run():
        with clipadapt.frames(clip, FRAMES):
            clip.encode_image(frames)

    expected = flop_counter_multiply_adds(clip, run)
    assert report.flops_per_view - report.operators_per_view["layer_norm"] == pytest.approx(expected, rel=0.01)


def test_wrapper_components_are_found_by_module_path():
    class VideoModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.clip = tiny_open_clip()
            self.pooling = nn.Linear(32, 32)
            self.decoder = nn.Module()
            self.decoder.heads = nn.ModuleDict({"vc": nn.Linear(32, 10)})

        def encode_video(self, video):  # (B, T, 3, H, W)
            with clipadapt.frames(self, int(video.shape[1])):  # traced shapes are 0-dim tensors
                per_frame = self.clip.encode_image(video.flatten(0, 1))
            return self.decoder.heads["vc"](self.pooling(per_frame).mean(0))

    report = flops_report(VideoModel(), num_frames=FRAMES)
    assert {c.name: c.flops_per_view for c in report.components if c.flops_per_view} == {
        "visual.backbone": tiny_visual_multiply_adds(FRAMES),
        "pooling": FRAMES * 32 * 32,
        "heads.vc": 32 * 10,
    }


def test_command_prints_the_table_and_writes_json_and_plot(tmp_path):
    console = Console(record=True, width=120)
    clip = tiny_open_clip()
    clipadapt.inject(clip, "ted", layers="all", width=16)
    flops_command(clip, frames=FRAMES, views=3, num_classes=5, json_path=tmp_path / "flops.json",
                  plot_path=tmp_path / "flops.png", console=console)
    data = json.loads((tmp_path / "flops.json").read_text())
    assert "visual.adapters.ted" in console.export_text()
    assert data["gflops_per_view"] * 3 == pytest.approx(data["gflops_all_views"])
    assert (tmp_path / "flops.png").read_bytes()[:4] == b"\x89PNG"


# --- ViT-B/16, 8 frames at 224 px: the numbers of the M2-CLIP comparison (spec §6) -------------


@pytest.fixture(scope="module")
def vit_b16():
    import open_clip

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None)
    # the release's TED: the first frame's zero difference also goes through the TD branch
    clipadapt.inject(clip, "ted", layers=range(12), site="pre_mlp", width=384, zero_first_frame=False)
    clipadapt.inject(clip, "bottleneck", tower="text", layers=[-1], width=384, init="default")
    report = flops_report(clip, num_frames=8, image_size=224, views=12, num_classes=400, context_length=77)
    return clip, report


def test_vit_b16_numbers_match_the_spec(vit_b16):
    _, report = vit_b16
    numbers = {
        "frozen visual per frame": report.component("visual.backbone").gflops_per_view / 8,
        "frozen visual": report.component("visual.backbone").gflops_per_view,
        "ted": report.component("visual.adapters.ted").gflops_per_view,
        "visual path": report.gflops_per_view,
        "text per prompt": report.component("text.backbone").gflops_per_prompt,
    }
    rounded = {name: round(value, 1 if name != "frozen visual per frame" else 2) for name, value in numbers.items()}
    assert rounded == {"frozen visual per frame": 17.58, "frozen visual": 140.7, "ted": 22.3, "visual path": 163.0,
                       "text per prompt": 3.0}
    assert report.component("text.backbone").gflops_per_prompt == pytest.approx(2.98, abs=0.01)
    assert report.trainable_params == 14_247_936 + 394_112


def test_vit_b16_matches_flop_counter_mode(vit_b16):
    clip, report = vit_b16
    frames = torch.randn(8, 3, 224, 224)
    tokens = torch.ones(1, 77, dtype=torch.long)

    def run_visual():
        with clipadapt.frames(clip, 8):
            clip.encode_image(frames)

    visual = flop_counter_multiply_adds(clip, run_visual)
    text = flop_counter_multiply_adds(clip, lambda: clip.encode_text(tokens))
    assert report.flops_per_view - report.operators_per_view["layer_norm"] == pytest.approx(visual, rel=0.01)
    assert report.text_flops_per_prompt - report.operators_per_prompt["layer_norm"] == pytest.approx(text, rel=0.01)


def test_vit_b16_frozen_tower_matches_flop_counter_mode_without_norms(vit_b16):
    _, report = vit_b16
    backbone = report.component("visual.backbone").flops_per_view
    # all LayerNorms of a view are the backbone's (TED has none); FlopCounterMode: 140.51 G
    assert backbone - report.operators_per_view["layer_norm"] == pytest.approx(140.51e9, rel=0.001)
