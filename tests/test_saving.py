import pytest
import torch

import clipadapt
from tiny import randomize_, tiny_open_clip


def adapted(width=64):
    model = tiny_open_clip(width=width)
    randomize_(clipadapt.inject(model, "ted", layers="all", width=8).modules[0][2])
    clipadapt.inject(model, "bottleneck", tower="text", layers=-1, width=8, init="default")
    return model


def features(model):
    video = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = torch.arange(32).reshape(2, 16) + 60
    with torch.no_grad(), clipadapt.frames(model, 2):
        return model.encode_image(video), model.encode_text(tokens)


def test_save_then_load_on_a_fresh_model_reproduces_outputs(tmp_path):
    model = adapted()
    path = clipadapt.save_adapters(model, tmp_path / "ted.safetensors")
    fresh = tiny_open_clip()
    clipadapt.load_adapters(fresh, path)
    assert [i.spec() for i in clipadapt.injections(fresh)] == [i.spec() for i in clipadapt.injections(model)]
    for a, b in zip(features(model), features(fresh)):
        assert torch.equal(a, b)


def test_loading_onto_another_backbone_is_refused(tmp_path):
    path = clipadapt.save_adapters(adapted(), tmp_path / "ted.safetensors")
    with pytest.raises(clipadapt.BackboneMismatchError, match="width 64.*width 96"):
        clipadapt.load_adapters(tiny_open_clip(width=96), path)


def test_missing_or_foreign_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        clipadapt.load_adapters(tiny_open_clip(), tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a clipadapt adapter file"):
        clipadapt.load_adapters(tiny_open_clip(), tmp_path / "other.safetensors")


def video_model(seed=0):
    from clipadapt.models import build_video_clip
    from tiny import CLASSNAMES, tiny_text_clip

    torch.manual_seed(seed)
    adapters = [{"name": "ted", "options": {"width": 8}}, {"name": "bottleneck", "tower": "text", "layers": [-1], "options": {"width": 8}}]
    heads = [{"name": "cmc", "weight": 0.5}, {"name": "vc", "options": {"dropout": 0.0}}]
    return build_video_clip(tiny_text_clip(), CLASSNAMES, adapters=adapters, heads=heads, pooling="conv")


def test_a_video_clip_saves_adapters_pooling_and_heads_and_comes_back_on_a_fresh_clip(tmp_path):
    from clipadapt.models import VideoCLIP
    from tiny import tiny_text_clip

    model = video_model()
    randomize_(model.pooling)
    randomize_(model.decoder)
    for injection in clipadapt.injections(model):
        for _, _, module in injection.modules:
            randomize_(module)
    path = clipadapt.save_adapters(model, tmp_path / "video.safetensors")
    again = VideoCLIP.from_adapters(tiny_text_clip(), path)
    clips = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model.eval()(clips), again(clips)
    assert expected.keys() == got.keys() == {"cmc", "vc", "fused"}
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert again.video_spec() == model.video_spec()


def test_a_video_models_file_on_a_bare_clip_is_refused_with_the_way_to_load_it(tmp_path):
    from tiny import tiny_text_clip

    path = clipadapt.save_adapters(video_model(), tmp_path / "video.safetensors")
    with pytest.raises(ValueError, match="holds a video model .*VideoCLIP.from_adapters"):
        clipadapt.load_adapters(tiny_text_clip(), path)
