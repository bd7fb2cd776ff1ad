"""Decoder heads: losses, gradients, soft targets, CMLM masking."""

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

import clipadapt
from clipadapt.heads.cmlm import IGNORE, MASK_WORD, num_masked, word_vocabulary
from clipadapt.heads.contrastive import soft_targets
from clipadapt.models import build_m2clip, build_video_clip
from tiny import CLASSNAMES, tiny_text_clip

TED = {"name": "ted", "options": {"width": 8}}
TEXT = {"name": "bottleneck", "tower": "text", "layers": [-1], "options": {"width": 8, "init": "default"}}


def video(batch=4, frames=3, seed=0):
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def build(heads, **kwargs):
    return build_video_clip(tiny_text_clip(), CLASSNAMES, adapters=[TED, TEXT], heads=[{"name": h, "options": kwargs.get(h, {})} for h in heads], pooling="conv")


HEAD_PARAMS = {"contrastive": [], "cmc": [], "cmlm": ["decoder.heads.cmlm.adapter", "decoder.heads.cmlm.predict"], "vc": ["decoder.heads.vc.fc"]}


@pytest.mark.parametrize("head", ["contrastive", "cmc", "cmlm", "vc"])
def test_each_head_has_a_finite_loss_with_gradient_only_into_trainable_parameters(head):
    model = build([head]).train()
    out = model(video(), torch.tensor([0, 1, 1, 3]))
    assert set(out["losses"]) == {head} and torch.isfinite(out["loss"])
    out["loss"].backward()
    params = dict(model.named_parameters())
    for name, param in params.items():
        if not param.requires_grad:
            assert param.grad is None, name
    for prefix in HEAD_PARAMS[head]:
        grads = [p.grad for n, p in params.items() if n.startswith(prefix)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), prefix
    ted_up = [p.grad for n, p in params.items() if "ted_pre_mlp.te.up.weight" in n]
    assert all(g is not None and torch.isfinite(g).all() for g in ted_up)
    if head in ("contrastive", "cmc"):  # text-side heads train the text adapter
        grad = params["clip.transformer.resblocks.1.adapters.bottleneck_pre_mlp.mlp.up.weight"].grad
        assert grad is not None and grad.abs().sum() > 0


def test_soft_targets_share_mass_among_repeated_labels():
    targets = soft_targets(torch.tensor([2, 2, 5, 2]))
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert targets[0, 0] == targets[0, 1] == targets[0, 3] > targets[0, 2]
    torch.testing.assert_close(targets[2, 2], torch.tensor(1.0) / (1 + 3 * torch.exp(torch.tensor(-10.0))))


def test_contrastive_loss_is_smaller_when_videos_match_their_texts():
    model = build(["contrastive"])
    head = model.decoder.heads["contrastive"]
    texts = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    labels = torch.tensor([0, 1, 2, 3])
    from clipadapt.heads.base import HeadInputs

    def loss(videos):
        return head(HeadInputs(video=videos, class_embeddings=texts, logit_scale=model.logit_scale(), labels=labels)).loss

    assert loss(texts) < loss(texts.roll(1, 0))


WORDS = st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=6), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(names=st.lists(WORDS.map(" ".join), min_size=1, max_size=5), seed=st.integers(0, 1000))
def test_cmlm_masking_laws(cmlm_model, names, seed):
    head, text = cmlm_model.decoder.heads["cmlm"], cmlm_model.text
    prompts = [f"a video of {n}" for n in names]
    assume(all(sum(len(text.encode_word(w)) for w in p.split()) + 2 <= text.context_length for p in prompts))
    head.vocabulary = word_vocabulary(prompts)
    head._index = {w: i for i, w in enumerate(head.vocabulary)}
    tokens, labels = head.mask(prompts, text, [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))])
    mask_id = text.encode_word(MASK_WORD)[0]
    for row, prompt in enumerate(prompts):
        words = prompt.split()
        masked = (labels[row] != IGNORE).nonzero().flatten()
        assert len(masked) == num_masked(len(words)) >= 1
        assert (tokens.ids[row, masked] == mask_id).all()
        # rebuild the prompt: a masked position holds the vocabulary index of the original word
        restored, position = [], 1
        for word in words:
            ids = text.encode_word(word)
            if labels[row, position] != IGNORE:
                restored.append(head.vocabulary[labels[row, position]])
                position += 1
            else:
                assert tokens.ids[row, position : position + len(ids)].tolist() == ids
                restored.append(word)
                position += len(ids)
        assert restored == words


