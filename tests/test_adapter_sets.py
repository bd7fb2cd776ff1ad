"""Adapter sets: named groups of injections, activated, stacked, disabled, mixed per video, saved apart.

The laws are property tests over random sets, adapters, sites and orders on tiny models; every
expected value comes from another model (un-injected, or holding one set only), from the
adapters called by hand, or from a file written before adapter sets existed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clipadapt
from tiny import randomize_, tiny_open_clip, tiny_openai_clip

BUILDERS = {"open_clip": tiny_open_clip, "openai_clip": tiny_openai_clip}
FRAMES = 2
FIXTURES = Path(__file__).parent / "fixtures"
LAWS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (adapter, site, options): hook adapters of every site, temporal ones among them
HOOK_ADAPTERS = [
    ("ted", "pre_mlp", {"width": 4}),
    ("ted", "pre_attn", {"width": 4}),
    ("bottleneck", "attn_out", {"width": 4}),
    ("bottleneck", "mlp_parallel", {"width": 4}),
    ("bottleneck", "post_block", {"width": 4}),
    ("aim", None, {"ratio": 0.125, "num_frames": FRAMES}),
]
WEIGHT_ADAPTER = ("lora", None, {"rank": 2})


def video_batch(videos: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(videos * FRAMES, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def tokens() -> torch.Tensor:
    return torch.arange(48).reshape(3, 16) % 90 + 5


def outputs(model, images=None, text=True):
    images = video_batch(3) if images is None else images
    with torch.no_grad(), clipadapt.frames(model, FRAMES):
        image = model.encode_image(images)
        return (image, model.encode_text(tokens())) if text else image


def inject_plan(model, plan, seed: int = 0):
    """Inject `plan` (``[(set, adapter index, layer)]``) and give every adapter random weights."""
    for i, (name, which, layer) in enumerate(plan):
        adapter, site, options = which if isinstance(which, tuple) else HOOK_ADAPTERS[which]
        handle = clipadapt.inject(model, adapter, layers=[layer], site=site, adapter_set=name, **options)
        for _, _, module in handle.modules:
            randomize_(module, seed=seed + i)
    return model


def plan_strategy(sets=("a", "b", "c"), weights: bool = True):
    adapters = st.integers(0, len(HOOK_ADAPTERS) - 1)
    if weights:
        adapters = st.one_of(adapters, st.just(WEIGHT_ADAPTER))
    item = st.tuples(st.sampled_from(sets), adapters, st.integers(0, 1))
    return st.lists(item, min_size=1, max_size=5, unique_by=lambda t: (t[0], str(t[1]), t[2]))


def same_plan_alone(family, plan, keep: str, seed: int = 0):
    """A fresh model into which only `keep`'s injections of `plan` were ever made, with the same weights."""
    model = BUILDERS[family]()
    for i, (name, which, layer) in enumerate(plan):
        if name == keep:
            adapter, site, options = which if isinstance(which, tuple) else HOOK_ADAPTERS[which]
            handle = clipadapt.inject(model, adapter, layers=[layer], site=site, adapter_set=keep, **options)
            for _, _, module in handle.modules:
                randomize_(module, seed=seed + i)
    return model


# ---- the laws -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", BUILDERS)
@LAWS
@given(plan=plan_strategy(), order=st.permutations(["a", "b", "c"]))
def test_disabled_is_the_frozen_model_bit_for_bit(family, plan, order):
    frozen = outputs(BUILDERS[family]())
    model = inject_plan(BUILDERS[family](), plan)
    clipadapt.activate(model, *[name for name in order if name in clipadapt.adapter_sets(model)])
    before = clipadapt.active_sets(model)
    with clipadapt.disabled(model):
        got = outputs(model)
    for a, b in zip(got, frozen):
        assert torch.equal(a, b)
    assert clipadapt.active_sets(model) == before


@pytest.mark.parametrize("family", BUILDERS)
@LAWS
@given(plan=plan_strategy())
def test_activating_one_set_is_a_model_that_only_ever_had_that_set(family, plan):
    model = inject_plan(BUILDERS[family](), plan)
    for name in clipadapt.adapter_sets(model):
        clipadapt.activate(model, name)
        for a, b in zip(outputs(model), outputs(same_plan_alone(family, plan, name))):
            assert torch.equal(a, b)


