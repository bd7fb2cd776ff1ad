"""copy.deepcopy of an injected model: the copy owns its hooks, adapters and records."""

import copy

import pytest
import torch

import clipadapt
from clipadapt.adapters.lora import merge
from tiny import CLASSNAMES, randomize_, tiny_open_clip, tiny_text_clip, tiny_timm


def images(seed=0):
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def encode(model):
    with torch.no_grad(), clipadapt.frames(model, 2):
        return model.encode_image(images()) if hasattr(model, "encode_image") else model(images())


def adapted(builder):
    model = builder()
    for handle in (clipadapt.inject(model, "ted", layers="all", width=8), clipadapt.inject(model, "lora", layers="all", rank=2)):
        for _, _, module in handle.modules:
            randomize_(module, std=0.2)
    return model


@pytest.mark.parametrize("builder", [tiny_open_clip, tiny_timm])
def test_a_deep_copy_computes_the_same_and_ejects_itself_only(builder):
    plain = encode(builder())
    model = adapted(builder)
    before = encode(model)
    assert not torch.allclose(before, plain)
    twin = copy.deepcopy(model)
    torch.testing.assert_close(encode(twin), before)
    clipadapt.eject(twin)
    torch.testing.assert_close(encode(twin), plain)  # the copy is the plain model again
    torch.testing.assert_close(encode(model), before)  # the original keeps its adapters
    assert len(clipadapt.injections(model)) == 2 and not clipadapt.injections(twin)
    clipadapt.eject(model)
    torch.testing.assert_close(encode(model), plain)


def test_the_copys_adapters_are_its_own_parameters():
    model = adapted(tiny_open_clip)
    twin = copy.deepcopy(model)
    before = encode(model)
    with torch.no_grad():
        for _, _, module in clipadapt.injections(twin)[0].modules:
            for param in module.parameters():
                param.add_(1.0)
    assert not torch.allclose(encode(twin), before)
    torch.testing.assert_close(encode(model), before)


def test_merging_lora_in_a_copy_leaves_the_original_parametrized_and_unchanged():
    model = adapted(tiny_open_clip)
    before = encode(model)
    twin = merge(copy.deepcopy(model))
    torch.testing.assert_close(encode(twin), before, atol=1e-5, rtol=1e-5)
    assert [i.name for i in clipadapt.injections(twin)] == ["ted"]
    assert [i.name for i in clipadapt.injections(model)] == ["ted", "lora"]
    attn = model.visual.transformer.resblocks[0].attn
    assert hasattr(attn, "parametrizations") and "in_proj_weight" in attn.parametrizations
    torch.testing.assert_close(encode(model), before)


def test_cmlms_frozen_block_is_the_plain_block_whatever_the_text_block_carries():
    from clipadapt.models import build_video_clip

    clip = tiny_text_clip()
    plain = copy.deepcopy(clip.transformer.resblocks[-1])
    adapters = [{"name": "lora", "tower": "text", "layers": [-1], "options": {"rank": 2}},
                {"name": "bottleneck", "tower": "text", "layers": [-1], "options": {"width": 8}}]
    model = build_video_clip(clip, CLASSNAMES, adapters=adapters, heads=[{"name": "cmlm", "options": {"adapter_width": 8}}])
    for _, _, module in clipadapt.injections(model)[0].modules:
        randomize_(module, std=0.2)  # LoRA's update is no longer zero
    block = model.decoder.heads["cmlm"].block
    assert not hasattr(block, "adapters") and not hasattr(block.attn, "parametrizations")
    assert not block._forward_hooks and not block._forward_pre_hooks
    assert block.state_dict().keys() == plain.state_dict().keys()
    for name, tensor in plain.state_dict().items():
        assert torch.equal(block.state_dict()[name], tensor), name
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(block(x), plain(x))
