"""open_clip models with timm trunks (SigLIP, SigLIP2, EVA, PE-Core), timm's SigLIP ViTs and Eva
blocks (RoPE, SwiGLU, layer scale, post-norm), built small: every adapter goes through injection,
identity at init, one training step, save/load and eject, or is refused naming the reason; the
sites on Eva layouts equal the blocks written out by hand; LoRA equals merged weights written out
by hand; the pooled frame feature VC reads is the model's own pooling."""

import copy

import pytest
import torch
import torch.nn as nn
from small_configs import CASES, LAYOUT_CASES, POST_NORM, ROTARY, build, encode_images, images_for

import clipadapt
from clipadapt.inject import is_adapter_param
from clipadapt.backbones import get_tower

FRAMES = 2
ADAPTERS = {"ted": {}, "bottleneck": {"width": 16}, "st": {"width": 16}, "aim": {}, "lora": {"targets": ["q", "k", "v", "o"]}}
_BUILT: dict[str, nn.Module] = {}


def plain(case: str) -> nn.Module:
    """A fresh copy of the small model of `case` (built once per session)."""
    if case not in _BUILT:
        _BUILT[case] = build(case)
    return copy.deepcopy(_BUILT[case])


def run(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with clipadapt.frames(model, FRAMES):
        return encode_images(model, images)


def exact_aim_sites(case: str) -> list[str] | None:
    """AIM's parts that are exact on `case` (None: all three)."""
    if case in ROTARY:
        return ["attn_out", "mlp_parallel"]
    if case in POST_NORM:
        return ["pre_attn", "attn_out"]
    return None


def go_through(case: str, adapter: str, tmp_path, **options) -> None:
    """Inject -> identity at init -> one training step -> save/load -> eject, on `case`."""
    model, reference = plain(case), plain(case)
    images = images_for(model, 2 * FRAMES)
    with torch.no_grad():
        before = run(reference, images)
    keys = list(model.state_dict())
    clipadapt.inject(model, adapter, layers="all", **options)
    with torch.no_grad():
        assert torch.equal(run(model, images), before), "a fresh adapter changed the output"

    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(is_adapter_param(n) for n, p in model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    target = torch.randn(before.shape, generator=torch.Generator().manual_seed(2))
    (1 - torch.cosine_similarity(run(model, images), target)).mean().backward()  # the same scale for any output
    optimizer.step()
    with torch.no_grad():
        after = run(model, images)
    assert not torch.equal(after, before), "one training step left the output unchanged"

    clipadapt.save_adapters(model, tmp_path / "adapters.safetensors")
    reloaded = clipadapt.load_adapters(plain(case), tmp_path / "adapters.safetensors")
    with torch.no_grad():
        assert torch.equal(run(reloaded, images), after)

    clipadapt.eject(model)
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(run(model, images), before)


def go_through_exact_sites(case: str, adapter: str, tmp_path) -> None:
    """`go_through` with the adapter's test options; AIM on the sites that are exact on `case`."""
    options = dict(ADAPTERS[adapter])
    if adapter == "aim" and exact_aim_sites(case):
        options["site"] = exact_aim_sites(case)
    go_through(case, adapter, tmp_path, **options)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("case", CASES)
def test_every_adapter_goes_through_identity_training_reload_and_eject(case, adapter, tmp_path):
    go_through_exact_sites(case, adapter, tmp_path)


@pytest.mark.parametrize("adapter", ["ted", "st", "aim"])
@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_temporal_adapters_go_through_every_further_layout(case, adapter, tmp_path):
    go_through_exact_sites(case, adapter, tmp_path)


@pytest.mark.parametrize("case", sorted(ROTARY))
def test_aims_temporal_part_is_refused_on_rotary_attention_naming_the_reason(case):
    model = plain(case)
    with pytest.raises(ValueError, match=r"aim's temporal part .* in visual block 0: attend is not exact .*\(RoPE\)"):
        clipadapt.inject(model, "aim", layers="all")
    assert not clipadapt.injections(model) and not any(p.requires_grad is False for p in model.parameters())


def test_aims_temporal_part_is_refused_on_relative_position_attention_and_the_rest_is_exact(tmp_path):
    case = "open_clip:vit_relpos_medium_patch16_cls_224"
    with pytest.raises(ValueError, match="attend is not exact on this RelPosBlock: .*relative patch position"):
        clipadapt.inject(plain(case), "aim", layers="all")
    go_through(case, "aim", tmp_path, site=["attn_out", "mlp_parallel"])


def test_mlp_parallel_is_refused_on_a_post_norm_block_naming_the_reason():
    model = plain("open_clip:EVA02-E-14")
    with pytest.raises(ValueError, match="mlp_parallel is not exact on this EvaBlockPostNorm: .*no norm of its own"):
        clipadapt.inject(model, "bottleneck", layers="all", site="mlp_parallel")
    with pytest.raises(ValueError, match="mlp_parallel is not exact"):
        clipadapt.inject(model, "aim", layers="all")
    assert not clipadapt.injections(model) and not hasattr(get_tower(model, "visual").blocks[0].module, "adapters")


@pytest.mark.parametrize(("case", "cls_index", "prefix"), [
    ("open_clip:ViT-B-16-SigLIP", None, 0), ("open_clip:EVA02-B-16", 0, 1), ("open_clip:PE-Core-B-16", 0, 1),
    ("timm:vit_so150m_patch16_reg4_map_256", None, 4), ("timm:vit_betwixt_patch16_rope_reg4_gap_256", None, 4),
])
def test_the_visual_tower_is_the_trunks_blocks_with_its_class_and_register_tokens(case, cls_index, prefix):
    model = plain(case)
    trunk = getattr(getattr(model, "visual", None), "trunk", model)
    tower = get_tower(model, "visual")
    assert [b.module for b in tower.blocks] == list(trunk.blocks)
    assert (tower.cls_index, tower.num_prefix_tokens, tower.grid, tower.width) == (cls_index, prefix, (4, 4), 64)


# ---- sites on Eva layouts, against the blocks written out by hand --------------------------------


@clipadapt.register_adapter("linear_demo", override=True)
class LinearDemo(clipadapt.Adapter):
    """A non-zero delta ``x W`` (no zero init), to see where a site adds it."""

    sites = ("pre_mlp",)

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.normal_(self.proj.weight, std=0.3)

    def forward(self, x, ctx):
        return self.proj(x)


def small_eva(post_norm: bool) -> nn.Module:
    from timm.models.eva import Eva

    torch.manual_seed(0)
    model = Eva(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0, use_rot_pos_emb=True,
                swiglu_mlp=True, init_values=None if post_norm else 0.5, use_post_norm=post_norm).eval()
    with torch.no_grad():
        for block in model.blocks:
            for gamma in (getattr(block, "gamma_1", None), getattr(block, "gamma_2", None)):
                if gamma is not None:
                    gamma.uniform_(0.2, 1.5)  # a layer scale that is not one number
    return model


def eva_block_by_hand(block: nn.Module, x: torch.Tensor, rope: torch.Tensor, site: str, adapter: nn.Module) -> torch.Tensor:
    """An Eva block (timm's forward, written out) with `adapter`'s delta added at `site`."""
    def delta(at: str, value: torch.Tensor):
        return adapter(value, None) if at == site else 0

    post_norm = not hasattr(block, "gamma_1")
    x = x + delta("pre_attn", x)
    if post_norm:
        branch = block.norm1(block.attn(x, rope=rope))
    else:
        branch = block.gamma_1 * block.attn(block.norm1(x), rope=rope)
    branch = branch + delta("attn_out", branch)
    x = x + branch + delta("pre_mlp", x + branch)
    if post_norm:
        out = x + block.norm2(block.mlp(x))
    else:
        hidden = block.norm2(x)
        out = x + block.gamma_2 * (block.mlp(hidden) + delta("mlp_parallel", hidden))
    return out + delta("post_block", out)


@pytest.mark.parametrize("post_norm", [False, True], ids=["pre_norm_layer_scale", "post_norm"])
@pytest.mark.parametrize("site", clipadapt.SITES)
def test_each_site_on_an_eva_block_is_the_block_written_out_by_hand(site, post_norm):
    model = small_eva(post_norm)
    reference = copy.deepcopy(model.blocks[1])
    if post_norm and site == "mlp_parallel":
        with pytest.raises(ValueError, match="mlp_parallel is not exact"):
            clipadapt.inject(model, "linear_demo", layers=[1], site=site)
        return
    handle = clipadapt.inject(model, "linear_demo", layers=[1], site=site)
    seen = {}
    model.blocks[1].register_forward_pre_hook(lambda m, args, kwargs: seen.update(x=args[0], rope=kwargs["rope"]),
                                              with_kwargs=True, prepend=True)
    model.blocks[1].register_forward_hook(lambda m, args, output: seen.update(out=output))
    with torch.no_grad():
        model.forward_features(torch.randn(2, 3, 32, 32))
        expected = eva_block_by_hand(reference, seen["x"], seen["rope"], site, handle.modules[0][2])
    assert seen["rope"] is not None
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(seen["out"], reference(seen["x"], rope=seen["rope"]), atol=1e-3)  # the delta is there


@pytest.mark.parametrize("case", ["timm:eva02_base_patch14_224", "open_clip:PE-Core-B-16"])
def test_lora_on_eva_attention_equals_the_merged_weights_written_out_by_hand(case):
    model, merged = plain(case), plain(case)
    rank, alpha = 4, 8.0
    handle = clipadapt.inject(model, "lora", layers="all", rank=rank, alpha=alpha, targets=["q", "v", "o"])
    generator = torch.Generator().manual_seed(3)
    trunk_of = lambda m: getattr(getattr(m, "visual", None), "trunk", m)  # noqa: E731
    with torch.no_grad():
        for (layer, _, lora), block in zip(handle.modules, trunk_of(merged).blocks):
            deltas = {}
            for target, update in lora.updates.items():
                update.B.copy_(torch.randn(update.B.shape, generator=generator) * 0.1)
                deltas[target] = update.B @ update.A * (alpha / rank)
            if block.attn.qkv is not None:  # fused (PE-Core) or separate (EVA02) q/k/v projections
                block.attn.qkv.weight += torch.cat([deltas["q"], torch.zeros_like(deltas["q"]), deltas["v"]])
            else:
                block.attn.q_proj.weight += deltas["q"]
                block.attn.v_proj.weight += deltas["v"]
            block.attn.proj.weight += deltas["o"]
        images = images_for(model, FRAMES)  # the tokens after the final norm (the heads scale them down at init)
        adapted, by_hand = trunk_of(model).forward_features(images), trunk_of(merged).forward_features(images)
        torch.testing.assert_close(adapted, by_hand, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(adapted, trunk_of(plain(case)).forward_features(images), atol=1e-3)


# ---- the pooled frame feature (VC) ------------------------------------------------------------


CLASSNAMES = ["archery", "abseiling", "apply eye makeup"]


@pytest.mark.parametrize("case", ["open_clip:ViT-B-16-SigLIP", "timm:vit_base_patch16_siglip_224", "open_clip:PE-Core-B-16"])
def test_vc_reads_the_attention_pool_of_a_model_that_does_not_pool_by_the_class_token(case):
    clip = plain(case)
    clipadapt.inject(clip, "ted", layers="all")
    model = clipadapt.VideoCLIP(clip, CLASSNAMES)
    model.add_head("vc")
    video = images_for(clip, 2 * FRAMES).reshape(2, FRAMES, *images_for(clip, 1).shape[1:])
    features = model.encode_video(video)
    trunk = getattr(getattr(clip, "visual", None), "trunk", clip)
    with torch.no_grad(), clipadapt.frames(clip, FRAMES):
        pooled = trunk.attn_pool(trunk.forward_features(video.flatten(0, 1)))  # the MAP head on the final norm
    torch.testing.assert_close(features.cls, pooled.reshape(2, FRAMES, -1).mean(dim=1))
    model.train()
    loss = model(video, torch.tensor([0, 2]))["loss"]
    loss.backward()
    assert model.decoder.heads["vc"].fc.weight.grad is not None


# ---- FLOPs: RoPE, SwiGLU and the attention pool, against torch's FlopCounterMode ----------------


@pytest.mark.parametrize("case", ["open_clip:EVA02-B-16", "open_clip:PE-Core-B-16", "timm:vit_base_patch16_siglip_224",
                                  "timm:eva02_base_patch14_224"])
def test_flops_of_rope_swiglu_and_the_attention_pool_match_flop_counter_mode(case):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from clipadapt.analysis.flops import flops_report

    model = plain(case)
    clipadapt.inject(model, "ted", layers="all")
    report = flops_report(model, num_frames=FRAMES)
    images = images_for(model, FRAMES)
    model.train()  # FlopCounterMode sees the math attention kernel only
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        run(model, images)
    assert report.unsupported_ops == {}
    # RoPE's rotation is elementwise (zero by the convention, listed); FlopCounterMode counts no norms
    counted = report.flops_per_view - report.operators_per_view["layer_norm"]
    assert counted == pytest.approx(counter.get_total_flops() / 2, rel=0.01)
    if case in ROTARY:
        assert {"aten::mul", "aten::neg"} <= set(report.ignored_ops)


def test_inspect_shows_a_timm_trunks_blocks_and_what_they_refuse():
    from typer.testing import CliRunner

    from clipadapt.cli import app

    result = CliRunner().invoke(app, ["inspect", "EVA02-B-16"])
    assert result.exit_code == 0, result.output
    assert "visual blocks (EvaBlock) hold the sites: pre_attn, attn_out, pre_mlp, mlp_parallel, post_block" in result.output
    assert "visual refuses attend: its attention rotates queries and keys by their patch position (RoPE)" in result.output
    assert "14x14" in result.output


@pytest.mark.parametrize("case", ["open_clip:EVA02-B-16", "open_clip:PE-Core-B-16"])
def test_the_m2clip_model_builds_and_trains_every_head_on_an_eva_trunk(case):
    from clipadapt.models.m2clip import build_m2clip

    clip = plain(case)
    model = build_m2clip(clip, CLASSNAMES, ted_width=16, text_width=16).train()
    images = images_for(clip, 2 * FRAMES)
    out = model(images.reshape(2, FRAMES, *images.shape[1:]), torch.tensor([0, 2]))
    assert set(out["losses"]) == {"contrastive", "cmc", "cmlm", "vc"}
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and ".adapters.ted" in n)


@pytest.mark.parametrize("case", ["open_clip:EVA02-B-16", "timm:vit_base_patch16_siglip_224"])
def test_gradient_checkpointing_of_a_timm_trunk_gives_the_same_gradients(case):
    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = plain(case)
        torch.manual_seed(0)  # the same adapters in both runs
        clipadapt.inject(model, "st", layers="all", width=16)
        for _, _, module in clipadapt.injections(model)[0].modules:  # trained-looking adapters
            nn.init.normal_(module.up.weight, std=0.1)
            nn.init.normal_(module.conv.weight, std=0.1)
        model.set_grad_checkpointing(checkpointing)
        model.train()
        with clipadapt.frames(model, FRAMES):
            out = encode_images(model, images_for(model, 2 * FRAMES))
        out.sum().backward()  # after frames() has exited: recomputation reads T from the block input
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain_grads, recomputed = gradients(False), gradients(True)
    assert plain_grads.keys() == recomputed.keys() and plain_grads
    for name in plain_grads:
        torch.testing.assert_close(recomputed[name], plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)


# ---- small builds ------------------------------------------------------------------------------


def test_a_small_config_keeps_its_layout_and_takes_the_tiny_sizes():
    from clipadapt.backbones.shrink import shrink_config

    siglip = shrink_config("ViT-B-16-SigLIP2")
    assert siglip["embed_dim"] == 64 and siglip["vision_cfg"]["timm_proj"] == "none"  # the pool's width is the embedding's
    assert siglip["vision_cfg"]["timm_pool"] == "map" and siglip["text_cfg"]["pool_type"] == "last"
    assert siglip["text_cfg"]["vocab_size"] == 256000 and siglip["text_cfg"]["layers"] == 2
    clip = plain("open_clip:ViT-B-16-SigLIP2")
    assert len(clip.visual.trunk.blocks) == 2 and clip.visual.trunk.embed_dim == 64
    assert clip.visual.trunk.attn_pool is not None and clip.visual.trunk.cls_token is None
    with torch.no_grad():
        assert clip.encode_image(images_for(clip, 1)).shape == (1, 64)


@pytest.mark.parametrize(("arch", "kind"), [("convnext_tiny", "convnext"), ("MobileCLIP-S1", "fastvit")])
def test_a_trunk_that_is_not_a_vit_is_refused_in_one_line_naming_its_kind(arch, kind):
    from clipadapt.backbones import UnsupportedModelError
    from clipadapt.backbones.shrink import small_open_clip

    with pytest.raises(UnsupportedModelError, match=f"^{arch}: .* is a timm {kind} model, not a ViT or Eva"):
        small_open_clip(arch)
