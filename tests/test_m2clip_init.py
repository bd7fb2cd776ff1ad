"""M2-CLIP starts as the authors' release does, the zero-shot baseline is the frozen CLIP itself,
losses follow the model's dtype, and CMLM word lists come in both file formats."""

import copy

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipadapt.adapters.bottleneck import Bottleneck
from clipadapt.adapters.temporal_pool import TemporalPooling
from clipadapt.recipes import load_recipe
from clipadapt.heads.cmlm import read_word_list
from clipadapt.inject import injections
from clipadapt.models import build_m2clip, build_video_clip

NAMES = ["archery", "abseiling", "brush hair"]
TINY = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
    text_cfg=dict(context_length=16, vocab_size=49408, width=32, layers=2, heads=2),
)


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY).eval()


def video(batch=2, frames=4, seed=1):
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def plain_zero_shot_logits(plain, clips, names, template="a video of {}"):
    """CLIP's zero-shot logits with frame-mean pooling, computed with open_clip alone."""
    batch, frames = clips.shape[:2]
    per_frame = plain.encode_image(clips.flatten(0, 1)).reshape(batch, frames, -1)
    videos = F.normalize(per_frame.mean(dim=1), dim=-1)
    tokens = open_clip.tokenize([template.format(n) for n in names], context_length=plain.context_length)
    texts = plain.encode_text(tokens, normalize=True)
    return plain.logit_scale.exp() * videos @ texts.t()


# ---- initialisation ----------------------------------------------------------------------


def test_bottleneck_zero_bias_keeps_pytorchs_weights_and_zeroes_both_biases():
    torch.manual_seed(0)
    adapter = Bottleneck(32, 16, init="zero_bias")
    torch.manual_seed(0)
    reference_down, reference_up = torch.nn.Linear(32, 16), torch.nn.Linear(16, 32)  # PyTorch's own init
    assert torch.equal(adapter.down.weight, reference_down.weight) and torch.equal(adapter.up.weight, reference_up.weight)
    assert not adapter.down.bias.any() and not adapter.up.bias.any()
    assert adapter.up.weight.abs().sum() > 0  # not an identity


def test_the_pooling_adapter_zeroes_its_conv_and_both_biases_and_is_an_exact_identity():
    pool = TemporalPooling(32, "conv")
    for param in (pool.conv.weight, pool.conv.bias, pool.down.bias, pool.up.bias):
        assert not param.any()
    assert pool.down.weight.abs().sum() > 0 and pool.up.weight.abs().sum() > 0
    frames = torch.randn(3, 5, 32)
    per_frame, pooled = pool(frames)
    assert torch.equal(per_frame, frames)
    assert torch.equal(pooled, frames.mean(dim=1))


def test_a_fresh_m2clip_visual_path_is_exactly_the_frozen_clips():
    clips = video()
    model = build_m2clip(tiny_clip(), NAMES, ted_width=16, text_width=16).eval()
    bare = build_video_clip(tiny_clip(), NAMES, pooling="mean").eval()  # same weights, no adapter
    assert {inj.name for inj in injections(model.clip)} == {"ted", "bottleneck"}
    with torch.no_grad():
        adapted, frozen = model.encode_video(clips), bare.encode_video(clips)
    assert torch.equal(adapted.frames, frozen.frames)
    assert torch.equal(adapted.video, frozen.video)
    assert torch.equal(adapted.cls, frozen.cls)
    # and the frozen path is plain open_clip's, frame by frame, with the frame mean as the video
    plain = tiny_clip().double()
    model.double()
    with torch.no_grad():
        features = model.encode_video(clips.double())
        per_frame = plain.encode_image(clips.double().flatten(0, 1)).reshape(2, 4, -1)
    torch.testing.assert_close(features.frames, per_frame, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(features.video, F.normalize(per_frame.mean(dim=1), dim=-1), rtol=1e-12, atol=1e-12)


def test_the_cmlm_adapter_starts_as_a_copy_of_the_last_block_text_adapter():
    model = build_m2clip(tiny_clip(), NAMES, ted_width=16, text_width=16)
    text_adapter = next(m for inj in injections(model.clip) if inj.tower == "text" for _, _, m in inj.modules).mlp
    cmlm_adapter = model.decoder.heads["cmlm"].adapter
    source, copied = text_adapter.state_dict(), cmlm_adapter.state_dict()
    assert source.keys() == copied.keys()
    for key in source:
        assert torch.equal(source[key], copied[key]), key
        assert source[key].data_ptr() != copied[key].data_ptr(), f"{key} is shared, not copied"
    assert not text_adapter.down.bias.any() and not text_adapter.up.bias.any()
    assert text_adapter.up.weight.abs().sum() > 0
    assert all(p.requires_grad for p in cmlm_adapter.parameters())


def test_cmlm_copy_without_a_text_adapter_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="adapter_init 'copy' needs a bottleneck adapter in the last text block"):
        build_video_clip(tiny_clip(), NAMES, adapters=[{"name": "ted", "options": {"width": 16}}],
                         heads=[{"name": "cmlm", "options": {"adapter_width": 16, "adapter_init": "copy"}}])


