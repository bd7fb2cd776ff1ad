"""The text path on every open_clip text tower: pooling (argmax, eos, last, CoCa's class
embedding), causal or not, and tokenizers whose special ids are not CLIP's; checked against the
model's own ``encode_text``."""

from __future__ import annotations

import copy

import pytest
import torch
from test_video_clip import assert_fast_text_path_is_exact, randomize_

import clipadapt
from clipadapt.backbones.tokenizers import load_tokenizer
from clipadapt.heads.cmlm import IGNORE, MASK_WORD
from clipadapt.models import TextPath, build_m2clip, build_video_clip

WORDS = ["a", "video", "of", "archery", "abseiling", "surfing", "mask", "the", "person", "is"]
CLASSNAMES = ["archery", "abseiling", "surfing"]


def small_open_clip(name: str, vocab_size: int | None = None):
    """open_clip's config `name` with 2 narrow blocks per tower and random weights (timm trunks
    built without pretrained weights); a vocabulary of `vocab_size` ids where it is not BPE's."""
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config(name))
    cfg["embed_dim"] = 32
    cfg["vision_cfg"].update(layers=2, width=64, image_size=32, patch_size=8, head_width=32)
    if "timm_model_name" in cfg["vision_cfg"]:
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    text = cfg["text_cfg"]
    text.update(layers=2, width=32, heads=2, context_length=min(text.get("context_length", 77), 16))
    if text.get("vocab_size", 49408) != 49408:
        text["vocab_size"] = vocab_size or 64
    kind = open_clip.CLIP
    if "multimodal_cfg" in cfg:
        cfg["multimodal_cfg"].update(layers=1, width=32, heads=2, context_length=text["context_length"])
        kind = open_clip.CoCa
    elif cfg.pop("custom_text", False):
        kind = open_clip.CustomTextCLIP
    cfg.pop("custom_text", None)
    torch.manual_seed(0)
    return kind(**cfg).eval()


def word_level_tokenizer(tmp_path, template: str, specials: list[str], pad: str, name: str = "tokenizer.json") -> str:
    """A word-level ``tokenizer.json`` built here (no download): `specials` first, then `WORDS`;
    `template` is its post-processor (e.g. ``"<s> $A </s>"``), `pad` its padding token."""
    from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers, processors

    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    in_template = [t for t in template.split() if t in vocab]
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(t, vocab[t]) for t in in_template])
    tok.enable_padding(pad_id=vocab[pad], pad_token=pad)
    path = tmp_path / name
    tok.save(str(path))
    return str(path)


# SigLIP-like: no start token, </s> ends the text and pads it too (id 1, below every word's id)
SIGLIP_LIKE = dict(template="$A </s>", specials=["<unk>", "</s>"], pad="</s>")
# XLM-R-like (MetaCLIP 2 worldwide): <s>=0 and </s>=2 around the words, <pad>=1
XLMR_LIKE = dict(template="<s> $A </s>", specials=["<s>", "<pad>", "</s>", "<unk>"], pad="<pad>")

TOWERS = {
    # name: (pool, causal, tokenizer or None for OpenAI's BPE)
    "ViT-B-16": ("argmax", True, None),
    "coca_ViT-B-32": ("cls", True, None),
    "coca_ViT-L-14": ("cls", True, None),
    "ViT-L-14-CLIPA": ("last", False, SIGLIP_LIKE),
    "ViT-H-14-worldwide": ("eos", True, XLMR_LIKE),
    "ViT-bigG-14-worldwide": ("eos", True, XLMR_LIKE),
    "ViT-B-16-SigLIP": ("last", False, SIGLIP_LIKE),
    "MobileCLIP2-S0": ("argmax", False, None),
}


def tokenizer_for(tmp_path, name: str):
    spec = TOWERS[name][2]
    return None if spec is None else word_level_tokenizer(tmp_path, **spec)


