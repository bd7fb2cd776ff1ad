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
