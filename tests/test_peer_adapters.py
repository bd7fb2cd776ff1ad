"""Laws of the peer adapters (ST-Adapter, AIM, LoRA) and their parameter counts on ViT-B/16."""

from types import SimpleNamespace

import pytest
import torch
from einops import rearrange
from hypothesis import given, settings, strategies as st

import clipadapt
from clipadapt.adapters import LoRAAdapter, STAdapter
from clipadapt.adapters.aim import AIMJoint, AIMSpatial, AIMTemporal
from clipadapt.adapters.lora import merge
from clipadapt.backbones import get_tower
from tiny import BUILDERS, IMAGE, encode, randomize_, tower_input, towers_for

NUM_FRAMES = 2
PEERS = {
    "st": ("st", dict(width=8)),
    "st_two_sites": ("st", dict(width=8, site=["pre_attn", "pre_mlp"])),
    "aim": ("aim", dict(num_frames=NUM_FRAMES)),
    "lora": ("lora", dict(rank=4, targets=["q", "k", "v", "o"])),
}


def peer_towers(name, family):
    """LoRA goes into every tower; the temporal adapters into the visual one."""
    return towers_for(family) if name == "lora" else ("visual",)


def outputs(model, family):
    with torch.no_grad(), clipadapt.frames(model, NUM_FRAMES):
        return {t: encode(model, family, t, tower_input(t)) for t in towers_for(family)}


def inject_peer(model, family, peer):
    name, options = PEERS[peer]
    return [clipadapt.inject(model, name, tower=t, layers="all", **options) for t in peer_towers(name, family)]


@pytest.mark.parametrize("peer", PEERS)
def test_fresh_peer_adapters_leave_outputs_bit_identical(family, tiny, peer):
    before = outputs(tiny, family)
    inject_peer(tiny, family, peer)
    after = outputs(tiny, family)
    for tower in before:
        assert torch.equal(before[tower], after[tower]), tower


@pytest.mark.parametrize("peer", PEERS)
def test_eject_restores_keys_parameters_and_outputs(family, tiny, peer):
    keys = list(tiny.state_dict())
    originals = [(p, p.detach().clone()) for p in tiny.parameters()]
    before = outputs(tiny, family)
    for handle in inject_peer(tiny, family, peer):
        for _, _, module in handle.modules:
            randomize_(module, std=0.2)
    assert not torch.equal(outputs(tiny, family)["visual"], before["visual"])
    clipadapt.eject(tiny)
    assert list(tiny.state_dict()) == keys
    assert [id(p) for p in tiny.parameters()] == [id(p) for p, _ in originals]
    assert all(torch.equal(p, saved) for p, saved in originals)
    after = outputs(tiny, family)
    for tower in before:
        assert torch.equal(before[tower], after[tower]), tower


@pytest.mark.parametrize("peer", ["st", "aim", "lora"])
def test_every_peer_factor_gets_a_gradient_and_nothing_else_trains(peer):
    model = BUILDERS["open_clip"]()
    name, options = PEERS[peer]
    handles = [clipadapt.inject(model, name, layers=0, **options)]  # the last block's patches reach no output
    assert all(".adapters." in n for n, p in model.named_parameters() if p.requires_grad)
    with clipadapt.frames(model, NUM_FRAMES):
        model.encode_image(tower_input("visual")).square().sum().backward()
    zero_started = {"st": ("conv.weight",), "aim": ("mlp.up.weight",), "lora": (".B",)}[peer]
    for handle in handles:
        for layer, site, module in handle.modules:
            for pname, param in module.named_parameters():
                if pname.endswith(zero_started):
                    assert param.grad is not None and param.grad.abs().sum() > 0, (layer, site, pname)


# ---------------------------------------------------------------------------------------------
# ST-Adapter


def grid_ctx(num_frames, side=4):
    return SimpleNamespace(num_frames=num_frames, num_prefix_tokens=1, grid=lambda tokens: (side, side))


