"""Every config of ``open_clip.list_models()`` built small and put through clipadapt, or refused.

For each config: `small_open_clip` (2 blocks, width 64, a 4x4 patch grid, random weights,
offline), then TED in every visual block and a bottleneck in the last text block (where the model
has a transformer text tower) -> identity at init (image and text outputs ``torch.equal`` to the
plain model) -> one SGD step (only adapter parameters change, the outputs do) -> save/load into
a fresh copy (the same outputs) -> eject (the original keys and outputs, bit for bit); then
M2-CLIP's video model (TED, the text adapter, the temporal pooling adapter and the contrastive,
CMC, CMLM and VC heads; a word-level tokenizer where the tower's own is not at hand) built on a
fresh copy and trained one step. A config is either
``supported`` or refused with the one-line message of an expected exception; a law that fails
is an ``AssertionError`` (a bug, never a row).

    python benchmarks/supported_clips.py                                  # the table on stdout
    python benchmarks/supported_clips.py --markdown docs/supported_clips.md   # regenerate the page

The docs page is checked against this script by tests/test_supported_clips.py.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn as nn

import clipadapt
from clipadapt.backbones import detect, get_tower
from clipadapt.backbones.base import UnsupportedModelError
from clipadapt.backbones.tokenizers import Tokenizer
from clipadapt.heads.cmlm import MASK_WORD
from clipadapt.models.video_clip import DEFAULT_TEMPLATES
from clipadapt.backbones.shrink import small_open_clip
from clipadapt.inject import is_adapter_param
from clipadapt.models.m2clip import build_m2clip

# what clipadapt raises when it refuses a model or an injection; anything else is a bug
REFUSALS = (UnsupportedModelError, ValueError)
FRAMES, VIDEOS, WIDTH = 2, 2, 16
CLASSNAMES = ("archery", "abseiling")
# timm modules whose models are not transformers of patch tokens (the refused kinds)
TIMM_KINDS = {"convnext": "ConvNeXt", "fastvit": "FastViT", "swin_transformer": "Swin",
              "vision_transformer": "ViT", "eva": "Eva", "vitamin": "ViTamin (hybrid ViT)",
              "vision_transformer_relpos": "ViT, relative position", "vision_transformer_hybrid": "hybrid ViT"}
NOT_TRANSFORMERS = ("ConvNeXt", "FastViT", "Swin", "ModifiedResNet")


@dataclass(frozen=True)
class Row:
    """One config's line of the table."""

    config: str
    visual: str  # the kind of visual tower, read from the config
    text: str  # the kind of text tower, read from the config
    adapters: str  # "supported" or "refused: <one line>"
    video: str  # M2-CLIP's video model: "supported", "refused: <one line>" or "-" (no adapters)

    def markdown(self) -> str:
        return f"| `{self.config}` | {self.visual} | {self.text} | {self.adapters} | {self.video} |"


def visual_kind(config: dict) -> str:
    """The visual tower's kind as the open_clip config declares it."""
    vision = config["vision_cfg"]
    if vision.get("timm_model_name"):
        import timm

        module = timm.models.model_entrypoint(vision["timm_model_name"]).__module__.rsplit(".", 1)[-1]
        return f"timm {TIMM_KINDS.get(module, module)}"
    if isinstance(vision.get("layers"), (list, tuple)):
        return "ModifiedResNet"
    pool = " + attention pool" if vision.get("attentional_pool") or "attn_pooler_heads" in vision else ""
    return f"open_clip ViT{pool}"


def text_kind(config: dict) -> str:
    """The text tower's kind as the open_clip config declares it (pooling, mask, decoder)."""
    text = config.get("text_cfg", {})
    if text.get("hf_model_name"):
        return f"Hugging Face `{text['hf_model_name']}`"
    pool = text.get("pool_type", "argmax") + (" after a class embedding" if text.get("embed_cls") else "")
    mask = "no mask" if text.get("no_causal_mask") else "causal"
    decoder = " + multimodal decoder" if "multimodal_cfg" in config else ""
    return f"open_clip transformer ({pool}, {mask}){decoder}"