@LAWS
@given(plan=plan_strategy(), order=st.permutations(["a", "b", "c"]), gone=st.sampled_from(["a", "b", "c"]))
def test_ejecting_one_set_leaves_the_others_outputs_and_keys_unchanged(plan, order, gone):
    model = inject_plan(tiny_open_clip(), plan)
    sets = clipadapt.adapter_sets(model)
    if gone not in sets:
        return
    others = [name for name in order if name in sets and name != gone]
    clipadapt.activate(model, *others)
    expected = outputs(model)
    keys = {k for k in model.state_dict() if "adapters." in k and f"{gone}__" not in k}
    clipadapt.activate(model, *[name for name in order if name in sets])
    clipadapt.eject(model, adapter_set=gone)
    assert clipadapt.adapter_sets(model) == [name for name in sets if name != gone]
    assert clipadapt.active_sets(model) == tuple(others)
    assert {k for k in model.state_dict() if "adapters." in k} == keys
    for a, b in zip(outputs(model), expected):
        assert torch.equal(a, b)


@LAWS
@given(plan=plan_strategy(), keep=st.sampled_from(["a", "b", "c"]))
def test_save_then_load_under_another_name_gives_the_same_outputs(plan, keep, tmp_path_factory):
    model = inject_plan(tiny_open_clip(), plan)
    if keep not in clipadapt.adapter_sets(model):
        return
    path = clipadapt.save_adapters(model, tmp_path_factory.mktemp("sets") / "one.safetensors", adapter_set=keep)
    clipadapt.activate(model, keep)
    expected = outputs(model)
    other = inject_plan(tiny_open_clip(), [("z", 0, 0)], seed=99)  # a set already there stays
    clipadapt.load_adapters(other, path, adapter_set="renamed")
    assert clipadapt.adapter_sets(other) == ["z", "renamed"]
    assert clipadapt.active_sets(other) == ("renamed",)
    for a, b in zip(outputs(other), expected):
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", BUILDERS)
@LAWS
@given(plan=plan_strategy(weights=False), per_video=st.lists(
    st.one_of(st.none(), st.sampled_from(["a", "b", "c"]), st.sampled_from([("a", "b"), ("c", "a")])), min_size=1, max_size=5))
def test_a_mixed_batch_gives_each_video_what_it_gets_alone_with_its_sets(family, plan, per_video):
    model = inject_plan(BUILDERS[family](), plan)
    sets = clipadapt.adapter_sets(model)
    per_video = [v if v is None or all(s in sets for s in ([v] if isinstance(v, str) else v)) else None for v in per_video]
    images = video_batch(len(per_video), seed=5)
    with torch.no_grad(), clipadapt.frames(model, FRAMES, sets=per_video):
        mixed = model.encode_image(images)
    for i, chosen in enumerate(per_video):
        video = images[i * FRAMES:(i + 1) * FRAMES]
        if chosen is None:
            with clipadapt.disabled(model):
                alone = outputs(model, video, text=False)
        else:
            clipadapt.activate(model, *([chosen] if isinstance(chosen, str) else chosen))
            alone = outputs(model, video, text=False)
        torch.testing.assert_close(mixed[i * FRAMES:(i + 1) * FRAMES], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", BUILDERS)
def test_a_mixed_batch_of_sets_sharing_every_site_gives_each_video_its_own_set(family):
    plan = [(name, which, layer) for name in ("a", "b") for which in range(len(HOOK_ADAPTERS) - 1) for layer in (0, 1)]
    model = inject_plan(BUILDERS[family](), plan)
    per_video = ["a", "b", None, ["b", "a"], "a"]
    images = video_batch(len(per_video), seed=6)
    with torch.no_grad(), clipadapt.frames(model, FRAMES, sets=per_video):
        mixed = model.encode_image(images)
    for i, chosen in enumerate(per_video):
        clipadapt.activate(model, *([] if chosen is None else [chosen] if isinstance(chosen, str) else chosen))
        alone = outputs(model, images[i * FRAMES:(i + 1) * FRAMES], text=False)
        torch.testing.assert_close(mixed[i * FRAMES:(i + 1) * FRAMES], alone, rtol=0, atol=1e-6)


# ---- stacking order --------------------------------------------------------------------------


def test_stacked_sets_run_at_a_shared_site_in_activation_order():
    """At ``post_block``: ``y = h + A(h)``, then ``y + B(y)``, written out by hand."""
    model = tiny_open_clip()
    last = model.visual.transformer.resblocks[-1]
    for name, seed in (("a", 1), ("b", 2)):
        randomize_(clipadapt.inject(model, "bottleneck", layers=[-1], site="post_block", width=4, adapter_set=name).modules[0][2], seed=seed, std=0.2)
    kept = []
    last.register_forward_hook(lambda module, args, out: kept.append(out))  # after the engine's hook
    adapter = {name: last.adapters[f"{name}__bottleneck_post_block"] for name in "ab"}
    images = video_batch(1)

    def block_output(*order):
        kept.clear()
        if order:
            clipadapt.activate(model, *order)
            outputs(model, images, text=False)
        else:
            with clipadapt.disabled(model):
                outputs(model, images, text=False)
        return kept[0]

    h = block_output()
    for first, second in (("a", "b"), ("b", "a")):
        y = h + adapter[first](h, None)
        torch.testing.assert_close(block_output(first, second), y + adapter[second](y, None), rtol=0, atol=1e-6)
    assert not torch.allclose(block_output("a", "b"), block_output("b", "a"), atol=1e-5)


# ---- gradients and training ----------------------------------------------------------------


def test_inactive_sets_get_no_gradient_and_freeze_trains_the_active_sets_only():
    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("b", 0, 0), ("c", 2, 1), ("c", WEIGHT_ADAPTER, 0)])
    params = {name: [p for inj in clipadapt.injections(model, name) for _, _, m in inj.modules for p in m.parameters()]
              for name in "abc"}
    clipadapt.activate(model, "a", "c")
    clipadapt.freeze(model, train="c")
    assert all(not p.requires_grad for p in params["a"] + params["b"])
    assert all(p.requires_grad for p in params["c"])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {n for n, p in model.named_parameters() if "adapters.c__" in n}
    with clipadapt.frames(model, FRAMES):
        model.encode_image(video_batch(2)).square().sum().backward()
    assert all(p.grad is None for p in params["a"] + params["b"])
    assert all(p.grad is not None for p in params["c"])
    clipadapt.activate(model, "b")  # b stays frozen as freeze(train="c") left it, until another freeze
    assert not any(p.requires_grad for p in params["a"] + params["b"] + params["c"])
    clipadapt.freeze(model, train="b")
    assert all(p.requires_grad for p in params["b"]) and not any(p.requires_grad for p in params["a"] + params["c"])