def test_st_prefix_tokens_get_a_zero_delta():
    adapter = randomize_(STAdapter(16, width=8), std=0.2)
    delta = adapter(torch.randn(6, 17, 16), grid_ctx(3))
    assert torch.equal(delta[:, 0], torch.zeros_like(delta[:, 0]))
    assert delta[:, 1:].abs().sum() > 0


@settings(max_examples=15, deadline=None)
@given(videos=st.integers(1, 3), num_frames=st.integers(1, 5), side=st.integers(1, 3))
def test_st_videos_batched_equal_each_alone(videos, num_frames, side):
    adapter = randomize_(STAdapter(16, width=8), std=0.2)
    x = torch.randn(videos * num_frames, 1 + side * side, 16, generator=torch.Generator().manual_seed(0))
    ctx = grid_ctx(num_frames, side)
    alone = torch.cat([adapter(video, ctx) for video in x.split(num_frames)])
    torch.testing.assert_close(adapter(x, ctx), alone, rtol=1e-5, atol=1e-6)


def test_st_changing_frame_t_changes_only_frames_t_minus_1_to_t_plus_1():
    model = BUILDERS["open_clip"]()
    randomize_(clipadapt.inject(model, "st", layers=0, width=8).modules[0][2], std=0.2)
    num_frames, t = 5, 2
    video = torch.randn(num_frames, 3, IMAGE, IMAGE)
    edited = video.clone()
    edited[t] += torch.randn(3, IMAGE, IMAGE)
    with torch.no_grad(), clipadapt.frames(model, num_frames):
        a, b = model.encode_image(video), model.encode_image(edited)
    changed = [(a[i] - b[i]).abs().max().item() > 1e-5 for i in range(num_frames)]
    assert changed == [False, True, True, True, False]


def test_st_kernel_must_be_three_odd_sizes():
    with pytest.raises(ValueError, match=r"st kernel_size \(3, 1\) must be three odd positive ints"):
        STAdapter(16, kernel_size=(3, 1))


# ---------------------------------------------------------------------------------------------
# AIM


@pytest.fixture(scope="module")
def aim_block():
    return get_tower(BUILDERS["open_clip"](), "visual").blocks[0]


def block_ctx(block, num_frames):
    return SimpleNamespace(num_frames=num_frames, block=block, tower="visual", layer=0)


def random_temporal(num_frames=0):
    return randomize_(AIMTemporal(64, num_frames=num_frames), std=0.2)


def test_aim_builds_all_three_parts_in_every_block_and_each_alone():
    model = BUILDERS["open_clip"]()
    every = clipadapt.inject(model, "aim", layers="all")
    assert [(layer, site, type(m)) for layer, site, m in every.modules] == [
        (layer, site, part)
        for layer in (0, 1)
        for site, part in (("pre_attn", AIMTemporal), ("attn_out", AIMSpatial), ("mlp_parallel", AIMJoint))
    ]
    clipadapt.eject(model)
    alone = clipadapt.inject(model, "aim", layers="all", site="mlp_parallel", scale=1.0)
    assert [(site, type(m), m.scale) for _, site, m in alone.modules] == [("mlp_parallel", AIMJoint, 1.0)] * 2


@pytest.mark.parametrize("option, holder", [(0, 0), (-1, 1), (None, None)])
def test_aim_temporal_embedding_lives_in_one_block(option, holder):
    model = BUILDERS["open_clip"]()
    handle = clipadapt.inject(model, "aim", layers="all", site="pre_attn", num_frames=4, temporal_embedding_layer=option)
    holders = [layer for layer, _, m in handle.modules if m.temporal_embedding is not None]
    assert holders == ([] if holder is None else [holder])


def test_aim_temporal_embedding_is_added_to_every_token_of_its_frame(aim_block):
    part = AIMTemporal(64, num_frames=4)
    with torch.no_grad():
        part.temporal_embedding.normal_()
    delta = part(torch.randn(2 * 3, 17, 64), block_ctx(aim_block, 3))
    expected = part.temporal_embedding[:3].repeat(2, 1)[:, None].expand(-1, 17, -1)
    assert torch.equal(delta, expected)  # the bottleneck starts at zero