@pytest.mark.parametrize("name", TOWERS)
def test_text_path_equals_the_models_own_encode_text(name, tmp_path):
    pool, causal, _ = TOWERS[name]
    clip = small_open_clip(name).double()  # in float64, what is left of any difference is rounding
    text = TextPath(clip, tokenizer=tokenizer_for(tmp_path, name))
    assert (text.encoder.pool, text.encoder.causal) == (pool, causal)
    tokens = text.tokenize(["a video of archery", "the person is surfing", "a"])
    ours = text.encode(tokens, normalize=False)
    torch.testing.assert_close(ours, clip.encode_text(tokens.ids, normalize=False), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["coca_ViT-B-32", "ViT-L-14-CLIPA", "ViT-H-14-worldwide"])
def test_fast_text_path_is_exact_with_a_text_adapter_on_every_pooling(name, tmp_path):
    clip = small_open_clip(name)
    text_adapter = {"name": "bottleneck", "tower": "text", "layers": [-1], "options": {"width": 8, "init": "default"}}
    model = build_video_clip(clip, CLASSNAMES * 2, adapters=[text_adapter], heads=[{"name": "cmc"}],
                             tokenizer=tokenizer_for(tmp_path, name))
    for _, _, module in clipadapt.injections(model)[0].modules:
        randomize_(module, std=0.1)
    cut = model.text.encoder.causal and model.text.encoder.pool != "cls"
    assert_fast_text_path_is_exact(model, expect_first_trainable=1, expect_cut=cut)


@pytest.mark.parametrize("name", ["coca_ViT-B-32", "coca_ViT-L-14", "ViT-L-14-CLIPA", "ViT-H-14-worldwide"])
def test_m2clip_builds_and_trains_on_the_tower(name, tmp_path):
    # (SigLIP's visual tower is a timm trunk; its text tower is covered by the tests above)
    model = build_m2clip(small_open_clip(name), CLASSNAMES, ted_width=8, text_width=8, pooling="mean",
                         tokenizer=tokenizer_for(tmp_path, name)).train()
    out = model(torch.randn(3, 2, 3, 32, 32), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    out["loss"].backward()
    assert set(out["losses"]) == {"contrastive", "cmc", "cmlm", "vc"} and torch.isfinite(out["loss"])
    text_adapters = [p for n, p in model.named_parameters() if p.requires_grad and "adapters" in n and "visual" not in n]
    assert text_adapters and all(p.grad is not None and p.grad.abs().sum() > 0 for p in text_adapters)


def test_coca_vc_head_reads_the_class_token_through_the_attention_pools_norm():
    # the cause of CoCa's LayerNorm shape error: its ln_post normalises the attention-pooled
    # queries (embedding width), not the last block's class token (tower width)
    clip = small_open_clip("coca_ViT-B-32")
    model = build_video_clip(clip, CLASSNAMES, heads=[{"name": "vc"}])
    assert clip.visual.ln_post.normalized_shape[0] != model.visual_width
    assert model.visual.final_norm is clip.visual.attn_pool.ln_k
    assert model.eval()(torch.randn(2, 2, 3, 32, 32))["vc"].shape == (2, 3)


# ---- tokenizers ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [SIGLIP_LIKE, XLMR_LIKE, dict(template="[CLS] $A [SEP]", specials=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<unk>"], pad="[PAD]")],
                         ids=["siglip-like", "xlmr-like", "bert-like"])