def test_freeze_refuses_an_unknown_or_inactive_set():
    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("b", 0, 0)])
    with pytest.raises(ValueError, match=r"'nope'\): no such adapter set"):
        clipadapt.freeze(model, train="nope")
    with pytest.raises(ValueError, match="'a'.*inactive.*activate it first"):
        clipadapt.freeze(model, train="a")


def test_inject_activates_a_new_set_alone_and_keeps_an_active_one():
    model = tiny_open_clip()
    clipadapt.inject(model, "ted", width=4, adapter_set="k400")
    clipadapt.inject(model, "bottleneck", tower="text", layers=-1, width=4, adapter_set="k400")
    assert clipadapt.active_sets(model) == ("k400",)
    clipadapt.inject(model, "ted", width=4, adapter_set="ssv2")
    assert clipadapt.active_sets(model) == ("ssv2",)
    clipadapt.activate(model, "k400", "ssv2")
    clipadapt.inject(model, "bottleneck", layers=0, site="post_block", width=4, adapter_set="ssv2")
    assert clipadapt.active_sets(model) == ("k400", "ssv2")


# ---- LoRA (weights) ------------------------------------------------------------------------


def test_an_inactive_lora_set_leaves_the_weights_exactly_as_they_were():
    reference = tiny_open_clip()
    model = inject_plan(tiny_open_clip(), [("a", WEIGHT_ADAPTER, 0), ("b", WEIGHT_ADAPTER, 0), ("b", 4, 1)])
    attn = model.visual.transformer.resblocks[0].attn
    clipadapt.activate(model, "b")
    lora_a = model.visual.transformer.resblocks[0].adapters["a__lora"]
    lora_b = model.visual.transformer.resblocks[0].adapters["b__lora"]
    original = reference.visual.transformer.resblocks[0].attn.in_proj_weight
    assert torch.equal(attn.in_proj_weight, original + lora_b.weight_delta(("q", "k", "v"), original))
    clipadapt.activate(model)
    assert torch.equal(attn.in_proj_weight, original)
    clipadapt.activate(model, "a", "b")
    expected = original + lora_a.weight_delta(("q", "k", "v"), original) + lora_b.weight_delta(("q", "k", "v"), original)
    torch.testing.assert_close(attn.in_proj_weight, expected, rtol=0, atol=1e-7)


