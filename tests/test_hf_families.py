"""Hugging Face SigLIP, SigLIP 2, their vision models, ChineseCLIP and AltCLIP: every law of the
injection engine on the visual tower (and SigLIP's pre-norm text tower), checked against the
models' own forwards; refusals of what is not covered."""

import copy
import re

import pytest
import torch
import transformers

import clipadapt
from clipadapt.backbones import TinyConfig, UnsupportedModelError, get_tower, spec_of_family
from clipadapt.backbones.hf import naflex_inputs
from clipadapt.inject import SITES
from tiny import CLASSNAMES, randomize_

transformers.logging.set_verbosity_error()
HF = spec_of_family("hf")
IMAGE, PATCH, FRAMES = 32, 8, 2
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=PATCH)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=100,
            max_position_embeddings=16)
KINDS = ("siglip", "siglip2", "siglip_vision", "siglip2_vision", "chinese_clip", "altclip")
WITH_TEXT = ("siglip", "siglip2")  # pre-norm text towers


def build(kind: str) -> torch.nn.Module:
    """A tiny random-weight model of `kind`, from transformers' own config classes."""
    torch.manual_seed(0)
    vision = dict(VISION, image_size=IMAGE)
    if kind.startswith("siglip2"):
        vision = dict(VISION, num_patches=(IMAGE // PATCH) ** 2)
    models = {
        "siglip": lambda: transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT, vision_config=vision)),
        "siglip2": lambda: transformers.Siglip2Model(transformers.Siglip2Config(text_config=TEXT, vision_config=vision)),
        "siglip_vision": lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision)),
        "siglip2_vision": lambda: transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**vision)),
        "chinese_clip": lambda: transformers.ChineseCLIPModel(transformers.ChineseCLIPConfig(
            text_config=TEXT, vision_config=vision, projection_dim=16)),
        "altclip": lambda: transformers.AltCLIPModel(transformers.AltCLIPConfig(
            text_config=dict(TEXT, max_position_embeddings=18, project_dim=32), vision_config=vision, projection_dim=16)),
    }
    return models[kind]().eval()


