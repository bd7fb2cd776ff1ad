"""Tiny random-weight models of every supported family, built offline."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*pkg_resources.*")

import pytest
import torch

FAMILIES = ("open_clip", "openai_clip", "hf", "timm")
IMAGE, PATCH = 32, 8  # a 4x4 patch grid


def tiny_open_clip(image_size: int = IMAGE, patch_size: int = PATCH, width: int = 64, layers: int = 2):
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=image_size, patch_size=patch_size, width=width, layers=layers, head_width=32),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, layers=2, heads=2),
    ).eval()


def tiny_openai_clip():
    from clip.model import CLIP

    torch.manual_seed(0)
    return CLIP(32, IMAGE, 2, 64, PATCH, 16, 100, 32, 2, 2).eval()


def tiny_hf(real_tokens: bool = False):
    """A tiny Hugging Face CLIPModel; with `real_tokens` its text tower takes real BPE ids
    (end-of-text 49407, as OpenAI's tokenizer) in a 16-token context."""
    import transformers
    from transformers import CLIPConfig, CLIPModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    tokens = dict(vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=0) if real_tokens else \
        dict(vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16, **tokens),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE, patch_size=PATCH),
        projection_dim=32,
    )
    return CLIPModel(cfg).eval()


def tiny_timm():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=64, depth=2, num_heads=2, num_classes=0).eval()


BUILDERS = {"open_clip": tiny_open_clip, "openai_clip": tiny_openai_clip, "hf": tiny_hf, "timm": tiny_timm}


def encode(model, family: str, tower: str, inputs: torch.Tensor) -> torch.Tensor:
    """Run one tower of a tiny model of `family`; returns its token states or features."""
    if family == "hf":
        if tower == "visual":
            return model.vision_model(pixel_values=inputs).last_hidden_state
        return model.text_model(input_ids=inputs).last_hidden_state
    if family == "timm":
        return model.forward_features(inputs)
    return model.encode_image(inputs) if tower == "visual" else model.encode_text(inputs)


def towers_for(family: str) -> tuple[str, ...]:
    return ("visual",) if family == "timm" else ("visual", "text")


def tower_input(tower: str, batch: int = 4, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if tower == "visual":
        return torch.randn(batch, 3, IMAGE, IMAGE, generator=generator)
    tokens = torch.randint(2, 99, (batch, 16), generator=generator)
    tokens[:, -1] = 99  # the highest id: where open_clip/OpenAI pool (argmax)
    return tokens


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def tiny(family):
    return BUILDERS[family]()


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter of `module` small random values (adapters start as identities)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return module


def tiny_text_clip(seed: int = 0, layers: int = 2):
    """A tiny open_clip CLIP whose text tower takes real BPE ids (full vocabulary) and whose
    embedding width equals its text width (as CMLM needs)."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=IMAGE, patch_size=PATCH, width=64, layers=layers, head_width=32),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, layers=2, heads=2),
    )


CLASSNAMES = ["archery", "abseiling", "apply eye makeup", "brush hair"]