def test_a_mixed_batch_refuses_sets_with_weight_adapters():
    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("b", WEIGHT_ADAPTER, 0)])
    with pytest.raises(ValueError, match="set 'b'.*'lora' acts on the weights every video shares"):
        with clipadapt.frames(model, FRAMES, sets=["a", "b"]):
            pass
    clipadapt.activate(model, "b")  # active, not routed: it would act on every video too
    with pytest.raises(ValueError, match="set 'b'"):
        with clipadapt.frames(model, FRAMES, sets=["a", "a"]):
            pass


def test_lora_merge_refuses_an_inactive_lora_set():
    from clipadapt.adapters.lora import merge

    model = inject_plan(tiny_open_clip(), [("a", WEIGHT_ADAPTER, 0), ("b", 0, 0)])
    with pytest.raises(ValueError, match="lora of adapter set 'a' is inactive"):
        merge(model)


# ---- mixed batches: what is refused -----------------------------------------------------------


def test_a_mixed_batch_names_a_wrong_set_list_or_a_batch_of_another_size():
    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("a", ("bottleneck", "pre_mlp", {"width": 4}), 1), ("b", 0, 0)])
    with pytest.raises(ValueError, match="one adapter set per video, as a list"):
        with clipadapt.frames(model, FRAMES, sets="a"):
            pass
    with pytest.raises(ValueError, match=r"sets\[1\] = 'k400' is not an adapter set of this model; its sets are \['a', 'b'\]"):
        with clipadapt.frames(model, FRAMES, sets=["a", "k400"]):
            pass
    with pytest.raises(ValueError, match=r"routes 2 videos × 2 frames = 4 rows, but visual block 0 got 6"):
        with torch.no_grad(), clipadapt.frames(model, FRAMES, sets=["a", "b"]):
            model.encode_image(video_batch(3))


def test_a_mixed_batch_refuses_text_through_routed_text_adapters():
    model = tiny_open_clip()
    clipadapt.inject(model, "bottleneck", tower="text", layers=-1, width=4, adapter_set="a")
    with pytest.raises(ValueError, match="text block 1 got 3.*outside"):
        with torch.no_grad(), clipadapt.frames(model, FRAMES, sets=["a", "a"]):
            model.encode_text(tokens())


def test_a_mixed_batch_gathers_each_set_once_per_call():
    model = inject_plan(tiny_open_clip(), [("a", 4, 1), ("b", 4, 1)])
    calls = []
    for name in "ab":
        model.visual.transformer.resblocks[1].adapters[f"{name}__bottleneck_post_block"].register_forward_hook(
            lambda module, args, out, name=name: calls.append((name, args[0].shape[0])))
    with torch.no_grad(), clipadapt.frames(model, FRAMES, sets=["a", "b", "a", None, "a"]):
        model.encode_image(video_batch(5))
    assert calls == [("a", 3 * FRAMES), ("b", FRAMES)]


def test_gradient_checkpointing_recomputes_a_mixed_batch_with_its_routing():
    plan = [("a", 0, 0), ("b", 1, 1), ("b", 0, 0)]
    grads = []
    for checkpointing in (False, True):
        model = inject_plan(tiny_open_clip(), plan)
        model.set_grad_checkpointing(checkpointing)
        with clipadapt.frames(model, FRAMES, sets=["a", "b", "a"]):
            loss = model.encode_image(video_batch(3)).square().sum()
        loss.backward()  # after the context: recomputation must still route per video
        grads.append([p.grad for n, p in model.named_parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---- state is restored -----------------------------------------------------------------------


def test_disabled_and_frames_restore_the_state_on_error():
    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("b", WEIGHT_ADAPTER, 1)])
    clipadapt.activate(model, "a", "b")
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with clipadapt.disabled(model):
            assert clipadapt.active_sets(model) == ()
            raise RuntimeError("boom")
    assert clipadapt.active_sets(model) == ("a", "b")
    assert grads == {n: p.requires_grad for n, p in model.named_parameters()}
    clipadapt.activate(model, "a")
    with pytest.raises(RuntimeError, match="boom"):
        with clipadapt.frames(model, FRAMES, sets=["a", None]):
            raise RuntimeError("boom")
    state = model.__dict__["_clipadapt"]
    assert state.routing is None and state.num_frames is None