# ---- the zero-shot baseline --------------------------------------------------------------


def test_frozen_clip_zero_shot_logits_equal_plain_clips_with_frame_mean_pooling():
    from clipadapt.engine.tasks import frozen_clip

    recipe = load_recipe("quickstart")
    model = frozen_clip(recipe, NAMES).double()
    assert injections(model.clip) == [] and len(model.decoder.heads) == 0
    plain = plain_open_clip(recipe.model.config).eval()
    plain.load_state_dict(model.clip.state_dict())
    plain.double()
    clips = video().double()
    with torch.no_grad():
        ours, theirs = model.zero_shot_logits(clips), plain_zero_shot_logits(plain, clips, NAMES)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_zeroshot_without_a_checkpoint_scores_the_frozen_clip(monkeypatch):
    """`zero_shot(recipe, None)` hands evaluation a model whose logits are plain CLIP's."""
    import clipadapt.data.recipe
    from clipadapt.engine import tasks

    class Dataset:
        classnames = NAMES

    scored = []
    monkeypatch.setattr(clipadapt.data.recipe, "build_dataset", lambda recipe, split, zero_shot=False: Dataset())
    monkeypatch.setattr(tasks, "_loader", lambda recipe, dataset: None)
    monkeypatch.setattr(tasks, "evaluate", lambda model, loader, **_: scored.append(model) or {"zeroshot/top1": 0.0, "zeroshot/top5": 0.0})
    recipe = load_recipe("quickstart")
    tasks.zero_shot(recipe, None, splits=(1,))
    model = scored[0].model.double()
    plain = plain_open_clip(recipe.model.config).eval()
    plain.load_state_dict(model.clip.state_dict())
    plain.double()
    clips = video().double()
    with torch.no_grad():
        torch.testing.assert_close(model.zero_shot_logits(clips), plain_zero_shot_logits(plain, clips, NAMES), rtol=1e-10, atol=1e-10)


def test_zeroshot_frozen_scores_the_checkpoints_model_with_its_adapters_disabled(monkeypatch, tmp_path):
    """`zero_shot(recipe, checkpoint, frozen=True)` scores the trained model under
    `VideoCLIP.frozen` (adapters disabled, frame mean): its logits are torch.equal to those of
    the un-injected CLIP built apart from the recipe, on the backbone weights of the checkpoint."""
    import clipadapt.data.recipe
    from clipadapt.engine import build_optimizer, build_scheduler, save_checkpoint, tasks
    from clipadapt.models import build_from_recipe
    from tiny import randomize_

    recipe = load_recipe("quickstart", ["seed=3"])
    trained = build_from_recipe(recipe, NAMES)
    for inj in injections(trained):  # trained adapters and pooling: far from identities
        for _, _, module in inj.modules:
            randomize_(module, std=0.2)
    randomize_(trained.pooling, std=0.2)
    optimizer = build_optimizer(trained, recipe.optim)
    path = save_checkpoint(tmp_path / "last.pt", model=trained, optimizer=optimizer, scheduler=build_scheduler(optimizer, steps_per_epoch=1, epochs=1, warmup_epochs=0),
                           epoch=1, batch=0, step=1, best=None, recipe=recipe.to_dict(), extra={"classnames": NAMES})

    class Dataset:
        classnames = NAMES

    clips, scored = video(), {}

    def evaluate(model, loader, **_):  # where the evaluation would run: inside zero_shot's context
        scored.setdefault("logits", []).append(model.model.zero_shot_logits(clips))
        return {"zeroshot/top1": 0.0, "zeroshot/top5": 0.0}

    monkeypatch.setattr(clipadapt.data.recipe, "build_dataset", lambda recipe, split, zero_shot=False: Dataset())
    monkeypatch.setattr(tasks, "_loader", lambda recipe, dataset: None)
    monkeypatch.setattr(tasks, "evaluate", evaluate)
    with torch.no_grad():
        tasks.zero_shot(recipe, path, splits=(1,), frozen=True)
        tasks.zero_shot(recipe, path, splits=(1,))
        tasks.zero_shot(recipe, None, splits=(1,))
    baseline, adapted, fresh = scored["logits"]
    reference = build_video_clip(plain_open_clip(recipe.model.config), NAMES, pooling="mean").eval()
    stored = torch.load(path, weights_only=True)["identity"]["frozen"]  # weights: null: the checkpoint holds the backbone
    reference.clip.load_state_dict({key.removeprefix("clip."): value for key, value in stored.items() if key.startswith("clip.")})
    with torch.no_grad():
        expected = reference.zero_shot_logits(clips)
    assert torch.equal(baseline, expected)
    assert torch.equal(fresh, expected)  # `zeroshot RECIPE`: the recipe's seed draws the same backbone
    assert not torch.allclose(adapted, expected)