def images(batch: int = 2 * FRAMES, side: int = IMAGE, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def processor_inputs(pixels: torch.Tensor) -> dict:
    """SigLIP 2 inputs as its image processor makes them (transformers' own patchify), unpadded."""
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    patches = torch.stack([convert_image_to_patches(image, PATCH) for image in pixels])
    rows, cols = pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH
    return {"pixel_values": patches, "pixel_attention_mask": torch.ones(len(pixels), rows * cols, dtype=torch.int32),
            "spatial_shapes": torch.tensor([[rows, cols]] * len(pixels))}


def own_outputs(model, kind: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """Token states and embeddings by the model's own forward (no clipadapt code)."""
    pixels = images(seed=seed)
    inputs = processor_inputs(pixels) if kind.startswith("siglip2") else {"pixel_values": pixels}
    vision = getattr(model, "vision_model", model)
    with torch.no_grad():
        out = {"tokens": vision(**inputs).last_hidden_state}
        pooled = model.get_image_features(**inputs) if hasattr(model, "get_image_features") else vision(**inputs)
        out["image"] = pooled.pooler_output
        if kind in WITH_TEXT:
            ids = torch.randint(0, 100, (3, 16), generator=torch.Generator().manual_seed(seed))
            out["text"] = model.get_text_features(input_ids=ids).pooler_output
    return out


def injected_outputs(model, kind: str, seed: int = 1) -> dict[str, torch.Tensor]:
    with clipadapt.frames(model, FRAMES):
        return own_outputs(model, kind, seed)


def towers(kind: str) -> tuple[str, ...]:
    return ("visual", "text") if kind in WITH_TEXT else ("visual",)


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


def test_the_towers_say_where_the_class_token_and_the_grid_are(kind):
    model = build(kind)
    visual = get_tower(model, "visual")
    has_cls = kind in ("chinese_clip", "altclip")
    assert (visual.cls_index, visual.num_prefix_tokens) == ((0, 1) if has_cls else (None, 0))
    assert (len(visual.blocks), visual.width, visual.grid, visual.image_size) == (2, 32, (4, 4), IMAGE)
    assert tuple(HF.towers(model)) == towers(kind)


@pytest.mark.parametrize("site", SITES)
def test_zero_initialised_adapters_leave_the_models_own_outputs_bit_identical(kind, site):
    model = build(kind)
    before = own_outputs(model, kind)
    for tower in towers(kind):
        clipadapt.inject(model, "bottleneck", tower=tower, layers="all", site=site, width=8)
    if site in ("pre_attn", "pre_mlp"):
        clipadapt.inject(model, "ted", tower="visual", layers="all", site=site, width=8)
    clipadapt.inject(model, "lora", tower="visual", layers="all", targets=["q", "k", "v", "o"])
    after = injected_outputs(model, kind)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def block_by_hand(layer, x, site, adapter):
    """A SigLIP/CLIP encoder layer with `adapter` at `site`, written out from its submodules."""
    ln_1, attn, ln_2, mlp = layer.layer_norm1, layer.self_attn, layer.layer_norm2, layer.mlp
    if site == "pre_attn":
        x = x + adapter(x, None)
    branch = attn(hidden_states=ln_1(x), attention_mask=None)[0]
    if site == "attn_out":
        branch = branch + adapter(branch, None)
    h = x + branch
    if site == "pre_mlp":
        h = h + adapter(h, None)
    out = h + mlp(ln_2(h))
    if site == "mlp_parallel":
        out = out + adapter(ln_2(h), None)
    if site == "post_block":
        out = out + adapter(out, None)
    return out


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("kind_name", ["siglip", "siglip2", "chinese_clip"])
def test_each_site_changes_the_block_where_its_name_says(kind_name, site):
    model = build(kind_name)
    layer = get_tower(model, "visual").blocks[1].module
    plain = copy.deepcopy(layer)  # a hook-free copy for the written-out reference
    adapter = randomize_(clipadapt.inject(model, "bottleneck", layers=1, site=site, width=8).modules[0][2], std=0.2)
    x = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(layer(x, None), block_by_hand(plain, x, site, adapter), rtol=1e-5, atol=1e-6)


def test_eject_restores_keys_values_and_outputs_bit_for_bit(kind):
    model = build(kind)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    before = own_outputs(model, kind)
    for tower in towers(kind):
        for site in SITES:
            randomize_(clipadapt.inject(model, "bottleneck", tower=tower, layers=[0, -1], site=site, width=8).modules[0][2])
    randomize_(clipadapt.inject(model, "lora", layers="all", targets=["q", "v", "o"]).modules[0][2], std=0.2)
    clipadapt.inject(model, "st", layers="all", width=8)
    changed = injected_outputs(model, kind)
    assert not torch.equal(changed["image"], before["image"])
    clipadapt.eject(model)
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    after = own_outputs(model, kind)
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_one_training_step_moves_the_adapters_and_nothing_else(kind):
    model = build(kind)
    clipadapt.inject(model, "ted", layers="all", width=8)
    clipadapt.inject(model, "bottleneck", layers=[-1], site="mlp_parallel", width=8, init="default")
    frozen = {name: p.clone() for name, p in model.named_parameters() if not p.requires_grad}
    trainable = {name: p.clone() for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters." in name for name in trainable)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    with clipadapt.frames(model, FRAMES):
        embeddings = HF.visual(model).encode(images())
    embeddings.square().mean().backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(after[name], value) for name, value in frozen.items())
    moved = [name for name, value in trainable.items() if not torch.equal(after[name], value)]
    assert any(".ted_" in name for name in moved) and any("bottleneck" in name for name in moved)


@pytest.mark.parametrize("kind_name", ["siglip", "siglip2"])
def test_hugging_faces_gradient_checkpointing_gives_temporal_adapters_the_same_gradients(kind_name):
    def gradients(checkpointing: bool):
        model = build(kind_name).train()
        for handle in (clipadapt.inject(model, "st", layers="all", width=8), clipadapt.inject(model, "ted", layers="all", width=8),
                       clipadapt.inject(model, "aim", layers=[1], num_frames=FRAMES)):
            for _, _, module in handle.modules:
                randomize_(module, std=0.1)
        if checkpointing:  # blocks re-run in backward, after `frames()` has exited
            model.gradient_checkpointing_enable()
        with clipadapt.frames(model, FRAMES):
            embeddings = HF.visual(model).encode(images())
        embeddings.square().sum().backward()
        return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert torch.equal(plain[name], checkpointed[name]), name


def test_saved_adapters_load_into_a_fresh_model_with_the_same_outputs(kind, tmp_path):
    model = build(kind)
    for handle in (clipadapt.inject(model, "st", layers="all", width=8),
                   clipadapt.inject(model, "lora", layers=[-1], targets=["q", "k", "v", "o"])):
        for _, _, module in handle.modules:
            randomize_(module, std=0.1)
    path = clipadapt.save_adapters(model, tmp_path / f"{kind}.safetensors")
    fresh = clipadapt.load_adapters(build(kind), path)
    saved, loaded = injected_outputs(model, kind), injected_outputs(fresh, kind)
    assert not torch.equal(saved["image"], own_outputs(build(kind), kind)["image"])
    for name in saved:
        assert torch.equal(saved[name], loaded[name]), name


def test_lora_updates_exactly_the_q_k_v_o_projections(kind):
    model = build(kind)
    reference = copy.deepcopy(model)
    handle = clipadapt.inject(model, "lora", layers="all", rank=2, alpha=4.0, targets=["q", "k", "v", "o"])
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
    ref_blocks = get_tower(reference, "visual").blocks
    with torch.no_grad():
        for layer, _, lora in handle.modules:
            randomize_(lora, seed=layer, std=0.2)
            for target, update in lora.updates.items():  # W + (alpha / r)·B·A, on the plain copy
                linear = getattr(ref_blocks[layer].attn, names[target])
                linear.weight += 2.0 * update.B @ update.A
    for name, value in own_outputs(reference, kind).items():
        torch.testing.assert_close(injected_outputs(model, kind)[name], value, rtol=1e-5, atol=1e-5, msg=name)


def test_siglip2_frames_are_cut_into_patches_as_its_processor_does():
    pixels = images(side=48)
    ours, theirs = naflex_inputs(pixels, PATCH), processor_inputs(pixels)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key
    model = build("siglip2")
    with torch.no_grad():
        torch.testing.assert_close(HF.visual(model).encode(pixels), model.get_image_features(**theirs).pooler_output,
                                   rtol=0, atol=0)


def test_siglip2_video_frames_of_another_fixed_size_take_temporal_adapters():
    model = build("siglip2")
    clipadapt.inject(model, "st", layers="all", width=8)  # ST-Adapter reshapes tokens to the patch grid
    video = clipadapt.VideoCLIP(model, pooling="mean")
    features = video.encode_video(torch.randn(2, 3, 3, 48, 48))  # 6x6 patches, none padded
    assert features.video.shape == (2, 32) and features.cls is None
    for height, width in ((36, 36), (64, 16)):  # 64x16 would pass for 4x4 patches: refused as well
        with pytest.raises(ValueError, match=f"frames of {height}x{width} pixels: clipadapt feeds square frames"):
            video.encode_video(torch.randn(1, 2, 3, height, width))


@pytest.mark.parametrize("kind_name", WITH_TEXT)
def test_siglip_text_pieces_equal_get_text_features(kind_name):
    model = build(kind_name)
    text = HF.text(model)
    assert (text.pool, text.causal, text.embed_dim, text.context_length) == ("last", False, 32, 16)
    ids = torch.randint(0, 100, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(text.encode(ids), model.get_text_features(input_ids=ids).pooler_output, rtol=0, atol=0)
        states = text.run_blocks(text.run_blocks(text.embed(ids), 0, 1), 1)  # blocks in two runs, as the cached text path
        pooled = text.project(text.ln_final(states)[:, -1])
        torch.testing.assert_close(pooled, model.text_model(input_ids=ids).pooler_output, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="padded to the context of 16 tokens, got 9"):
        text.encode(ids[:, :9])
    with pytest.raises(ValueError, match="pools by 'last' and was not trained with OpenAI's BPE.*give its tokenizer"):
        text.tokenize(["a video of archery"])


@pytest.mark.parametrize("kind_name", WITH_TEXT)
def test_siglip_logits_are_scale_times_cosine_plus_bias_as_the_model_computes_them(kind_name):
    model = build(kind_name)
    pixels = images()
    ids = torch.randint(0, 100, (3, 16), generator=torch.Generator().manual_seed(0))
    inputs = processor_inputs(pixels) if kind_name == "siglip2" else {"pixel_values": pixels}
    with torch.no_grad():
        own = model(input_ids=ids, **inputs).logits_per_image
        image = torch.nn.functional.normalize(HF.visual(model).encode(pixels), dim=-1)
        text = torch.nn.functional.normalize(HF.text(model).encode(ids), dim=-1)
        ours = HF.logit_scale(model).exp() * image @ text.t() + HF.logit_bias(model)
    torch.testing.assert_close(ours, own, rtol=1e-5, atol=1e-5)
    assert HF.logit_bias(model) is model.logit_bias


def test_clip_has_no_logit_bias():
    from tiny import tiny_hf

    assert HF.logit_bias(tiny_hf()) is None and spec_of_family("open_clip").logit_bias(torch.nn.Linear(1, 1)) is None


@pytest.mark.parametrize("kind_name", ["chinese_clip", "altclip"])
def test_post_norm_text_towers_refuse_text_adapters_and_text_heads_in_one_line(kind_name):
    model = build(kind_name)
    with pytest.raises(ValueError, match=r"tower 'text' is not in this \w+Model; it has: visual \(its text tower is a post-norm"):
        clipadapt.inject(model, "bottleneck", tower="text", layers=[-1])
    video = clipadapt.VideoCLIP(model, CLASSNAMES)
    assert video.text is None and "would not be exact" in video.no_text_reason
    with pytest.raises(ValueError, match="cmlm encodes masked prompts and needs a text tower: its text tower is a post-norm"):
        video.add_head("cmlm")
    with pytest.raises(ValueError, match="encodes no text: its text tower is a post-norm"):
        video.class_embeddings()
    video.add_head("vc")  # the class token is there: a visual-only head trains
    out = video.train()(torch.randn(2, FRAMES, 3, IMAGE, IMAGE), torch.tensor([0, 1]))
    out["loss"].backward()


def test_a_siglip_vision_model_without_its_pooling_head_is_refused():
    model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION, image_size=IMAGE, vision_use_head=False))
    with pytest.raises(UnsupportedModelError, match="no class token and no pooling head"):
        HF.visual(model)


# ---- building --------------------------------------------------------------------------------

TINY = TinyConfig(embed_dim=16, width=32, heads=2, text_width=32, text_heads=2, context_length=16, vocab_size=100)


@pytest.mark.parametrize("arch, model_class", [(None, "CLIPModel"), ("siglip", "SiglipModel"), ("siglip2", "Siglip2Model"),
                                               ("chinese_clip", "ChineseCLIPModel"), ("altclip", "AltCLIPModel")])
def test_tiny_models_of_each_type_build_offline(arch, model_class):
    model = HF.build(arch, tiny=TINY)
    assert type(model).__name__ == model_class
    visual = HF.visual(model)
    assert visual.tower.grid == (4, 4) and visual.encode(torch.randn(1, 3, 32, 32)).shape == (1, visual.embed_dim)
    if arch and arch.startswith("siglip"):
        assert HF.text(model).embed_dim == visual.embed_dim == TINY.width


def test_a_hub_model_with_a_tiny_config_is_refused_and_other_names_give_clip():
    with pytest.raises(ValueError, match="names a Hugging Face model, but model.config builds a tiny random one: drop "
                                         "model.config, or name a tiny model type: clip, siglip, siglip2, chinese_clip, altclip"):
        HF.build("google/siglip-base-patch16-224", tiny=TINY)
    assert type(HF.build("ViT-B-16", tiny=TINY)).__name__ == "CLIPModel"  # the recipe's default arch, as other families


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_a_hub_name_offline_and_not_cached_is_one_line_saying_what_to_provide(empty_hf_cache):
    with pytest.raises(ValueError) as error:
        HF.build("google/siglip2-base-patch16-naflex", weights="pretrained")
    message = str(error.value)
    assert "\n" not in message
    assert "'google/siglip2-base-patch16-naflex' is not in the Hugging Face cache and HF_HUB_OFFLINE=1" in message
    assert "hf download google/siglip2-base-patch16-naflex" in message and "local directory holding its config.json" in message


def test_a_local_directory_builds_offline_random_or_with_its_weights(tmp_path, empty_hf_cache):
    saved = build("siglip2")
    saved.save_pretrained(tmp_path / "siglip2")
    random = HF.build(str(tmp_path / "siglip2"))
    loaded = HF.build(str(tmp_path / "siglip2"), weights=str(tmp_path / "siglip2"))
    assert type(random).__name__ == type(loaded).__name__ == "Siglip2Model"
    assert torch.equal(loaded.logit_bias, saved.logit_bias) and not torch.equal(random.vision_model.head.probe,
                                                                                saved.vision_model.head.probe)
    with pytest.raises(FileNotFoundError, match="is not a directory holding a Hugging Face config.json"):
        HF.build(str(tmp_path / "nothing-here"))


# ---- open_clip configs whose text tower is a Hugging Face model ------------------------------


@pytest.mark.parametrize("arch, hf_name", [("roberta-ViT-B-32", "roberta-base"), ("xlm-roberta-base-ViT-B-32", "xlm-roberta-base"),
                                           ("mt5-base-ViT-B-32", "google/mt5-base"),
                                           ("nllb-clip-base", "facebook/nllb-200-distilled-600M")])
def test_open_clip_hf_text_configs_offline_without_the_text_config_are_refused_in_one_line(arch, hf_name, empty_hf_cache):
    with pytest.raises(ValueError) as error:
        spec_of_family("open_clip").build(arch)
    message = str(error.value)
    assert "\n" not in message
    assert f"the text tower of open_clip config {arch!r}, text_cfg.hf_model_name {hf_name!r} is not in the Hugging Face cache" in message
    assert "open_clip.add_model_config" in message


HF_TEXT_CONFIGS = {
    "roberta": (lambda: transformers.RobertaConfig(**dict(TEXT, max_position_embeddings=18)),
                "its text tower is a post-norm RobertaModel in open_clip's HFTextEncoder (RobertaLayer: LayerNorm after each"),
    "mt5": (lambda: transformers.MT5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2),
            "its text tower is a Hugging Face MT5Stack in open_clip's HFTextEncoder, whose layers are not laid out as pre-norm"),
}