# ---- names, keys and files -------------------------------------------------------------------


def test_two_sets_hold_the_same_adapter_at_the_same_site_under_their_own_keys():
    model = tiny_open_clip()
    clipadapt.inject(model, "ted", layers=[0], width=4)
    clipadapt.inject(model, "ted", layers=[0], width=4, adapter_set="k400")
    keys = sorted(model.visual.transformer.resblocks[0].adapters.keys())
    assert keys == ["k400__ted_pre_mlp", "ted_pre_mlp"]
    with pytest.raises(ValueError, match="adapter 'ted' of set 'k400' is already injected in visual block 0"):
        clipadapt.inject(model, "ted", layers=[0], width=4, adapter_set="k400")
    with pytest.raises(ValueError, match="adapter set name 'k.400' is not accepted"):
        clipadapt.inject(model, "ted", layers=[1], width=4, adapter_set="k.400")


def test_unnamed_injections_keep_their_keys_and_spec():
    model = tiny_open_clip()
    handle = clipadapt.inject(model, "ted", layers=[0], width=4)
    assert "visual.transformer.resblocks.0.adapters.ted_pre_mlp.te.down.weight" in model.state_dict()
    assert handle.spec() == {"name": "ted", "tower": "visual", "layers": [0], "sites": ["pre_mlp"], "kwargs": {"width": 4}}


def test_a_file_written_before_adapter_sets_loads_as_the_default_set_and_gives_its_outputs():
    from safetensors.torch import load_file

    expected = load_file(str(FIXTURES / "before_sets_outputs.safetensors"))
    model = clipadapt.load_adapters(tiny_open_clip(), FIXTURES / "before_sets.safetensors")
    assert clipadapt.adapter_sets(model) == ["default"] and clipadapt.active_sets(model) == ("default",)
    video = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = torch.arange(32).reshape(2, 16) + 60
    with torch.no_grad(), clipadapt.frames(model, 2):
        assert torch.equal(model.encode_image(video), expected["image"])
        assert torch.equal(model.encode_text(text), expected["text"])
    renamed = clipadapt.load_adapters(tiny_open_clip(), FIXTURES / "before_sets.safetensors", adapter_set="old")
    with torch.no_grad(), clipadapt.frames(renamed, 2):
        assert torch.equal(renamed.encode_image(video), expected["image"])


def test_saving_every_set_restores_the_sets_and_their_stacking(tmp_path):
    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("b", 2, 1), ("c", 4, 0)])
    clipadapt.activate(model, "c", "a")
    expected = outputs(model)
    path = clipadapt.save_adapters(model, tmp_path / "all.safetensors")
    fresh = clipadapt.load_adapters(tiny_open_clip(), path)
    assert clipadapt.adapter_sets(fresh) == ["a", "b", "c"] and clipadapt.active_sets(fresh) == ("c", "a")
    for a, b in zip(outputs(fresh), expected):
        assert torch.equal(a, b)


def test_loading_under_a_name_needs_a_file_of_one_set_and_keeps_the_checksum_and_fingerprint_checks(tmp_path):
    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("b", 2, 1)])
    both = clipadapt.save_adapters(model, tmp_path / "both.safetensors")
    with pytest.raises(ValueError, match=r"holds the adapter sets \['a', 'b'\]; loading under the name 'x'"):
        clipadapt.load_adapters(tiny_open_clip(), both, adapter_set="x")
    one = clipadapt.save_adapters(model, tmp_path / "one.safetensors", adapter_set="a")
    with pytest.raises(clipadapt.BackboneMismatchError, match="width 64.*width 96"):
        clipadapt.load_adapters(tiny_open_clip(width=96), one, adapter_set="x")
    data = bytearray(one.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last tensor
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or unverifiable"):
        clipadapt.load_adapters(tiny_open_clip(), tmp_path / "flipped.safetensors", adapter_set="x")
    with pytest.raises(ValueError, match="adapter set 'zz' is not in this model"):
        clipadapt.save_adapters(model, tmp_path / "none.safetensors", adapter_set="zz")


def test_a_loaded_set_can_stay_frozen_under_a_new_set(tmp_path):
    source = inject_plan(tiny_open_clip(), [("k400", 0, 0)])
    path = clipadapt.save_adapters(source, tmp_path / "k400.safetensors", adapter_set="k400")
    model = clipadapt.load_adapters(tiny_open_clip(), path, trainable=False)
    clipadapt.inject(model, "bottleneck", layers="all", site="post_block", width=4, adapter_set="ssv2")
    clipadapt.activate(model, "k400", "ssv2")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("adapters.ssv2__" in n for n in trainable)


def test_summary_shows_each_sets_parameters_and_activation():
    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("b", 0, 0), ("b", 4, 1)])
    clipadapt.activate(model, "b")
    info = clipadapt.summary(model, show=False)
    count = {name: sum(p.numel() for inj in clipadapt.injections(model, name) for _, _, m in inj.modules for p in m.parameters())
             for name in "ab"}
    assert info["sets"] == {"a": {"params": count["a"], "active": None, "trainable": 0},
                            "b": {"params": count["b"], "active": 0, "trainable": count["b"]}}
    assert [(row["set"], row["active"]) for row in info["rows"]] == [("a", None), ("b", 0), ("b", 0)]


