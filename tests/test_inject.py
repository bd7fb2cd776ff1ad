"""Laws of the injection engine, for every backbone family and every site."""

import pytest
import torch

import clipadapt
from clipadapt.inject import SITES
from tiny import BUILDERS, encode, randomize_, tower_input, towers_for

NUM_FRAMES = 2


def outputs(model, family):
    with torch.no_grad(), clipadapt.frames(model, NUM_FRAMES) if clipadapt.injections(model) else _null():
        return {t: encode(model, family, t, tower_input(t)) for t in towers_for(family)}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("site", SITES)
def test_zero_initialised_adapters_leave_outputs_bit_identical(family, tiny, site):
    before = outputs(tiny, family)
    for tower in towers_for(family):
        clipadapt.inject(tiny, "bottleneck", tower=tower, layers="all", site=site, width=8)
    if site in ("pre_attn", "pre_mlp"):
        clipadapt.inject(tiny, "ted", tower="visual", layers="all", site=site, width=8)
    after = outputs(tiny, family)
    for tower in before:
        assert torch.equal(before[tower], after[tower]), tower


@pytest.mark.parametrize("site", SITES)
def test_eject_restores_keys_and_outputs(family, tiny, site):
    keys = list(tiny.state_dict())
    before = outputs(tiny, family)
    for tower in towers_for(family):
        randomize_(clipadapt.inject(tiny, "bottleneck", tower=tower, layers=[0, -1], site=site, width=8).modules[0][2])
    changed = outputs(tiny, family)
    assert not torch.equal(changed["visual"], before["visual"])
    clipadapt.eject(tiny)
    assert list(tiny.state_dict()) == keys
    after = outputs(tiny, family)
    for tower in before:
        assert torch.equal(before[tower], after[tower]), tower


@pytest.mark.parametrize("site", SITES)
def test_only_adapters_train_and_gradients_reach_them_through_every_site(family, tiny, site):
    handles = [clipadapt.inject(tiny, "bottleneck", tower=t, layers="all", site=site, width=8) for t in towers_for(family)]
    trainable = {n for n, p in tiny.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters." in n for n in trainable)
    with clipadapt.frames(tiny, NUM_FRAMES):
        loss = sum(encode(tiny, family, t, tower_input(t)).square().mean() for t in towers_for(family))
    loss.backward()
    for handle in handles:
        for layer, _, module in handle.modules:
            grad = module.mlp.up.weight.grad
            assert grad is not None and grad.abs().sum() > 0, (handle.tower, layer)


def test_freeze_without_adapters_freezes_everything(tiny):
    clipadapt.freeze(tiny)
    assert not any(p.requires_grad for p in tiny.parameters())


def test_freeze_false_leaves_the_backbone_trainable(tiny):
    clipadapt.inject(tiny, "bottleneck", tower="visual", layers=0, freeze=False)
    assert all(p.requires_grad for p in tiny.parameters())


def test_layers_accept_negative_ints_ranges_and_all(tiny):
    assert clipadapt.inject(tiny, "bottleneck", layers=-1, site="pre_attn").layers == [1]
    assert clipadapt.inject(tiny, "bottleneck", layers=range(2), site="attn_out").layers == [0, 1]
    assert clipadapt.inject(tiny, "bottleneck", layers="all", site="post_block").layers == [0, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=5), r"layer 5 does not exist: the visual tower has 2 blocks \(0\.\.1"),
        (dict(layers=-3), r"layer -3 does not exist"),
        (dict(tower="audio"), r"tower 'audio' is not in this CLIP; it has: visual, text"),
        (dict(site="pre_ffn"), r"unknown site 'pre_ffn' .*sites are pre_attn, attn_out, pre_mlp, mlp_parallel, post_block"),
        (dict(layers="some"), r"layers='some' is not understood"),
    ],
)
def test_bad_injections_name_the_valid_values(kwargs, message):
    model = BUILDERS["open_clip"]()
    with pytest.raises(ValueError, match=message):
        clipadapt.inject(model, "bottleneck", **kwargs)


def test_the_same_adapter_twice_at_the_same_place_is_an_error():
    model = BUILDERS["open_clip"]()
    clipadapt.inject(model, "bottleneck", layers=[0, 1], site="pre_mlp")
    with pytest.raises(ValueError, match="already injected in visual block 1 at site 'pre_mlp'"):
        clipadapt.inject(model, "bottleneck", layers=1, site="pre_mlp")
    clipadapt.inject(model, "bottleneck", layers=1, site="pre_attn")  # another site is fine


def test_unknown_adapter_suggests_the_closest_name():
    with pytest.raises(KeyError, match="Did you mean 'bottleneck'"):
        clipadapt.inject(BUILDERS["open_clip"](), "botleneck")


def test_eject_one_handle_keeps_the_others():
    model = BUILDERS["open_clip"]()
    first = clipadapt.inject(model, "bottleneck", layers=0, site="pre_mlp")
    second = clipadapt.inject(model, "ted", layers=1, width=8)
    clipadapt.eject(model, first)
    assert clipadapt.injections(model) == [second]
    names = [n for n, _ in model.named_parameters() if ".adapters." in n]
    assert names and all(".resblocks.1.adapters.ted_pre_mlp." in n for n in names)
    with pytest.raises(ValueError, match="not in this model"):
        clipadapt.eject(model, first)


def test_adapters_move_with_the_model_and_are_submodules_of_their_block():
    model = BUILDERS["open_clip"]()
    clipadapt.inject(model, "ted", layers=0, width=8)
    block = model.visual.transformer.resblocks[0]
    assert "ted_pre_mlp" in block.adapters
    model.to(torch.float64)
    assert block.adapters["ted_pre_mlp"].te.down.weight.dtype == torch.float64