@pytest.mark.parametrize("text_model", HF_TEXT_CONFIGS)
def test_an_open_clip_config_whose_hf_text_model_is_a_local_directory_builds_offline(text_model, tmp_path, empty_hf_cache,
                                                                                     monkeypatch):
    import open_clip
    from open_clip.factory import _MODEL_CONFIGS

    make_config, refusal = HF_TEXT_CONFIGS[text_model]
    make_config().save_pretrained(tmp_path / text_model)
    monkeypatch.setitem(_MODEL_CONFIGS, "tiny-hf-text-ViT", {
        "embed_dim": 16,
        "vision_cfg": {"image_size": IMAGE, "patch_size": PATCH, "width": 32, "layers": 2, "head_width": 16},
        "text_cfg": {"hf_model_name": str(tmp_path / text_model), "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear"},
    })
    model = spec_of_family("open_clip").build("tiny-hf-text-ViT")
    assert type(model).__name__ == "CustomTextCLIP" and type(model.text).__name__ == "HFTextEncoder"
    with torch.no_grad():
        before = model.encode_image(images())
    clipadapt.inject(model, "ted", layers="all", width=8)
    with torch.no_grad(), clipadapt.frames(model, FRAMES):
        assert torch.equal(model.encode_image(images()), before)
    with pytest.raises(ValueError, match=re.escape(f"it has: visual ({refusal}")):
        clipadapt.inject(model, "bottleneck", tower="text", layers=[-1])
    assert refusal in clipadapt.VideoCLIP(model).no_text_reason
    assert open_clip.get_model_config("roberta-ViT-B-32")  # the shipped configs are untouched