# ---- the video model and recipes ------------------------------------------------------------


def video_model(adapters=({"name": "ted", "options": {"width": 4}},), heads=({"name": "contrastive"},)):
    from clipadapt.models import build_video_clip
    from tiny import CLASSNAMES, tiny_text_clip

    return build_video_clip(tiny_text_clip(), CLASSNAMES, adapters=list(adapters), heads=list(heads), pooling="conv")


def video_clips(batch: int = 2):
    return torch.randn(batch, FRAMES, 3, 32, 32, generator=torch.Generator().manual_seed(4))


def test_class_embeddings_follow_the_active_text_adapters():
    text_adapter = {"name": "bottleneck", "tower": "text", "layers": [-1], "options": {"width": 4, "init": "default"}}
    model = video_model(adapters=[text_adapter]).eval()
    randomize_(model.clip.transformer.resblocks[-1].adapters, std=0.3)
    with torch.no_grad():
        adapted = model.class_embeddings()
        with clipadapt.disabled(model):
            frozen = model.class_embeddings()
        again = model.class_embeddings()
    from tiny import CLASSNAMES, tiny_text_clip

    from clipadapt.models import VideoCLIP

    reference = VideoCLIP(clipadapt.freeze(tiny_text_clip()), CLASSNAMES).eval()  # frozen: the same text path
    with torch.no_grad():
        assert torch.equal(frozen, reference.class_embeddings())
    assert torch.equal(again, adapted) and not torch.allclose(frozen, adapted)


def test_the_frozen_baseline_of_a_trained_video_model_is_the_frozen_clip():
    from clipadapt.models import build_video_clip
    from tiny import CLASSNAMES, tiny_text_clip

    model = video_model().eval()
    randomize_(model.pooling, std=0.3)
    for inj in clipadapt.injections(model):
        for _, _, module in inj.modules:
            randomize_(module, std=0.3)
    plain = build_video_clip(tiny_text_clip(), CLASSNAMES, pooling="mean").eval()  # no adapter, frame mean
    with torch.no_grad():
        adapted = model.zero_shot_logits(video_clips())
        with model.frozen():
            baseline = model.zero_shot_logits(video_clips())
        assert torch.equal(baseline, plain.zero_shot_logits(video_clips()))
        assert torch.equal(model.zero_shot_logits(video_clips()), adapted)
    assert not torch.allclose(baseline, adapted)


def test_init_adapters_starts_from_a_frozen_active_set_and_trains_a_new_one_on_top(tmp_path):
    source = video_model()
    for inj in clipadapt.injections(source):
        for _, _, module in inj.modules:
            randomize_(module, std=0.2)
    path = clipadapt.save_adapters(source, tmp_path / "k400.safetensors")  # a video model's file: heads are not taken
    model = video_model(adapters=[{"name": "bottleneck", "site": "post_block", "options": {"width": 4}}], heads=[{"name": "vc"}])
    assert model.init_adapters([{"path": str(path), "adapter_set": "k400"}]) == ["k400"]
    assert clipadapt.active_sets(model) == ("k400", "default")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("k400__" in n for n in trainable) and any("bottleneck_post_block" in n for n in trainable)
    assert any(n.startswith("decoder.heads.vc") for n in trainable)
    clipadapt.activate(model, "k400")  # the loaded set alone computes what the source's adapters did
    with torch.no_grad(), clipadapt.frames(model.clip, FRAMES), clipadapt.frames(source.clip, FRAMES):
        assert torch.equal(model.clip.encode_image(video_clips().flatten(0, 1)), source.clip.encode_image(video_clips().flatten(0, 1)))
    with pytest.raises(ValueError, match=r"init_adapters\[0\].*loads adapter set 'k400', which the model already has"):
        model.init_adapters([{"path": str(path), "adapter_set": "k400"}])
    with pytest.raises(ValueError, match=r"init_adapters\[0\] has unknown key 'set'"):
        model.init_adapters([{"path": str(path), "set": "x"}])


