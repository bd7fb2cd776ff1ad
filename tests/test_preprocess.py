"""Image preprocessing from the model's own config (open_clip, timm, Hugging Face), recipe
overrides, and the mean and std that training and evaluation normalise with."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode
from typer.testing import CliRunner

from clipadapt.backbones import preprocess_of, spec_of_family
from clipadapt.backbones.preprocess import CLIP_MEAN, Preprocess, carried_preprocess, from_hf_directory
from clipadapt.cli import app
from clipadapt.data.recipe import recipe_preprocess
from clipadapt.data.transforms import eval_transform
from clipadapt.engine.evaluate import evaluate
from clipadapt.recipes import load_recipe

OPEN_CLIP = spec_of_family("open_clip")


@pytest.mark.parametrize("arch, tag", [("ViT-B-16-SigLIP", "webli"), ("ViT-B-16-SigLIP2-384", "webli"), ("ViT-B-16", "openai")])
def test_open_clip_preprocessing_is_the_pretrained_configs(arch, tag):
    import open_clip

    theirs = open_clip.get_pretrained_cfg(arch, tag)
    for weights in (tag, None):  # random weights: the config every tag agrees on
        ours = OPEN_CLIP.preprocess_for(arch, weights)
        assert (ours.mean, ours.std, ours.interpolation) == (theirs["mean"], theirs["std"], theirs["interpolation"])
        assert ours.size == open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    if "SigLIP" in arch:
        assert ours.mean == (0.5, 0.5, 0.5) != CLIP_MEAN


def test_open_clip_build_gives_random_weight_models_their_archs_preprocessing(monkeypatch):
    import open_clip

    seen = {}
    monkeypatch.setattr(open_clip, "create_model", lambda arch, **kwargs: seen.update(kwargs) or nn.Identity())
    OPEN_CLIP.build("ViT-B-16-SigLIP", None)
    assert seen["force_preprocess_cfg"] == {"mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic"}


def test_a_built_open_clip_model_reports_its_preprocess_cfg():
    import open_clip
    from open_clip.model import set_model_preprocess_cfg

    torch.manual_seed(0)
    clip = open_clip.CLIP(32, dict(image_size=32, patch_size=8, width=64, layers=1, head_width=32),
                          dict(context_length=8, vocab_size=100, width=32, layers=1, heads=2))
    assert preprocess_of(clip).source.startswith("CLIP's defaults")  # a config-built model states only its size
    set_model_preprocess_cfg(clip, {"size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3, "interpolation": "bilinear"})
    assert preprocess_of(clip) == Preprocess((0.5,) * 3, (0.25,) * 3, 32, "bilinear", "open_clip's preprocess_cfg on the model")


def test_timm_preprocessing_is_timms_resolved_data_config():
    import timm
    from timm.data import resolve_data_config
    from timm.models.vision_transformer import VisionTransformer

    arch = "vit_base_patch16_siglip_224"
    theirs = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(arch).to_dict())
    ours = spec_of_family("timm").preprocess_for(arch)
    assert (ours.mean, ours.std, ours.interpolation, ours.size) == (theirs["mean"], theirs["std"], theirs["interpolation"], theirs["input_size"][-1])
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0)
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"}
    resolved = resolve_data_config({}, model=model)
    found = preprocess_of(model)
    assert (found.mean, found.std, found.interpolation, found.size) == (resolved["mean"], resolved["std"], resolved["interpolation"], 32)


def test_a_hugging_face_directorys_image_processor_config_is_read(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": {"height": 256, "width": 256}}))
    assert from_hf_directory(tmp_path, None) == Preprocess((0.5,) * 3, (0.5,) * 3, 256, "bilinear", str(tmp_path / "preprocessor_config.json"))
    assert from_hf_directory(tmp_path / "absent", 224).source.startswith("CLIP's defaults")


def test_a_recipe_overrides_the_models_values_and_says_so():
    recipe = load_recipe("m2clip_k400", ["model.arch=ViT-B-16-SigLIP", "model.weights=null", "data.size=null",
                                         "data.interpolation=null", "data.std=[0.25,0.25,0.25]"])
    found = recipe_preprocess(recipe)
    assert (found.mean, found.std, found.size, found.interpolation) == ((0.5,) * 3, (0.25,) * 3, 224, "bicubic")
    assert "the recipe sets data.std" in found.source


def test_a_recipe_whose_image_size_is_unknown_is_refused_naming_the_key():
    recipe = load_recipe("m2clip_k400", ["model.family=hf", "model.arch=some/hub-id", "data.size=null"])
    with pytest.raises(ValueError, match="image size of model 'some/hub-id' is unknown.*set data.size"):
        recipe_preprocess(recipe)


def test_validate_prints_the_preprocessing_that_will_be_used():
    result = CliRunner().invoke(app, ["validate", "m2clip_k400", "model.arch=ViT-B-16-SigLIP", "model.weights=null",
                                      "data.interpolation=null"])
    assert result.exit_code == 0, result.output
    assert "images 224 px, bicubic, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)" in result.output


def test_resizing_uses_the_interpolation_asked_for():
    clip = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8)
    for mode in ("bicubic", "bilinear"):
        ours = eval_transform(20, interpolation=mode)(clip)
        theirs = TF.resize(clip, [20, 30], interpolation=InterpolationMode(mode), antialias=True)[..., 5:25]
        assert torch.equal(ours, theirs)


class Recorder(nn.Module):
    """A video model that carries a preprocessing and records what it is given."""

    def __init__(self, preprocess: Preprocess):
        super().__init__()
        self.preprocess, self.seen = preprocess, []
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, video):
        self.seen.append(video)
        return {"h": torch.zeros(video.shape[0], 2) + self.weight}


def test_evaluation_normalises_with_the_mean_and_std_the_model_carries():
    model = Recorder(Preprocess((0.5,) * 3, (0.25,) * 3, 4, "bicubic", "test"))
    video = torch.randint(0, 256, (2, 2, 3, 4, 4), dtype=torch.uint8)
    evaluate(model, [{"video": video, "label": torch.tensor([0, 1]), "index": torch.tensor([0, 1])}])
    torch.testing.assert_close(model.seen[0], (video.float() / 255 - 0.5) / 0.25)
    wrapper = nn.Module()
    wrapper.module = model
    assert carried_preprocess(wrapper) is model.preprocess


# the image processors' published statistics, written out: SigLIP normalises to [-1, 1], CLIP with OpenAI's
SIGLIP_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI_STATS = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


@pytest.mark.parametrize("model_type, stats, interpolation", [
    ("siglip", SIGLIP_STATS, "bicubic"), ("siglip2", SIGLIP_STATS, "bilinear"), ("clip", OPENAI_STATS, "bicubic")])
def test_a_hugging_face_model_without_a_processor_config_takes_its_types_processor(model_type, stats, interpolation):
    import transformers

    from clipadapt.backbones import TinyConfig

    spec, tiny = spec_of_family("hf"), TinyConfig()
    models = [spec.build(model_type, tiny=tiny)]
    if model_type == "siglip":  # the vision model alone has its own model type, siglip_vision_model
        models.append(transformers.SiglipVisionModel(models[0].config.vision_config))
    for found in [spec.preprocess_for(model_type, None, tiny)] + [preprocess_of(model) for model in models]:
        assert (found.mean, found.std, found.interpolation, found.size) == (*stats, interpolation, tiny.image_size), found


def test_a_hugging_face_model_loaded_from_a_directory_takes_its_processor_config(tmp_path):
    import transformers

    from clipadapt.backbones import TinyConfig

    spec_of_family("hf").build("siglip", tiny=TinyConfig()).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], "resample": 2, "size": {"height": 32, "width": 32}}))
    wanted = ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear", 32)
    loaded = preprocess_of(transformers.AutoModel.from_pretrained(tmp_path))
    recipe = load_recipe("m2clip_k400", ["model.family=hf", f"model.arch={tmp_path}", "model.weights=null",
                                         "data.size=null", "data.interpolation=null"])
    for found in (loaded, recipe_preprocess(recipe)):
        assert (found.mean, found.std, found.interpolation, found.size) == wanted, found
        assert found.source.startswith(str(tmp_path / "preprocessor_config.json"))
