"""Small builds of named configs (open_clip's and timm's), shared by the tests that sweep them.

Every case is the named architecture with its own layout (trunk, pooling, class and register
tokens, RoPE, SwiGLU, layer scale) at 2 blocks of width 64 on a 4x4 patch grid, random weights,
built offline by `clipadapt.backbones.shrink`.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn as nn

from clipadapt.backbones import get_tower
from clipadapt.backbones.shrink import small_open_clip, small_timm

# the visual cases of "Today's CLIPs": open_clip configs and timm model names
OPEN_CLIP_CASES = ("ViT-B-16-SigLIP", "ViT-B-16-SigLIP2", "EVA02-B-16", "ViT-B-16")
TIMM_CASES = ("vit_base_patch16_siglip_224", "eva02_base_patch14_224")
CASES = tuple(f"open_clip:{name}" for name in OPEN_CLIP_CASES) + tuple(f"timm:{name}" for name in TIMM_CASES)


def build(case: str, seed: int = 0) -> nn.Module:
    """The small model of `case` (``open_clip:<config>`` or ``timm:<model name>``), in eval mode."""
    library, name = case.split(":", 1)
    torch.manual_seed(seed)
    model = small_open_clip(name) if library == "open_clip" else small_timm(name)
    return model.eval()


def encode_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Frame embeddings by the model's own image path (``encode_image``, or a timm model's forward)."""
    return model.encode_image(images) if hasattr(model, "encode_image") else model(images)


def images_for(model: nn.Module, count: int, seed: int = 1) -> torch.Tensor:
    """`count` random images at the model's native size."""
    size = get_tower(model, "visual").image_size
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))

# further layouts: PE-Core (RoPE attention, class token and attention pool), EVA01 (no RoPE, GELU
# MLP), EVA02-E (post-norm blocks), register tokens before the grid (with an attention pool; with RoPE)
LAYOUT_CASES = ("open_clip:PE-Core-B-16", "open_clip:EVA01-g-14", "open_clip:EVA02-E-14",
                "timm:vit_so150m_patch16_reg4_map_256", "timm:vit_betwixt_patch16_rope_reg4_gap_256")
ROTARY = frozenset({"open_clip:EVA02-B-16", "timm:eva02_base_patch14_224", "open_clip:PE-Core-B-16",
                    "timm:vit_betwixt_patch16_rope_reg4_gap_256"})
POST_NORM = frozenset({"open_clip:EVA02-E-14"})