@settings(max_examples=10, deadline=None)
@given(videos=st.integers(1, 3), num_frames=st.integers(1, 4))
def test_aim_temporal_videos_batched_equal_each_alone(aim_block, videos, num_frames):
    part = random_temporal(num_frames=4)
    x = torch.randn(videos * num_frames, 17, 64, generator=torch.Generator().manual_seed(0))
    ctx = block_ctx(aim_block, num_frames)
    alone = torch.cat([part(video, ctx) for video in x.split(num_frames)])
    torch.testing.assert_close(part(x, ctx), alone, rtol=1e-5, atol=1e-5)


def test_aim_temporal_without_embedding_follows_the_frame_order(aim_block):
    part = random_temporal()
    x = torch.randn(2 * 4, 17, 64)
    order = torch.tensor([2, 0, 3, 1])
    shuffled = x.reshape(2, 4, 17, 64)[:, order].reshape(8, 17, 64)
    delta = part(x, block_ctx(aim_block, 4)).reshape(2, 4, 17, 64)
    torch.testing.assert_close(part(shuffled, block_ctx(aim_block, 4)).reshape(2, 4, 17, 64), delta[:, order], rtol=1e-5, atol=1e-5)


def test_aim_temporal_attention_does_not_run_the_spatial_part(family, tiny):
    handle = clipadapt.inject(tiny, "aim", layers="all", num_frames=NUM_FRAMES)
    calls = []
    for _, site, module in handle.modules:
        if site == "attn_out":
            module.register_forward_hook(lambda module, args, output: calls.append(tuple(args[0].shape)))
    with torch.no_grad(), clipadapt.frames(tiny, NUM_FRAMES):
        encode(tiny, family, "visual", tower_input("visual"))
    assert calls == [(4, 17, 64)] * 2  # once per block, on the block's own (B·T, L, D) call


def test_aim_joint_part_scales_its_bottleneck():
    half, whole = AIMJoint(16, scale=0.5), AIMJoint(16, scale=1.0)
    randomize_(half)
    whole.load_state_dict(half.state_dict())
    x = torch.randn(3, 5, 16)
    assert torch.equal(half(x, None), 0.5 * whole(x, None))


def test_aim_more_frames_than_its_embedding_is_a_clear_error():
    model = BUILDERS["open_clip"]()
    clipadapt.inject(model, "aim", layers="all", num_frames=2)
    with pytest.raises(ValueError, match="at most 2 frames, got 4; inject it with num_frames=4"), clipadapt.frames(model, 4):
        model.encode_image(torch.randn(4, 3, IMAGE, IMAGE))


# ---------------------------------------------------------------------------------------------
# LoRA


