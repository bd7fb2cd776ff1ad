"""SigLIP's objective: the heads' sigmoid loss against the paper's formula written out here and
against open_clip's own ``SigLipLoss``; the logit bias in zero-shot and CMC logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipadapt.heads import CMCHead
from clipadapt.heads.base import HeadContext, HeadInputs
from clipadapt.heads.contrastive import ContrastiveHead
from clipadapt.models import build_video_clip

SCALE, BIAS = torch.tensor(7.5), torch.tensor(-4.0)


def features(batch: int = 6, classes: int = 4, dim: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    video = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(classes, dim, generator=generator, dtype=torch.float64), dim=-1)
    return video, texts


def paper_loss(video, texts, matched, scale, bias) -> float:
    """Zhai et al. 2023, eq. (1): −1/|B| Σ_i Σ_j log σ(z_ij (t·x_i·y_j + b)), z_ij = ±1, in plain Python."""
    total = 0.0
    for i in range(len(video)):
        for j in range(len(texts)):
            z = 1.0 if matched(i, j) else -1.0
            logit = float(scale) * sum(a * b for a, b in zip(video[i].tolist(), texts[j].tolist())) + float(bias)
            total += math.log(1.0 / (1.0 + math.exp(-z * logit)))
    return -total / len(video)


def contrastive(loss: str = "sigmoid", **options) -> ContrastiveHead:
    return ContrastiveHead(HeadContext(num_classes=4, contrastive_loss=loss), gather="local", **options)


def test_contrastive_sigmoid_is_the_papers_loss_with_matches_by_label():
    video, texts = features()
    labels = torch.tensor([0, 2, 2, 1, 3, 0])  # repeated classes: their prompts are the same text
    out = contrastive()(HeadInputs(video=video, class_embeddings=texts, logit_scale=SCALE, logit_bias=BIAS, labels=labels))
    expected = paper_loss(video, texts[labels], lambda i, j: labels[i] == labels[j], SCALE, BIAS)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


def test_contrastive_sigmoid_equals_open_clips_siglip_loss_on_distinct_labels():
    from open_clip.loss import SigLipLoss

    video, texts = features(batch=4)
    labels = torch.tensor([3, 0, 1, 2])
    ours = contrastive()(HeadInputs(video=video, class_embeddings=texts, logit_scale=SCALE, logit_bias=BIAS, labels=labels)).loss
    theirs = SigLipLoss()(video, texts[labels], SCALE, BIAS)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_cmc_sigmoid_scores_every_class_prompt_with_one_positive_per_row_and_the_models_scale():
    video, texts = features()
    labels = torch.tensor([0, 2, 2, 1, 3, 0])
    head = CMCHead(HeadContext(num_classes=4, contrastive_loss="sigmoid"))
    assert "logit_scale" in head.needs
    out = head(HeadInputs(video=video, class_embeddings=texts, logit_scale=SCALE, logit_bias=BIAS, labels=labels))
    assert out.loss.item() == pytest.approx(paper_loss(video, texts, lambda i, c: labels[i] == c, SCALE, BIAS), rel=1e-12)
    torch.testing.assert_close(out.logits, SCALE * video @ texts.t() + BIAS)


def test_softmax_heads_are_unchanged_by_a_bias_and_keep_the_release_scale():
    video, texts = features()
    labels = torch.tensor([0, 2, 2, 1, 3, 0])
    head = CMCHead(HeadContext(num_classes=4))
    with_bias = head(HeadInputs(video=video, class_embeddings=texts, logit_bias=BIAS, labels=labels))
    plain = head(HeadInputs(video=video, class_embeddings=texts, labels=labels))
    torch.testing.assert_close(with_bias.loss, F.cross_entropy(100 * video @ texts.t(), labels))
    torch.testing.assert_close(with_bias.loss, plain.loss)


def test_the_default_loss_is_the_familys_own(tiny_clip_with_bias):
    siglip_like = build_video_clip(tiny_clip_with_bias, ["a", "b"], heads=[{"name": "contrastive"}, {"name": "cmc"}])
    assert siglip_like.contrastive_loss == "sigmoid"
    assert {h.loss for h in siglip_like.decoder.heads.values()} == {"sigmoid"}
    clip = build_video_clip(tiny_clip(None), ["a", "b"], heads=[{"name": "contrastive"}, {"name": "cmc"}])
    assert {h.loss for h in clip.decoder.heads.values()} == {"softmax"} and clip.logit_bias() is None


def test_zero_shot_logits_are_the_models_own_image_text_logits_bias_included(tiny_clip_with_bias):
    clip = tiny_clip_with_bias
    model = build_video_clip(clip, ["archery", "surfing"], templates=["a video of {}"])
    frame = torch.randn(3, 1, 3, 32, 32)  # one frame per video: the video embedding is the frame's
    ours = model.zero_shot_logits(frame)
    tokens = model.text.tokenize(["a video of archery", "a video of surfing"])
    theirs, _ = clip.get_logits(frame[:, 0], tokens.ids)  # open_clip: scale·img·txtᵀ + logit_bias
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert clip.logit_bias.item() == -10.0


def test_sigmoid_on_a_clip_without_a_bias_is_refused_unless_one_is_given():
    with pytest.raises(ValueError, match="needs a logit bias.*bias option"):
        ContrastiveHead(HeadContext(num_classes=2), loss="sigmoid")
    with pytest.raises(ValueError, match="not one of"):
        CMCHead(HeadContext(num_classes=2), loss="hinge")
    head = ContrastiveHead(HeadContext(num_classes=2), loss="sigmoid", bias=-10.0, gather="local")
    video, texts = features(batch=2, classes=2)
    out = head(HeadInputs(video=video, class_embeddings=texts, logit_scale=SCALE, labels=torch.tensor([0, 1])))
    assert out.loss.item() == pytest.approx(paper_loss(video, texts, lambda i, j: i == j, SCALE, -10.0), rel=1e-12)


def tiny_clip(init_logit_bias):
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=32, init_logit_bias=init_logit_bias,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, layers=2, heads=2),
    ).eval()


@pytest.fixture
def tiny_clip_with_bias():
    return tiny_clip(-10.0)


def test_a_recipe_chooses_the_heads_loss():
    from clipadapt.recipes import validate

    heads = [{"name": "contrastive", "options": {"loss": "sigmoid", "bias": -10.0}}, {"name": "cmc", "options": {"loss": "softmax"}}]
    assert validate({"adapters": [], "heads": heads}) == []


def test_a_recipe_naming_a_loss_that_does_not_exist_is_refused_by_validate():
    from clipadapt.recipes import validate

    for head in ("contrastive", "cmc"):
        errors = validate({"adapters": [], "heads": [{"name": head, "options": {"loss": "sigmod"}}]})
        assert [(e.path, e.message) for e in errors] == [
            ("heads.0.options.loss", "'sigmod' is not one of softmax, sigmoid; did you mean 'sigmoid'?")], errors
