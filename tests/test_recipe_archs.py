"""A recipe's ``model.config`` with an open_clip ``arch`` builds that arch small (its trunk, pool
and text tower, the config's sizes), and without one the plain tiny CLIP as before; the FLOPs
of such builds (RoPE attention, SwiGLU, SigLIP's attention-pool head) equal torch's
FlopCounterMode."""

import pytest
import torch
from test_flops import flop_counter_multiply_adds

import clipadapt
from clipadapt.analysis.flops import flops_report
from clipadapt.backbones import TinyConfig
from clipadapt.models.builders import build_clip

CONFIG = {"embed_dim": 64, "image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "heads": 2,
          "text_width": 64, "text_layers": 2, "text_heads": 2, "context_length": 16, "vocab_size": 49408}


def test_a_config_without_an_arch_or_with_the_default_one_builds_the_plain_tiny_clip():
    import open_clip

    for model in ({"family": "open_clip", "config": CONFIG}, {"family": "open_clip", "arch": "ViT-B-16", "config": CONFIG}):
        clip = build_clip(model)
        assert type(clip) is open_clip.CLIP and len(clip.visual.transformer.resblocks) == 3
        assert (clip.context_length, clip.vocab_size) == (16, 49408)


def test_a_config_with_a_siglip_arch_builds_siglip_small():
    import open_clip

    clip = build_clip({"family": "open_clip", "arch": "ViT-B-16-SigLIP", "config": CONFIG})
    trunk = clip.visual.trunk
    # what open_clip's ViT-B-16-SigLIP config declares, at the config's sizes
    declared = open_clip.get_model_config("ViT-B-16-SigLIP")
    assert type(clip) is open_clip.CustomTextCLIP and declared["vision_cfg"]["timm_model_name"] == "vit_base_patch16_siglip_224"
    assert (len(trunk.blocks), trunk.embed_dim, trunk.cls_token, trunk.global_pool) == (3, 64, None, "map")
    assert clip.logit_bias is not None
    assert (clip.text.pool_type, clip.text.attn_mask) == (declared["text_cfg"]["pool_type"], None)
    assert (clip.text.context_length, clip.text.vocab_size) == (16, 49408)  # the config's tokens (a BPE fits)
    assert clip.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 64)


@pytest.mark.parametrize("arch", ["ViT-B-16-SigLIP", "EVA02-B-16"])
def test_a_random_trunk_built_for_a_recipe_starts_at_a_clips_scales(arch):
    """No norm before the first block: the patch embedding preserves the variance (std fan_in^-1/2,
    as a LeCun-normal init), position embeddings at CLIP's width^-1/2, every Linear at PyTorch's
    default bound 1/sqrt(fan_in) rather than timm's 0.02."""
    trunk = build_clip({"family": "open_clip", "arch": arch, "config": CONFIG}).visual.trunk
    proj = trunk.patch_embed.proj.weight
    assert isinstance(trunk.norm_pre, torch.nn.Identity)
    assert proj.std().item() == pytest.approx((3 * 8 * 8) ** -0.5, rel=0.1)
    if trunk.pos_embed is not None:
        assert trunk.pos_embed.std().item() == pytest.approx(64 ** -0.5, rel=0.1)
    fc1 = trunk.blocks[0].mlp.fc1 if hasattr(trunk.blocks[0].mlp, "fc1") else trunk.blocks[0].mlp.fc1_g
    bound = fc1.weight.shape[1] ** -0.5
    assert fc1.weight.abs().max().item() <= bound and fc1.weight.abs().max().item() > 0.9 * bound


def test_a_config_with_an_arch_that_is_not_a_transformer_is_refused_in_one_line():
    with pytest.raises(TypeError, match=r"^convnext_base: 'convnext_base' is a timm convnext model, not a ViT or Eva"):
        build_clip({"family": "open_clip", "arch": "convnext_base", "config": CONFIG})


@pytest.mark.parametrize("arch", ["EVA02-B-16", "PE-Core-B-16", "ViT-B-16-SigLIP2"])
def test_flops_of_small_trunks_with_rope_swiglu_or_an_attention_pool_equal_flop_counter_mode(arch):
    from clipadapt.backbones.open_clip import OpenCLIPSpec

    torch.manual_seed(0)
    clip = OpenCLIPSpec.build(arch, tiny=TinyConfig(width=256, heads=4, layers=2)).eval()
    clipadapt.inject(clip, "ted", layers="all", width=64)
    report = flops_report(clip, num_frames=2)
    frames = torch.randn(2, 3, 32, 32)

    def run():
        with clipadapt.frames(clip, 2):
            clip.encode_image(frames)

    counted = report.flops_per_view - report.operators_per_view["layer_norm"]
    assert counted == pytest.approx(flop_counter_multiply_adds(clip, run), rel=1e-6)


def test_validate_says_which_arch_a_config_builds_small():
    from typer.testing import CliRunner

    from clipadapt.cli import app

    result = CliRunner().invoke(app, ["validate", "quickstart_siglip"])
    assert result.exit_code == 0, result.output
    assert "open_clip ViT-B-16-SigLIP made small from model.config (its layout at these sizes)" in result.output
    result = CliRunner().invoke(app, ["validate", "quickstart", "model.family=hf", "model.arch=siglip2"])
    assert "hf a tiny siglip2 model from model.config (model.arch: its type)" in result.output, result.output
    # a config whose text tower is a Hugging Face model is built small too (its visual tower takes adapters)
    result = CliRunner().invoke(app, ["validate", "quickstart", "model.arch=roberta-ViT-B-32"])
    assert result.exit_code == 0 and "roberta-ViT-B-32 made small" in result.output, result.output
    assert "images 32 px" in result.output, result.output


def test_the_siglip2_k400_recipe_takes_the_models_own_resolution_and_statistics():
    import open_clip
    from typer.testing import CliRunner

    from clipadapt.cli import app

    own = open_clip.get_pretrained_cfg("ViT-B-16-SigLIP2", "webli")
    size = open_clip.get_model_config("ViT-B-16-SigLIP2")["vision_cfg"]["image_size"]
    assert (size, own["mean"], own["std"], own["interpolation"]) == (224, (0.5,) * 3, (0.5,) * 3, "bicubic")
    result = CliRunner().invoke(app, ["validate", "m2clip_k400_siglip2"])
    assert result.exit_code == 0, result.output
    assert "images 224 px, bicubic, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)" in result.output


def test_the_siglip2_k400_recipe_made_small_trains_with_the_sigmoid_loss():
    from clipadapt.models.builders import build_from_recipe
    from clipadapt.recipes import load_recipe

    config = "{" + ", ".join(f"{key}: {value}" for key, value in CONFIG.items()) + "}"
    recipe = load_recipe("m2clip_k400_siglip2", [f"model.config={config}", "model.weights=null", "model.tokenizer=bpe"])
    model = build_from_recipe(recipe, ["archery", "abseiling"])
    assert type(model.clip.visual.trunk).__name__ == "VisionTransformer" and model.contrastive_loss == "sigmoid"
    model.train()
    loss = model(torch.randn(2, 2, 3, 32, 32), torch.tensor([0, 1]))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