def refusal(error: Exception) -> str:
    """The table cell of an expected refusal: its type and its one-line message."""
    message = str(error)
    assert "\n" not in message, f"a refusal must be one line: {type(error).__name__}: {message!r}"
    return f"refused: {type(error).__name__}: {message}".replace("|", "\\|")


def encode(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Image embeddings of `images` (video-major, FRAMES per video) and text embeddings of `tokens`."""
    with clipadapt.frames(model, FRAMES):
        image = model.encode_image(images)
    return (image,) if tokens is None else (image, model.encode_text(tokens))


def equal(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def inputs(model: nn.Module, has_text: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(1)
    size = get_tower(model, "visual").image_size
    images = torch.randn(VIDEOS * FRAMES, 3, size, size, generator=generator)
    if not has_text:
        return images, None
    text = getattr(model, "text", model)  # CustomTextCLIP and CoCa hold a TextTransformer, CLIP its parts
    vocab, context = text.vocab_size, text.context_length
    return images, torch.randint(1, vocab, (2, context), generator=generator)


def check_adapters(plain: nn.Module, tmp: Path) -> str | None:
    """Inject -> identity -> one step -> save/load -> eject on a copy of `plain`; the refusal of its
    text tower where it has none that takes adapters (visual adapters only), else None. Raises a
    refusal, or AssertionError."""
    try:
        get_tower(plain, "text")
        text_refused = None
    except REFUSALS as error:
        text_refused = str(error)
    has_text = text_refused is None
    images, tokens = inputs(plain, has_text)
    model = copy.deepcopy(plain)
    keys = list(model.state_dict())
    with torch.no_grad():
        before = encode(plain, images, tokens)
    clipadapt.inject(model, "ted", tower="visual", layers="all", site="pre_mlp", width=WIDTH)
    if has_text:
        clipadapt.inject(model, "bottleneck", tower="text", layers=[-1], site="pre_mlp", width=WIDTH)
    with torch.no_grad():
        assert equal(encode(model, images, tokens), before), "a fresh adapter changed the output"

    frozen = {name: value.clone() for name, value in model.state_dict().items() if not is_adapter_param(name)}
    trainable = [p for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter_param(n) for n, p in model.named_parameters() if p.requires_grad)
    generator = torch.Generator().manual_seed(2)
    outputs = encode(model, images, tokens)
    loss = sum((1 - torch.cosine_similarity(out, torch.randn(out.shape, generator=generator))).mean() for out in outputs)
    loss.backward()
    torch.optim.SGD(trainable, lr=0.5).step()
    with torch.no_grad():
        after = encode(model, images, tokens)
    assert all(not torch.equal(a, b) for a, b in zip(after, before)), "one training step left an output unchanged"
    # exact, NaN equal to NaN (CoCa leaves its decoder's unused text_projection uninitialised)
    changed = [n for n, v in model.state_dict().items()
               if n in frozen and not torch.allclose(v, frozen[n], rtol=0, atol=0, equal_nan=True)]
    assert not changed, f"one training step changed frozen parameters: {changed[:3]}"

    clipadapt.save_adapters(model, tmp / "adapters.safetensors")
    reloaded = clipadapt.load_adapters(copy.deepcopy(plain), tmp / "adapters.safetensors")
    with torch.no_grad():
        assert equal(encode(reloaded, images, tokens), after), "the reloaded adapters give other outputs"

    clipadapt.eject(model)
    assert list(model.state_dict()) == keys, "eject left other keys than the plain model's"
    with torch.no_grad():
        assert equal(encode(model, images, tokens), before), "eject did not restore the outputs"
    return text_refused


def word_tokenizer(encoder) -> Tokenizer:
    """A word-level tokenizer of the sweep's prompts for a text tower whose own tokenizer is not on
    the machine (SigLIP's, CLIPA's, XLM-R's): what a recipe's ``model.tokenizer`` gives. Ids:
    padding, start, the tower's end-of-text (`encoder.eos_id`, else 2), unknown, then the words."""
    specials = list(dict.fromkeys([0, 1, encoder.eos_id if encoder.eos_id is not None else 2]))
    pad, start, end = specials[0], specials[1], specials[-1]
    unknown = max(specials) + 1
    words = sorted({w for text in (*CLASSNAMES, *DEFAULT_TEMPLATES, MASK_WORD) for w in text.replace("{}", " ").split()})
    vocabulary = {word: unknown + 1 + index for index, word in enumerate(words)}
    context = encoder.context_length

    def encode_word(word: str) -> list[int]:
        return [vocabulary.get(word, unknown)]

    def to_ids(prompts: list[str]) -> torch.Tensor:
        ids = torch.full((len(prompts), context), pad, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens = [start, *(vocabulary.get(w, unknown) for w in prompt.split())][: context - 1] + [end]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids

    return Tokenizer("the sweep's word-level tokenizer", context, to_ids, encode_word)


def check_video_model(plain: nn.Module) -> None:
    """M2-CLIP's video model (all four heads) on a copy of `plain`, built and trained one step."""
    encoder = detect(plain).text(plain)
    tokenizer = None if encoder.tokenizer is not None else word_tokenizer(encoder)
    model = build_m2clip(copy.deepcopy(plain), list(CLASSNAMES), ted_width=WIDTH, text_width=WIDTH, tokenizer=tokenizer)
    model.train()
    size = get_tower(model.clip, "visual").image_size
    video = torch.randn(VIDEOS, FRAMES, 3, size, size, generator=torch.Generator().manual_seed(3))
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    loss = model(video, torch.arange(VIDEOS) % len(CLASSNAMES))["loss"]
    assert torch.isfinite(loss), f"the M2-CLIP loss is {loss.item()}"
    loss.backward()
    torch.optim.SGD(trainable, lr=0.5).step()
    assert any(not torch.equal(p, b) for p, b in zip(trainable, before)), "one M2-CLIP step changed nothing"


def sweep_row(arch: str) -> Row:
    """`arch` built small and put through every step, or refused (the row says which).

    Example:
        >>> sweep_row("ViT-B-16").adapters
        'supported'
    """
    import open_clip

    config = open_clip.get_model_config(arch)
    visual, text = visual_kind(config), text_kind(config)
    torch.manual_seed(0)
    try:
        plain = clipadapt.freeze(small_open_clip(arch))  # frozen as inject leaves it: the same attention path
    except REFUSALS as error:
        return Row(arch, visual, text, refusal(error), "-")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            text_refused = check_adapters(plain, Path(tmp))
    except REFUSALS as error:
        return Row(arch, visual, text, refusal(error), "-")
    try:
        check_video_model(plain)
        video = "supported"
    except REFUSALS as error:
        video = refusal(error)
    if text_refused is not None:
        cell = f"supported in the visual tower; text adapters refused: {text_refused}".replace("|", "\\|")
        return Row(arch, visual, text, cell, video)
    return Row(arch, visual, text, "supported", video)


HEADER = """# Supported CLIPs

Every config of `open_clip.list_models()` (open_clip {version}, {count} configs), built small (2
blocks, width 64, a 4x4 patch grid, random weights, offline) and put through clipadapt:

- **adapters**: TED in every visual block and a bottleneck in the last text block (where the text
  tower is a transformer) → identity at init (image and text outputs `torch.equal` to the plain
  model) → one training step (only adapter parameters change) → save/load (the same outputs) →
  eject (the original keys and outputs, bit for bit);
- **M2-CLIP video model**: `clipadapt.models.m2clip.build_m2clip` (TED, the text adapter, temporal pooling and
  the contrastive, CMC, CMLM and VC heads) built and trained one step. A text tower that does not
  pool at BPE's end-of-text (SigLIP, CLIPA: `last`; MetaCLIP 2 worldwide: `eos`) is given a
  word-level tokenizer of the prompts built here, as a recipe's `model.tokenizer` would give its
  own (nothing is downloaded).

A text tower that is a Hugging Face model (RoBERTa, XLM-R, mT5, NLLB) is built as a random model of
its type at the same small sizes (`clipadapt.backbones.shrink.small_hf_text_config`; its real
config is not needed). Its layers are not pre-norm CLIP blocks, so text adapters and the text
path (and with them the M2-CLIP video model) are refused in one line, while the visual tower takes
every adapter.

A config is either supported or refused with the one-line message clipadapt gives.
The table is generated, and the suite checks that this page equals what it produces now:

```
python benchmarks/supported_clips.py --markdown docs/supported_clips.md
```

It runs in tests/test_supported_clips.py, one test per config.
"""

FAMILIES = """
## Hugging Face and timm

Beyond open_clip's configs, clipadapt covers (tests/test_hf_families.py, tests/test_timm_trunks.py,
tests/test_families.py):

- **Hugging Face**: `CLIPModel`, `CLIPVisionModel`, `CLIPTextModel`; `SiglipModel`,
  `Siglip2Model` and `SiglipVisionModel` (the visual tower fully, with SigLIP's attention-pool
  head); `ChineseCLIPModel` and `AltCLIPModel` (the visual tower fully; their text towers are
  post-norm BERT / XLM-R blocks, where text adapters are refused in one line: see
  [Add a model family](add_family.md)).
- **timm**: `VisionTransformer` (class token or none, register tokens, attention-pool `map` head,
  fused qkv; e.g. `vit_base_patch16_siglip_224`, `vit_so150m_patch16_reg4_map_256`) and `Eva`
  (EVA01/EVA02, PE-Core: rotary embeddings, SwiGLU, layer scale, the post-norm variant; e.g.
  `eva02_base_patch14_224`, `vit_pe_core_base_patch16_224`), visual tower only. Other timm
  architectures (ConvNeXt, FastViT, Swin, ...) are refused in one line naming the kind.
- **OpenAI `clip`**: the ViT models (sequence-first blocks); its ModifiedResNet models are refused.

Where an adapter cannot be exact on a layout it refuses naming the reason: AIM's temporal part
re-runs the block's attention on temporal tokens, which is not exact on rotary (RoPE) or
relative-position attention; `mlp_parallel` needs a pre-norm MLP (not EVA02-E's post-norm blocks).
"""


def markdown(rows: list[Row]) -> str:
    """The docs page of `rows`: the header, counts, the table and the families' coverage."""
    import open_clip

    supported = sum(row.adapters.startswith("supported") for row in rows)
    visual_only = sum(row.adapters.startswith("supported in the visual tower") for row in rows)
    video = sum(row.video == "supported" for row in rows)
    lines = [HEADER.format(version=open_clip.__version__, count=len(rows)),
             f"**{supported} of {len(rows)} configs take adapters ({visual_only} of them in the visual tower only: "
             f"their text tower is a Hugging Face model); the M2-CLIP video model builds and trains on {video}: "
             "every one that takes adapters and whose text tower is open_clip's transformer.**\n",
             "| config | visual tower | text tower | adapters | M2-CLIP video model |",
             "|---|---|---|---|---|",
             *(row.markdown() for row in rows)]
    return "\n".join(lines) + "\n" + FAMILIES


def all_configs() -> list[str]:
    import open_clip

    return list(open_clip.list_models())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", type=Path, help="write the docs page here")
    parser.add_argument("configs", nargs="*", help="only these configs (default: all)")
    args = parser.parse_args()
    rows = [sweep_row(arch) for arch in args.configs or all_configs()]
    page = markdown(rows)
    if args.markdown:
        args.markdown.write_text(page)
        print(f"wrote {args.markdown} ({len(rows)} configs)")
    else:
        print(page)


if __name__ == "__main__":
    main()
