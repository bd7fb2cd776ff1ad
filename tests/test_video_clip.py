"""VideoCLIP: features, evaluation outputs, the exact fast text path, zero-shot, training."""

import pytest
import torch
import torch.nn.functional as F

import clipadapt
from clipadapt.models import VideoCLIP, build_m2clip, build_video_clip
from tiny import CLASSNAMES, randomize_, tiny_text_clip

TED = {"name": "ted", "options": {"width": 8}}
TEXT = {"name": "bottleneck", "tower": "text", "layers": [-1], "options": {"width": 8, "init": "default"}, "lr_mult": 0.5}


def clips(batch=4, frames=3, seed=0):
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def m2clip():
    return build_m2clip(tiny_text_clip(), CLASSNAMES, ted_width=8, text_width=8)


def test_encode_video_shapes_and_normalisation():
    model = m2clip().eval()
    with torch.no_grad():
        features = model.encode_video(clips())
    assert features.frames.shape == (4, 3, 32) and features.video.shape == (4, 32) and features.cls.shape == (4, 64)
    torch.testing.assert_close(features.video.norm(dim=-1), torch.ones(4))


def test_encode_video_sets_the_frame_count_itself_and_matches_the_frozen_model_at_init():
    frozen = tiny_text_clip()
    model = build_video_clip(tiny_text_clip(), CLASSNAMES, adapters=[TED]).eval()
    video = clips()
    with torch.no_grad():
        per_frame = frozen.encode_image(video.flatten(0, 1)).reshape(4, 3, -1)
        features = model.encode_video(video)
    torch.testing.assert_close(features.video, F.normalize(per_frame.mean(1), dim=-1))


def test_eval_returns_logits_per_classifying_head_and_their_fusion():
    model = m2clip().eval()
    with torch.no_grad():
        out = model(clips())
    assert set(out) == {"cmc", "vc", "fused"}
    assert out["cmc"].shape == out["vc"].shape == (4, len(CLASSNAMES))
    torch.testing.assert_close(out["fused"], (out["cmc"].softmax(-1) + out["vc"].softmax(-1)) / 2)


def test_contrastive_alone_classifies_by_similarity():
    model = build_video_clip(tiny_text_clip(), CLASSNAMES, adapters=[TED], heads=[{"name": "contrastive"}]).eval()
    with torch.no_grad():
        out = model(clips())
        assert set(out) == {"contrastive", "fused"}
        torch.testing.assert_close(out["contrastive"], model.zero_shot_logits(clips()))


def test_training_mode_returns_total_and_per_head_losses():
    model = m2clip().train()
    out = model(clips(), torch.tensor([0, 1, 2, 3]))
    weights = {"contrastive": 0.5, "cmc": 0.5, "cmlm": 0.1, "vc": 1.0}
    assert set(out["losses"]) == set(weights)
    torch.testing.assert_close(out["loss"], sum(weights[k] * v for k, v in out["losses"].items()))


def assert_fast_text_path_is_exact(model, expect_first_trainable: int, dtype=torch.float64, tol=1e-10, expect_cut: bool = True) -> None:
    """Class embeddings (cached prefix, cut sequences, MLP of the last block on end-of-text
    tokens, direct attention) against the plain ``encode_text`` with PyTorch's own attention,
    on the whole context; in float64 what is left of any difference is rounding."""
    model.to(dtype).train()
    weights = torch.arange(float(len(model.classnames) * model.embed_dim), dtype=dtype).view(len(model.classnames), -1)
    fast = model.class_embeddings()
    text_params = [p for n, p in model.named_parameters() if "adapters" in n and p.requires_grad and "visual" not in n]
    assert text_params
    fast_grads = torch.autograd.grad((fast * weights).sum(), text_params)
    tokens = model.text.tokenize(model.prompts(model.classnames, model.templates))
    clipadapt.efficient_attention(model.clip, enable=False)
    plain = F.normalize(model.clip.encode_text(tokens.ids), dim=-1)  # whole context, every block
    plain_grads = torch.autograd.grad((plain * weights).sum(), text_params)
    torch.testing.assert_close(fast, plain, rtol=tol, atol=tol / 100)
    for a, b in zip(fast_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol / 100)
    assert model.text.first_trainable_block() == expect_first_trainable
    assert (tokens.length < tokens.ids.shape[1]) == expect_cut


# the last block's adapter before its MLP (the MLP runs on end-of-text tokens only), or also
# beside the MLP (the whole block runs)
AFTER_ATTENTION = {"name": "bottleneck", "tower": "text", "layers": [-1], "site": "mlp_parallel", "options": {"width": 8, "init": "default"}}


@pytest.mark.parametrize("extra", [[], [AFTER_ATTENTION]], ids=["pre_mlp", "pre_mlp+mlp_parallel"])
def test_fast_text_path_gives_the_same_embeddings_and_gradients_as_the_plain_one(extra):
    model = build_video_clip(tiny_text_clip(), CLASSNAMES * 3, adapters=[TED, TEXT, *extra], heads=[{"name": "cmc"}])
    for injection in clipadapt.injections(model)[1:]:
        for _, _, module in injection.modules:
            randomize_(module, std=0.1)
    assert model.text._last_block_mlp_is_per_token() == (not extra)
    assert_fast_text_path_is_exact(model, expect_first_trainable=1)


