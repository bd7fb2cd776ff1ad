"""Every family through the spec: building from a recipe, VideoCLIP, attention access, refusals."""

import sys

import pytest
import torch

import clipadapt
from clipadapt.backbones import TinyConfig, UnsupportedModelError, detect, get_tower, spec_of_family
from clipadapt.models import build_clip, build_video_clip
from tiny import CLASSNAMES, FAMILIES

TINY = {"embed_dim": 32, "image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "heads": 2,
        "text_width": 32, "text_layers": 2, "text_heads": 2, "context_length": 16}
TED = {"name": "ted", "options": {"width": 8}}


def video(batch=2, frames=3, seed=0):
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_neutral_tiny_config_builds_the_same_sizes_in_every_family(family):
    torch.manual_seed(0)
    clip = build_clip({"family": family, "weights": None, "config": TINY})
    assert detect(clip).family == family
    visual = get_tower(clip, "visual")
    assert (len(visual.blocks), visual.width, visual.grid, visual.image_size) == (2, 64, (4, 4), 32)
    heads = visual.blocks[0].attn.num_heads
    assert heads == 2
    if family != "timm":
        text = get_tower(clip, "text")
        assert (len(text.blocks), text.width, text.context_length) == (2, 32, 16)
    assert spec_of_family(family).visual(clip).embed_dim == 32


def embedding_spread(family: str) -> float:
    """How far a frozen random tiny model's unit image embeddings spread over 16 random images."""
    torch.manual_seed(0)
    clip = build_clip({"family": family, "weights": None, "config": TINY}).eval()
    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embeddings = torch.nn.functional.normalize(spec_of_family(family).visual(clip).encode(images), dim=-1)
    return embeddings.std(0).norm().item()


@pytest.mark.parametrize("family", ["openai_clip", "hf", "timm"])
def test_every_familys_random_tiny_model_tells_images_apart_as_open_clips_does(family):
    # timm's from-scratch init (std 0.02, class token ~1e-6) gave a spread 15x smaller than
    # open_clip's: a frozen tiny ViT whose adapters could not learn the quickstart.
    assert embedding_spread(family) > 0.5 * embedding_spread("open_clip")


@pytest.mark.parametrize("family", ["open_clip", "openai_clip", "hf"])
def test_a_video_clip_of_each_family_trains_every_m2clip_head(family):
    torch.manual_seed(0)
    clip = build_clip({"family": family, "weights": None, "config": TINY})
    text = {"name": "bottleneck", "tower": "text", "layers": [-1], "options": {"width": 8}}
    heads = [{"name": h, "options": o} for h, o in
             (("contrastive", {}), ("cmc", {}), ("cmlm", {"adapter_width": 8}), ("vc", {}))]
    model = build_video_clip(clip, CLASSNAMES, adapters=[TED, text], heads=heads, pooling="conv").train()
    out = model(video(), torch.tensor([0, 3]))
    assert set(out["losses"]) == {"contrastive", "cmc", "cmlm", "vc"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and ".ted_" in n)
    logits = model.eval()(video())
    assert set(logits) == {"cmc", "vc", "fused"} and logits["fused"].shape == (2, len(CLASSNAMES))


def test_the_text_path_equals_each_familys_own_text_encoder():
    """Pieces composed by the family-agnostic text path against the model's own encode_text /
    get_text_features (the independent implementation)."""
    from clipadapt.models.text import TextPath

    for family in ("open_clip", "openai_clip", "hf"):
        torch.manual_seed(0)
        clip = build_clip({"family": family, "weights": None, "config": TINY}).eval()
        path = TextPath(clip)
        tokens = path.tokenize(["a video of archery", "a video of brush hair"])
        with torch.no_grad():
            ours = path.encode(tokens, normalize=False)
            if family == "hf":
                own = clip.get_text_features(input_ids=tokens.ids)
                own = own if isinstance(own, torch.Tensor) else own.pooler_output
            else:
                own = clip.encode_text(tokens.ids)
        torch.testing.assert_close(ours, own, atol=1e-5, rtol=1e-5, msg=family)