# ---- loss dtypes ---------------------------------------------------------------------------


def test_losses_of_a_float64_model_are_float64_and_match_a_float64_computation():
    torch.manual_seed(0)
    model = build_m2clip(tiny_clip(), NAMES, ted_width=16, text_width=16, vc_dropout=0.0).double().train()
    labels = torch.tensor([0, 2])
    clips = video().double()
    out = model(clips, labels)
    assert {name: loss.dtype for name, loss in out["losses"].items()} == dict.fromkeys(out["losses"], torch.float64)
    assert out["loss"].dtype == torch.float64
    with torch.no_grad():
        features, texts = model.encode_video(clips), model.class_embeddings()
        expected_cmc = F.cross_entropy(100.0 * features.video @ texts.t(), labels)
    assert out["losses"]["cmc"].item() == pytest.approx(expected_cmc.item(), rel=1e-12)


def test_losses_under_bf16_autocast_are_float32():
    model = build_m2clip(tiny_clip(), NAMES, ted_width=16, text_width=16).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(video(), torch.tensor([0, 2]))
    assert {loss.dtype for loss in out["losses"].values()} == {torch.float32}


# ---- word lists -----------------------------------------------------------------------------


def test_word_lists_with_one_word_per_line_or_word_and_index_read_the_same(tmp_path):
    plain, indexed = tmp_path / "plain.txt", tmp_path / "indexed.txt"
    plain.write_text("a\nabseiling\nArchery\n\n")
    indexed.write_text("a 0\nabseiling 1\narchery 2\n")
    assert read_word_list(plain) == read_word_list(indexed) == ["a", "abseiling", "archery"]


@pytest.mark.parametrize("text, culprit", [("a 0\nvideo 2\n", "line 2: index 2 where 1"), ("a video of\n", "line 1")])
def test_a_malformed_word_list_is_refused_with_its_line(tmp_path, text, culprit):
    path = tmp_path / "words.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=culprit):
        read_word_list(path)


def test_cmlm_masks_prompts_with_the_releases_word_and_index_file(tmp_path):
    words = sorted({w for n in NAMES for w in f"a video of {n}".split()} | {"name"})
    path = tmp_path / "words.txt"
    path.write_text("".join(f"{word} {i}\n" for i, word in enumerate(words)))
    model = build_m2clip(tiny_clip(), NAMES, ted_width=16, text_width=16, word_list=str(path)).train()
    head = model.decoder.heads["cmlm"]
    assert head.vocabulary == words
    tokens, labels = head.mask(["a video of brush hair"] * 4, model.text, [torch.Generator().manual_seed(i) for i in range(4)])
    picked = {words[i] for i in labels[labels >= 0].tolist()}
    assert picked and picked <= {"a", "video", "of", "brush", "hair"}
    assert torch.isfinite(model(video(), torch.tensor([0, 2]))["loss"])


def plain_open_clip(tiny: dict):
    """open_clip's own CLIP with the quickstart's family-neutral sizes, written out by hand."""
    return open_clip.CLIP(
        embed_dim=tiny["embed_dim"],
        vision_cfg=dict(image_size=tiny["image_size"], patch_size=tiny["patch_size"], width=tiny["width"],
                        layers=tiny["layers"], head_width=tiny["width"] // tiny["heads"]),
        text_cfg=dict(context_length=tiny["context_length"], vocab_size=tiny["vocab_size"], width=tiny["text_width"],
                      layers=tiny["text_layers"], heads=tiny["text_heads"]),
    )