def test_fast_text_path_is_exact_on_sequence_first_openai_blocks():
    from clip.model import CLIP

    torch.manual_seed(0)
    openai = CLIP(32, 32, 2, 64, 8, 16, 49408, 32, 2, 2)
    model = build_video_clip(openai, CLASSNAMES * 2, adapters=[TED, TEXT], heads=[{"name": "cmc"}])
    for _, _, module in clipadapt.injections(model)[1].modules:
        randomize_(module, std=0.1)
    assert model.text.tower.seq_first
    # OpenAI's LayerNorm computes in float32 whatever the model's dtype
    assert_fast_text_path_is_exact(model, expect_first_trainable=1, dtype=torch.float32, tol=1e-4)


def test_class_embeddings_are_cached_when_the_text_path_is_frozen():
    model = build_video_clip(tiny_text_clip(), CLASSNAMES, adapters=[TED], heads=[{"name": "cmc"}]).train()
    assert model.class_embeddings() is model.class_embeddings()


def test_zero_shot_on_new_class_names_without_retraining():
    model = m2clip().eval()
    new = ["ride a horse", "surf", "juggle"]
    video = clips()
    with torch.no_grad():
        logits = model.zero_shot_logits(video, new)
        expected = model.logit_scale() * model.encode_video(video).video @ model.encode_text([f"a video of {n}" for n in new]).t()
    assert logits.shape == (4, 3)
    torch.testing.assert_close(logits, expected)


def test_several_templates_are_averaged():
    model = VideoCLIP(tiny_text_clip(), ["surf"], templates=["a video of {}", "a photo of {}"])
    with torch.no_grad():
        both = model.encode_text(["a video of surf", "a photo of surf"])
        torch.testing.assert_close(model.class_embeddings()[0], F.normalize(both.mean(0), dim=-1))


def test_param_groups_scale_text_adapters_and_skip_decay_on_biases_and_norms():
    model = m2clip()
    groups = {g["name"]: g for g in model.param_groups(0.01)}
    half = [n for g in groups.values() if g["lr_mult"] == 0.5 for n in g["names"]]
    assert half and all("bottleneck" in n or "heads.cmlm.adapter" in n for n in half)
    assert any("heads.cmlm.adapter" in n for n in half)
    for group in groups.values():
        for name, param in zip(group["names"], group["params"]):
            assert (group["weight_decay"] == 0) == (param.ndim <= 1), name
    assert not any("predict" in n for n in half)


def overfit(heads, steps=60):
    torch.manual_seed(0)
    model = build_video_clip(tiny_text_clip(), CLASSNAMES, adapters=[TED, TEXT], heads=heads, pooling="conv")
    video, labels = clips(8, 3, seed=1), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(video, labels)["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(video)["fused"].argmax(-1) == labels).float().mean().item()


def test_vc_alone_overfits_eight_clips():
    assert overfit([{"name": "vc", "options": {"dropout": 0.0}}]) == 1.0


def test_cmc_alone_overfits_eight_clips():
    assert overfit([{"name": "cmc"}]) == 1.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_training_step_works_in_fp32_and_under_bf16_autocast(precision):
    model = m2clip().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(clips(), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    optimizer.step()


def test_trainable_state_round_trip():
    model, other = m2clip().train(), m2clip()
    model(clips(), torch.tensor([0, 1, 2, 3]))
    state = model.trainable_state_dict()
    assert "decoder.heads.cmlm.calls" in state and int(state["decoder.heads.cmlm.calls"]) == 1
    other.load_trainable_state_dict(state)
    for name, tensor in other.trainable_state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_video_clip_wraps_an_openai_clip_model_too():
    from clip.model import CLIP

    torch.manual_seed(0)
    openai = CLIP(32, 32, 2, 64, 8, 16, 49408, 32, 2, 2)  # sequence-first blocks
    model = build_m2clip(openai, CLASSNAMES, ted_width=8, text_width=8).train()
    out = model(clips(), torch.tensor([0, 1, 2, 3]))
    assert set(out["losses"]) == {"contrastive", "cmc", "cmlm", "vc"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    model.eval()
    with torch.no_grad():
        assert model(clips())["fused"].shape == (4, len(CLASSNAMES))


def test_video_clip_wraps_a_hugging_face_clip_model():
    from tiny import tiny_hf

    model = build_video_clip(tiny_hf(real_tokens=True), CLASSNAMES, adapters=[TED, TEXT],
                             heads=[{"name": "contrastive"}, {"name": "cmc"}, {"name": "vc"}], pooling="conv")
    for _, _, module in clipadapt.injections(model)[1].modules:
        randomize_(module, std=0.1)
    model.train()
    fast = model.class_embeddings()  # cached frozen prefix, cut sequences, explicit causal mask
    tokens = model.text.tokenize(model.prompts(model.classnames, model.templates))
    out = model.clip.get_text_features(input_ids=tokens.ids)
    plain = F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    loss = model(clips(), torch.tensor([0, 1, 2, 3]))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        assert set(model(clips())) == {"cmc", "vc", "fused"}


def test_cmlm_trains_on_a_hugging_face_model():
    from tiny import tiny_hf

    model = build_video_clip(tiny_hf(real_tokens=True), CLASSNAMES, adapters=[TED], heads=[{"name": "cmlm", "options": {"adapter_width": 8}}]).train()
    out = model(torch.randn(2, 3, 3, 32, 32), torch.tensor([0, 2]))
    out["loss"].backward()
    head = model.decoder.heads["cmlm"]
    assert torch.isfinite(out["loss"]) and head.adapter.up.weight.grad.abs().sum() > 0