def test_lora_merged_equals_unmerged_and_leaves_a_plain_model(family, tiny):
    keys = list(tiny.state_dict())
    for handle in inject_peer(tiny, family, "lora"):
        for _, _, module in handle.modules:
            randomize_(module, std=0.2)
    unmerged = outputs(tiny, family)
    merge(tiny)
    assert clipadapt.injections(tiny) == [] and list(tiny.state_dict()) == keys
    merged = outputs(tiny, family)
    for tower in unmerged:
        torch.testing.assert_close(merged[tower], unmerged[tower], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family_name, weight", [("open_clip", "attn.in_proj_weight"), ("timm", "attn.qkv.weight")])
def test_lora_changes_only_the_rows_of_its_targets(family_name, weight):
    model = BUILDERS[family_name]()
    block = get_tower(model, "visual").blocks[0].module
    module_name, tensor_name = weight.rsplit(".", 1)
    module = block.get_submodule(module_name)
    before = getattr(module, tensor_name).detach().clone()
    randomize_(clipadapt.inject(model, "lora", layers=0, targets=["v"]).modules[0][2], std=0.2)
    rows_equal = rearrange(getattr(module, tensor_name) == before, "(part rows) d -> part (rows d)", part=3)
    assert rows_equal.all(dim=1).tolist() == [True, True, False]  # q and k untouched
    assert not rows_equal[2].any()  # every entry of v moved


def test_lora_factors_are_saved_and_counted_once(tmp_path):
    model = BUILDERS["open_clip"]()
    handle = clipadapt.inject(model, "lora", layers="all", rank=4, targets=["q", "v", "o"])
    for _, _, module in handle.modules:
        randomize_(module)
    factors = {n for n, _ in model.named_parameters() if ".adapters.lora." in n}
    assert handle.num_params() == 2 * 3 * (2 * 4 * 64)  # blocks · targets · 2·r·D
    assert clipadapt.summary(model, show=False)["trainable"] == handle.num_params()
    path = clipadapt.save_adapters(model, tmp_path / "lora.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(str(path))) == factors
    fresh = clipadapt.load_adapters(BUILDERS["open_clip"](), path)
    image = tower_input("visual")
    with torch.no_grad():
        assert torch.equal(fresh.encode_image(image), model.encode_image(image))


def test_lora_dropout_acts_only_in_training():
    model = BUILDERS["open_clip"]()
    lora = clipadapt.inject(model, "lora", layers=0, dropout=0.5).modules[0][2]
    randomize_(lora, std=0.2)
    attn = model.visual.transformer.resblocks[0].attn
    [(_, _, merged)] = lora.merged_weights()  # q and v: the packed in_proj_weight only
    model.train()
    assert not torch.equal(attn.in_proj_weight, attn.in_proj_weight)  # a new mask per read
    model.eval()
    assert torch.equal(attn.in_proj_weight, merged)


def test_lora_options_are_checked():
    with pytest.raises(ValueError, match=r"lora targets \('q', 'x'\) must be a non-empty subset"):
        LoRAAdapter(16, targets=["q", "x"])
    with pytest.raises(ValueError, match="lora dropout 1.0 must be in"):
        LoRAAdapter(16, dropout=1.0)


def test_lora_on_a_block_without_projections_says_the_spec_names_none():
    block = SimpleNamespace(attn=torch.nn.Identity(), projections=())
    with pytest.raises(TypeError, match="names no projection weights for Identity"):
        LoRAAdapter(16).attach(block)


# ---------------------------------------------------------------------------------------------
# parameter counts on ViT-B/16 (D = 768, 12 blocks, 8 frames)

D, BLOCKS = 768, 12


def linear(d_in, d_out):
    return d_in * d_out + d_out


PER_BLOCK = {
    "ted (width 384)": ("ted", dict(width=384), 1_187_328, 0),
    "bottleneck (width 384)": ("bottleneck", dict(width=384), linear(D, 384) + linear(384, D), 0),
    "st (width 384, pre_mlp)": ("st", dict(width=384), linear(D, 384) + 384 * 3 + 384 + linear(384, D), 0),
    "st (width 384, pre_attn + pre_mlp)": ("st", dict(width=384, site=["pre_attn", "pre_mlp"]), 2 * (linear(D, 384) + 384 * 4 + linear(384, D)), 0),
    "aim (ratio 0.25, 8 frames)": ("aim", dict(num_frames=8), 3 * (linear(D, D // 4) + linear(D // 4, D)), 8 * D),
    "lora (r 8, q and v)": ("lora", dict(rank=8), 2 * 2 * 8 * D, 0),
    "lora (r 8, q k v o)": ("lora", dict(rank=8, targets=["q", "k", "v", "o"]), 4 * 2 * 8 * D, 0),
}


@pytest.fixture(scope="module")
def vit_b16():
    import open_clip

    return open_clip.create_model("ViT-B-16", pretrained=None)


def test_vit_b16_parameter_counts_match_the_formulas(vit_b16):
    rows = []
    for label, (name, options, per_block, once) in PER_BLOCK.items():
        handle = clipadapt.inject(vit_b16, name, layers="all", **options)
        total = clipadapt.summary(vit_b16, show=False)["trainable"]
        clipadapt.eject(vit_b16)
        assert handle.num_params() == total == BLOCKS * per_block + once, label
        rows.append(f"| {label} | {per_block:,} | {once:,} | {total:,} |")
    print("\n| adapter | per block | once | 12 blocks |\n|---|---:|---:|---:|\n" + "\n".join(rows))