def test_the_visual_only_timm_model_trains_ted_and_the_vc_head_and_refuses_text_heads():
    torch.manual_seed(0)
    clip = build_clip({"family": "timm", "weights": None, "config": TINY})
    model = build_video_clip(clip, CLASSNAMES, adapters=[TED], heads=[{"name": "vc"}]).train()
    out = model(video(), torch.tensor([0, 1]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.text is None
    with pytest.raises(ValueError, match="needs a text tower: the timm model has no text tower"):
        model.add_head("cmlm")
    with pytest.raises(ValueError, match="encodes no text: the timm model has no text tower"):
        model.class_embeddings()


def test_hf_cross_attention_with_memory_equal_to_query_is_the_layers_own_attention():
    from tiny import tiny_hf

    block = get_tower(tiny_hf(), "text").blocks[0]
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        own = block.attn(hidden_states=x, attention_mask=None)[0]  # transformers' own attention
        torch.testing.assert_close(block.cross_attend(x, x), own, atol=1e-6, rtol=1e-5)
        memory = torch.randn(2, 3, 32)
        # keys and values from the memory: the attention weights sum over its 3 positions
        attn = block.attn
        q = attn.q_proj(x).view(2, 5, 2, 16).transpose(1, 2)
        k = attn.k_proj(memory).view(2, 3, 2, 16).transpose(1, 2)
        v = attn.v_proj(memory).view(2, 3, 2, 16).transpose(1, 2)
        weights = (q @ k.transpose(-1, -2) * 16**-0.5).softmax(-1)
        expected = attn.out_proj((weights @ v).transpose(1, 2).reshape(2, 5, 32))
        torch.testing.assert_close(block.cross_attend(x, memory), expected, atol=1e-6, rtol=1e-5)


def test_mha_cross_attention_is_the_modules_own_call_on_sequence_first_openai_blocks():
    from tiny import tiny_openai_clip

    block = get_tower(tiny_openai_clip(), "text").blocks[0]
    query, memory = torch.randn(2, 5, 32), torch.randn(2, 3, 32)
    with torch.no_grad():
        own = block.attn(query.transpose(0, 1), memory.transpose(0, 1), memory.transpose(0, 1))[0].transpose(0, 1)
        torch.testing.assert_close(block.cross_attend(query, memory), own)


def tiny_siglip():
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16, vocab_size=100),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    return transformers.SiglipModel(config).eval()


def test_hf_siglip_video_model_encodes_videos_and_asks_for_siglips_own_tokenizer():
    clip = tiny_siglip()
    visual = get_tower(clip, "visual")
    assert (visual.cls_index, visual.num_prefix_tokens, visual.grid) == (None, 0, (4, 4))
    clipadapt.inject(clip, "lora", tower="text", layers="all")  # injection fits both towers
    model = build_video_clip(clip, CLASSNAMES, adapters=[TED])
    features = model.encode_video(video())
    assert features.video.shape == (2, 32) and features.cls is None
    with pytest.raises(ValueError, match="vc reads the visual tower's class token, and this tower has none"):
        model.add_head("vc")
    with pytest.raises(UnsupportedModelError, match="SigLIP's text tower takes ids of its own SentencePiece tokenizer"):
        model.class_embeddings()


def test_open_clip_text_without_a_causal_mask_is_refused_and_a_timm_trunk_visual_is_named():
    import open_clip

    clip = open_clip.CustomTextCLIP(
        embed_dim=32,
        vision_cfg=dict(timm_model_name="vit_tiny_patch16_224", timm_model_pretrained=False, image_size=32, patch_size=8),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, layers=1, heads=2, no_causal_mask=True, pool_type="last"),
    )
    with pytest.raises(UnsupportedModelError, match="pools by 'last' without a causal mask"):
        detect(clip).text(clip)
    assert len(get_tower(clip, "visual").blocks) == len(clip.visual.trunk.blocks)  # the timm trunk's


def test_an_open_clip_timm_trunk_that_is_not_a_vit_is_refused_naming_it():
    import open_clip

    clip = open_clip.CustomTextCLIP(
        embed_dim=32,
        vision_cfg=dict(timm_model_name="convnext_atto", timm_model_pretrained=False, timm_pool="", image_size=32),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, layers=1, heads=2),
    )
    with pytest.raises(ValueError, match="around a timm ConvNeXt, not a transformer of patch tokens"):
        get_tower(clip, "visual")


def test_a_metaclip_style_config_quickgelu_vit_is_covered():
    import open_clip

    clip = open_clip.CLIP(embed_dim=32, quick_gelu=True,
                          vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=1, head_width=32),
                          text_cfg=dict(context_length=16, vocab_size=49408, width=32, layers=1, heads=2))
    model = build_video_clip(clip, CLASSNAMES, adapters=[TED], heads=[{"name": "cmc"}])
    assert model.eval()(video()).keys() == {"cmc", "fused"}


def test_a_missing_optional_family_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModuleNotFoundError, match=r"model.family 'hf' needs the 'transformers' package: pip install 'clipadapt\[hf\]'"):
        spec_of_family("hf").build(None, tiny=TinyConfig())


def test_the_tiny_config_names_an_unknown_key_and_its_neighbours():
    with pytest.raises(ValueError, match="model.config.widht: unknown key; did you mean 'width'"):
        TinyConfig.from_dict({"widht": 64})


def test_validate_refuses_text_adapters_and_text_heads_on_a_family_without_a_text_tower():
    from clipadapt.recipes import load_recipe_dict, validate

    data, _ = load_recipe_dict("quickstart")
    data["model"]["family"] = "timm"
    errors = validate(data)
    assert sorted(e.path for e in errors) == ["adapters.1.tower", "heads.0.name", "heads.1.name", "heads.2.name"]
    for error in errors:  # other tests may have registered more heads
        assert "'timm'" in error.message
        assert "accepted: visual" in error.message or "vc" in error.message.partition("heads without text: ")[2]
    visual_only, _ = load_recipe_dict("quickstart_timm")
    assert validate(visual_only) == []


def test_only_the_visual_only_family_says_it_has_no_text_tower():
    assert [family for family in FAMILIES if not spec_of_family(family).has_text()] == ["timm"]
