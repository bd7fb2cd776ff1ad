"""Gradient checkpointing recomputes blocks during backward, after `frames()` has exited, after
other calls of the same blocks and after other sets were activated: the recomputation must see
the values of its own call. Checked against the gradients computed without checkpointing."""

import pytest
import torch

import clipadapt
from clipadapt.backbones import detect, spec_of_family
from tiny import BUILDERS, IMAGE, PATCH, randomize_


def tiny_siglip():
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=PATCH, image_size=IMAGE)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=100, max_position_embeddings=16)
    return transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision)).eval()


MODELS = {"open_clip": BUILDERS["open_clip"], "hf_clip": BUILDERS["hf"], "siglip": tiny_siglip, "timm": BUILDERS["timm"]}
SETS = {  # two adapter sets, every site, temporal adapters in both
    "a": [("bottleneck", "pre_mlp"), ("st", "pre_mlp"), ("bottleneck", "mlp_parallel")],
    "b": [("bottleneck", "pre_attn"), ("st", "pre_mlp"), ("bottleneck", "attn_out"), ("bottleneck", "post_block")],
}


def images(seed: int) -> torch.Tensor:
    return torch.randn(8, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def grads_of_two_calls(kind: str, checkpointing: bool) -> dict[str, torch.Tensor]:
    """Adapter gradients of two calls of the visual tower before one backward: set ``a`` with
    videos of 2 frames, then sets ``b`` and ``a`` stacked with videos of 4 frames, backward after both."""
    model = MODELS[kind]()
    for adapter_set, adapters in SETS.items():
        for seed, (name, site) in enumerate(adapters):
            for _, _, module in clipadapt.inject(model, name, layers="all", site=site, width=8, adapter_set=adapter_set).modules:
                randomize_(module, seed=seed, std=0.2)
    spec = detect(model)
    model.train()
    if checkpointing:
        spec.set_grad_checkpointing(model)
    encode = spec.visual(model).encode
    clipadapt.activate(model, "a")
    with clipadapt.frames(model, 2):
        loss = encode(images(1)).square().sum()
    clipadapt.activate(model, "b", "a")
    with clipadapt.frames(model, 4):
        loss = loss + encode(images(2)).sin().sum()
    loss.backward()  # outside both frames() blocks; block inputs, T and active sets of the first call long gone
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", MODELS)
def test_grad_checkpointing_gives_the_gradients_of_each_call(kind):
    plain, checkpointed = grads_of_two_calls(kind, False), grads_of_two_calls(kind, True)
    assert plain.keys() == checkpointed.keys()
    assert any("b__" in name for name in plain) and any("st_pre_mlp" in name and "b__" not in name for name in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["hf_clip", "siglip"])
def test_hf_grad_checkpointing_recomputes_layers_in_backward(kind):
    """The switch reaches the layers (so the test above compares a recomputation), without
    reentrant checkpointing, whose recomputation would get a copy of the block input."""
    model = spec_of_family("hf").set_grad_checkpointing(MODELS[kind]())
    layers = [m for m in model.modules() if hasattr(m, "_gradient_checkpointing_func")]
    assert layers and all(m.gradient_checkpointing for m in layers)
    assert all(m._gradient_checkpointing_func.keywords.get("use_reentrant") is False for m in layers)


def test_a_family_without_gradient_checkpointing_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"backbone 'openai_clip' has no gradient checkpointing; model.grad_checkpointing: "
                                         r"true is accepted for .*hf.*open_clip.*timm"):
        spec_of_family("openai_clip").set_grad_checkpointing(BUILDERS["openai_clip"]())


@pytest.mark.parametrize("kind", ["open_clip", "hf_clip"])
def test_the_hooks_of_a_call_trace_under_torch_compile_in_one_graph(kind):
    model = MODELS[kind]()
    for name, site in (("st", "pre_mlp"), ("bottleneck", "pre_attn")):
        for _, _, module in clipadapt.inject(model, name, layers="all", site=site, width=8).modules:
            randomize_(module, std=0.2)
    encode = detect(model).visual(model).encode
    with torch.no_grad(), clipadapt.frames(model, 4):
        eager = encode(images(1))
        compiled = torch.compile(encode, backend="aot_eager", fullgraph=True)(images(1))  # fullgraph: a graph break raises
    torch._dynamo.reset()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["open_clip", "hf", "timm"])
def test_a_recipe_switches_gradient_checkpointing_on_in_each_family(family):
    from clipadapt.models import build_from_recipe
    from clipadapt.recipes import load_recipe

    overrides = ["model.grad_checkpointing=true", f"model.family={family}"]
    if family == "timm":  # visual only
        overrides = [*overrides, "heads=[{name: vc}]", "adapters=[{name: ted, options: {width: 8}}]"]
    clip = build_from_recipe(load_recipe("quickstart", overrides), ["a", "b", "c", "d"]).clip
    flags = [m.gradient_checkpointing for m in clip.modules() if hasattr(m, "_gradient_checkpointing_func")] if family == "hf" \
        else [m.grad_checkpointing for m in clip.modules() if hasattr(m, "grad_checkpointing")]
    assert flags and all(flags)


def test_reentrant_checkpointing_is_refused_in_one_line_not_given_the_state_at_backward_time():
    """use_reentrant=True recomputes a block from a detached copy of its input, which carries no
    call state: backward inside `frames(model, 2)` would re-run a T=4 call with T=2."""
    from torch.utils.checkpoint import checkpoint

    model = BUILDERS["open_clip"]()
    clipadapt.inject(model, "ted", layers="all", width=8)
    model.train()
    blocks = model.visual.transformer.resblocks
    x = torch.randn(8, 5, blocks[0].ln_1.normalized_shape[0], requires_grad=True)  # (B*T, tokens, width)
    with clipadapt.frames(model, 4):
        out = checkpoint(blocks[0], x, use_reentrant=True)
    with clipadapt.frames(model, 2), pytest.raises(RuntimeError, match="reentrant .*use_reentrant=False"):
        out.square().sum().backward()