def test_a_recipe_starts_from_an_adapter_file_and_validate_names_a_clash(tmp_path):
    from clipadapt.models import build_from_recipe
    from clipadapt.recipes import RecipeError, load_recipe

    tiny = ["model.weights=null", "model.config={embed_dim: 32, image_size: 32, patch_size: 8, width: 64, layers: 2, heads: 2, "
            "text_width: 32, text_layers: 2, text_heads: 2, context_length: 16, vocab_size: 49408}", "data.num_classes=4"]
    from tiny import CLASSNAMES

    first = build_from_recipe(load_recipe("quickstart", tiny), CLASSNAMES)
    path = clipadapt.save_adapters(first, tmp_path / "first.safetensors")
    entry = f"model.init_adapters=[{{path: {path}, adapter_set: k400}}]"
    model = build_from_recipe(load_recipe("quickstart", [*tiny, entry]), CLASSNAMES)
    assert clipadapt.adapter_sets(model.clip) == ["default", "k400"] and clipadapt.active_sets(model.clip) == ("k400", "default")
    assert not any(p.requires_grad for n, p in model.named_parameters() if "k400__" in n)
    with pytest.raises(RecipeError, match="model.init_adapters.0.adapter_set.*'default', which the recipe's adapters use"):
        load_recipe("quickstart", [*tiny, f"model.init_adapters=[{{path: {path}}}]"])
    with pytest.raises(RecipeError, match="model.init_adapters.0.path.*does not exist"):
        load_recipe("quickstart", [*tiny, f"model.init_adapters=[{{path: {tmp_path / 'nope.safetensors'}, adapter_set: a}}]"])
    with pytest.raises(RecipeError, match="model.init_adapters.0.adapter_set"):
        load_recipe("quickstart", [*tiny, f"model.init_adapters=[{{path: {path}, adapter_set: 'a.b'}}]"])


def test_the_trainer_refuses_a_trainable_parameter_of_an_inactive_set():
    from clipadapt.sets import check_active_training

    model = inject_plan(tiny_open_clip(), [("a", 0, 0), ("b", 0, 0)])
    check_active_training(model)
    model.visual.transformer.resblocks[0].adapters["a__ted_pre_mlp"].te.down.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="adapters.a__ted_pre_mlp of the inactive adapter set 'a' is trainable"):
        check_active_training(model)


def test_a_set_saved_on_top_of_another_needs_it_and_is_stacked_on_it_again(tmp_path):
    model = inject_plan(tiny_open_clip(), [("base", 0, 0), ("top", 4, 1)])
    clipadapt.activate(model, "base", "top")
    expected = outputs(model)
    base = clipadapt.save_adapters(model, tmp_path / "base.safetensors", adapter_set="base")
    top = clipadapt.save_adapters(model, tmp_path / "top.safetensors", adapter_set="top")
    with pytest.raises(ValueError, match=r"set 'top' was saved active on top of the sets \['base'\], which this model lacks"):
        clipadapt.load_adapters(tiny_open_clip(), top)
    fresh = clipadapt.load_adapters(tiny_open_clip(), base)
    clipadapt.load_adapters(fresh, top, adapter_set="top2")
    assert clipadapt.active_sets(fresh) == ("base", "top2")
    for a, b in zip(outputs(fresh), expected):
        assert torch.equal(a, b)