@pytest.fixture(scope="module")
def cmlm_model():
    return build(["cmlm"])


def test_vocabulary_counts_template_words():
    assert word_vocabulary(["a video of brush hair", "a video of archery"]) == ["a", "archery", "brush", "hair", "of", "video"]


def test_cmlm_words_decide_the_vocabulary_size_over_a_declared_one():
    model = build_video_clip(tiny_text_clip(), CLASSNAMES, adapters=[TED], heads=[{"name": "cmlm", "options": {"vocab_size": 520}}])
    assert model.decoder.heads["cmlm"].predict.bias.numel() == len(word_vocabulary([f"a video of {n}" for n in CLASSNAMES]))


def test_cmlm_with_only_a_declared_size_counts_but_refuses_to_train():
    model = build_video_clip(tiny_text_clip(), None, adapters=[TED], heads=[{"name": "cmlm", "options": {"vocab_size": 520}}], num_classes=400)
    assert model.decoder.heads["cmlm"].predict.bias.numel() == 520
    model.set_classnames(["x"] * 400)
    with pytest.raises(ValueError, match="training needs words"):
        model.train()(video(), torch.tensor([0, 1, 2, 3]))


def test_m2clip_on_vit_b16_has_exactly_16138136_trainable_parameters():
    import open_clip

    names = [f"c{i}" + (f" d{i}" if i < 117 else "") for i in range(400)]
    assert len(word_vocabulary([f"a video of {n}" for n in names])) == 520
    model = build_m2clip(open_clip.create_model("ViT-B-16", pretrained=None), names)
    info = clipadapt.summary(model, show=False)
    assert info["trainable"] == 16_138_136
    rows = {row["adapter"]: row["params"] for row in info["rows"]}
    assert rows == {"ted": 14_247_936, "bottleneck": 394_112, "pooling": 263_936, "heads.cmlm.adapter": 394_112,
                    "heads.cmlm.predict": 530_440, "heads.vc.fc": 307_600}


def test_an_unknown_head_option_is_refused_naming_it_and_the_accepted_ones():
    with pytest.raises(TypeError, match="'gatherr' is not an option of head 'contrastive'; accepted: bias, gather, loss, sharpness"):
        build(["contrastive"], contrastive={"gatherr": "global"})


def test_recipe_validation_checks_head_options_against_the_head():
    from clipadapt.recipes import validate

    errors = validate({"adapters": [], "heads": [{"name": "vc", "options": {"dropuot": 0.1}}]})
    assert any(e.path == "heads.0.options.dropuot" and "did you mean 'dropout'" in e.message for e in errors), errors


def test_a_head_gets_only_the_inputs_it_declares():
    from clipadapt.heads import Head, HeadOutput

    seen = {}

    @clipadapt.register_head("spy_demo", override=True)
    class Spy(Head):
        needs = frozenset({"frames"})

        def forward(self, inputs):
            seen.update({name: value is not None for name, value in vars(inputs).items()})
            return HeadOutput(loss=inputs.frames.sum() * 0)

    model = build(["spy_demo"]).train()
    model(video(), torch.tensor([0, 1, 1, 3]))
    assert seen == {"video": False, "frames": True, "cls": False, "class_embeddings": False, "logit_scale": False, "logit_bias": False,
                    "labels": False, "label_prompts": False, "sample_ids": False}