def test_a_local_tokenizer_file_writes_the_ids_its_own_library_writes(layout, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    path = word_level_tokenizer(tmp_path, **layout)
    ours = load_tokenizer(path, 8)
    library = HFTokenizer.from_file(path)  # the tokenizers library itself, padded by hand
    for prompt in ["a video of archery", "a", "the person is surfing a video of archery"]:
        ids = library.encode(prompt).ids
        ids = ids[: 8] if len(ids) <= 8 else ids[: 8 - 1] + ids[-1:]  # truncation keeps the last special id
        expected = ids + [library.token_to_id(layout["pad"])] * (8 - len(ids))
        assert ours([prompt])[0].tolist() == expected
        words = [ours.encode(word) for word in prompt.split()]
        assert ours.from_words([words])[0].tolist() == expected  # word by word, the same ids


def test_special_ids_are_read_from_the_tokenizer_not_assumed(tmp_path):
    siglip_like = load_tokenizer(word_level_tokenizer(tmp_path, **SIGLIP_LIKE), 8)
    xlmr_like = load_tokenizer(word_level_tokenizer(tmp_path, **XLMR_LIKE, name="x.json"), 8)
    bpe = load_tokenizer(None, 8)
    assert (siglip_like.prefix, siglip_like.suffix, siglip_like.pad_id) == ((), (1,), 1)  # no start token; pads with its end token
    assert (xlmr_like.prefix, xlmr_like.suffix, xlmr_like.pad_id) == ((0,), (2,), 1)
    assert (bpe.prefix, bpe.suffix, bpe.pad_id) == ((49406,), (49407,), 0)


def test_eos_pooling_reads_the_eos_id_even_when_it_is_not_the_highest(tmp_path):
    clip = small_open_clip("ViT-H-14-worldwide")
    text = TextPath(clip, tokenizer=tokenizer_for(tmp_path, "ViT-H-14-worldwide"))
    tokens = text.tokenize(["a video of archery", "a"])
    assert text.encoder.eos_id == 2 and int(tokens.ids.max()) > 2
    assert tokens.pool.tolist() == [5, 2]  # <s> a video of archery </s>; <s> a </s>
    assert tokens.length == 6  # cut after the longest prompt: the causal mask makes that exact


def test_a_tower_without_a_known_tokenizer_says_what_to_give():
    text = TextPath(small_open_clip("ViT-B-16-SigLIP"))
    with pytest.raises(ValueError, match="pools by 'last'.*model.tokenizer"):
        text.tokenize(["a video of archery"])


def test_a_model_tokenizer_absent_offline_is_one_line_naming_it(tmp_path):
    """In a fresh process whose Hugging Face cache is an empty folder, offline: the tokenizer is
    absent whatever this machine's own cache holds."""
    import os
    import subprocess
    import sys

    from hang_guard import HANG_GUARD_S

    script = ("from clipadapt.backbones.tokenizers import load_tokenizer\n"
              "try:\n    load_tokenizer('ViT-B-16-SigLIP', 64)\nexcept ValueError as error:\n    print(error)\n"
              "else:\n    print('LOADED')\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout.strip()
    assert "\n" not in message and "timm/ViT-B-16-SigLIP" in message and "tokenizer.json" in message, message


def test_a_missing_tokenizer_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope.json"), 16)
    with pytest.raises(FileNotFoundError, match="without tokenizer.json"):
        load_tokenizer(str(tmp_path), 16)


@pytest.mark.parametrize("name", ["ViT-B-16", "ViT-L-14-CLIPA", "ViT-H-14-worldwide"])
def test_cmlm_labels_sit_on_the_mask_tokens_whatever_the_special_ids(name, tmp_path):
    clip = small_open_clip(name)
    model = build_video_clip(clip, CLASSNAMES, heads=[{"name": "cmlm", "options": {"adapter_width": 8}}],
                             tokenizer=tokenizer_for(tmp_path, name))
    head = model.decoder.heads["cmlm"]
    prompts = ["a video of archery", "a video of surfing"] * 4
    tokens, labels = head.mask(prompts, model.text, [torch.Generator().manual_seed(i) for i in range(8)])
    mask_id = model.text.encode_word(MASK_WORD)[0]
    labelled = labels != IGNORE
    assert labelled.any()
    assert (tokens.ids[labelled] == mask_id).all() and (tokens.ids[~labelled] != mask_id).all()
    for row, prompt in enumerate(prompts):  # each label is the masked word itself
        words = prompt.split()
        masked = [head.vocabulary[i] for i in labels[row][labelled[row]].tolist()]
        assert all(word in words for word in masked)



def test_a_recipes_model_tokenizer_reaches_the_text_path(tmp_path):
    from clipadapt.models import build_from_recipe
    from clipadapt.recipes import load_recipe

    path = word_level_tokenizer(tmp_path, **XLMR_LIKE)
    model = build_from_recipe(load_recipe("quickstart", [f"model.tokenizer={path}"]), ["archery", "surfing"])
    assert model.text.tokenizer.name == path
    assert model.text.tokenize(["a video of archery"]).ids[0, :6].tolist() == [0, 4, 5, 6, 7, 2]