def test_the_two_task_example_keeps_the_first_task_unchanged_after_the_second(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "two_tasks.py"
    spec = importlib.util.spec_from_file_location("two_tasks", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.run(steps=2, per_class=2, test_per_class=2, batch=4, out_dir=tmp_path)
    assert result["k400_logits_unchanged"]
    assert result["accuracy"]["k400 after training k400"] == result["accuracy"]["k400 after training ssv2"]
    assert result["mixed_max_difference"] <= 1e-6
    for name in ("k400", "ssv2"):
        assert clipadapt.saving.read_metadata(tmp_path / f"{name}.safetensors")["injections"][0]["adapter_set"] == name


# ---- a run that starts from an adapter file, and the command line ----------------------------

SMALL_RUN = ["schedule.epochs=1", "data.synthetic.train_per_class=4", "data.synthetic.test_per_class=2",
             "data.batch_size=4", "data.num_workers=0", "compare={}", "eval.every=0", "resume=null"]


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory):
    """A reduced quickstart run whose recipe starts from a k400 set (frozen) and trains ``default`` on top."""
    from typer.testing import CliRunner

    from clipadapt.cli import app
    from clipadapt.models import build_from_recipe
    from clipadapt.recipes import load_recipe
    from tiny import CLASSNAMES

    out = tmp_path_factory.mktemp("stacked")
    base = [*SMALL_RUN, f"data.root={out / 'data'}"]
    source = build_from_recipe(load_recipe("quickstart", base), CLASSNAMES)
    for inj in clipadapt.injections(source):
        for _, _, module in inj.modules:
            randomize_(module, std=0.05)
    k400 = clipadapt.save_adapters(source, out / "k400.safetensors")
    args = [*base, f"output_dir={out / 'run'}", f"model.init_adapters=[{{path: {k400}, adapter_set: k400}}]"]
    result = CliRunner().invoke(app, ["run", "quickstart", *args])
    assert result.exit_code == 0, result.output
    return out, args, source


def test_a_run_trains_its_own_set_on_top_of_a_frozen_loaded_set(stacked_run):
    from clipadapt.engine.tasks import load_trained

    out, _, source = stacked_run
    model = load_trained(next((out / "run").rglob("last.pt")))
    assert clipadapt.adapter_sets(model) == ["default", "k400"] and clipadapt.active_sets(model) == ("k400", "default")
    trained = {k: v for k, v in model.state_dict().items() if "adapters.k400__" in k}
    original = {k.replace("clip.", "", 1): v for k, v in source.state_dict().items() if ".adapters." in k}
    assert trained and all(torch.equal(v, original[k.replace("clip.", "", 1).replace("k400__", "")]) for k, v in trained.items())


def test_eval_export_and_predict_take_an_adapter_set(stacked_run):
    from typer.testing import CliRunner

    from clipadapt.cli import app
    from clipadapt.engine.tasks import load_trained
    from clipadapt.recipes import load_recipe
    from clipadapt.engine.tasks import evaluate_adapter_sets

    out, args, _ = stacked_run
    best = next((out / "run").rglob("last.pt"))
    runner = CliRunner()
    shown = runner.invoke(app, ["eval", "quickstart", str(best), *args, "--adapter-set", "k400,k400+default"])
    assert shown.exit_code == 0, shown.output
    per_set = evaluate_adapter_sets(load_recipe("quickstart", args), best, ["k400", "k400+default"])
    assert "k400 top-1" in shown.output and "k400+default top-1" in shown.output
    assert f"{per_set['k400+default']['fused/top1']:.2f}" in shown.output

    exported = out / "default.safetensors"
    result = runner.invoke(app, ["export", str(best), str(exported), "--adapter-set", "default"])
    assert result.exit_code == 0, result.output
    assert clipadapt.saving.read_metadata(exported)["stacked_on"] == ["k400"]
    # what load_trained does with an exported file (its backbone here: the run's random one, ejected)
    from clipadapt.models import VideoCLIP
    from clipadapt.models.init_adapters import init_adapter_sets

    model, clip = load_trained(best), load_trained(best).clip
    clipadapt.eject(clip)
    with pytest.raises(ValueError, match="saved active on top of the sets \\['k400'\\]"):
        VideoCLIP.from_adapters(clip, exported)
    init_adapter_sets(clip, load_recipe("quickstart", args).model.to_dict()["init_adapters"])
    again = VideoCLIP.from_adapters(clip, exported)  # the exported set is stacked on k400 again
    assert clipadapt.active_sets(again) == ("k400", "default")
    clips = video_clips(2).repeat_interleave(4, dim=1)[:, :8]
    with torch.no_grad():
        assert torch.equal(model(clips)["fused"], again(clips)["fused"])

    video = next((out / "data").rglob("*.mp4"))
    result = runner.invoke(app, ["predict", str(best), str(video), "--adapter-set", "k400", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(best), str(video), "--adapter-set", "ucf"])
    assert result.exit_code == 1 and "adapter set 'ucf' is not in this model" in result.output
