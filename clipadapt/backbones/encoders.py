"""How a family encodes images and text: the pieces `clipadapt.VideoCLIP` composes.

A spec's ``visual(model)`` returns a `VisualEncoder`, its ``text(model)`` a `TextEncoder`. The
text encoder exposes the tower in pieces (embeddings, blocks, final norm, projection) so the
family-agnostic text path (``clipadapt.models.text``) can cache frozen leading blocks and run
the last block's MLP on the end-of-text tokens only. Token ids come from OpenAI's BPE, bundled
with open_clip (never downloaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn

from clipadapt.backbones.base import Tower, first_tensor


@dataclass
class TokenizedPrompts:
    """Token ids ``(N, L)`` and the position of each prompt's end-of-text token."""

    ids: torch.Tensor
    eot: torch.Tensor

    @property
    def length(self) -> int:
        """Tokens needed to reach every prompt's end-of-text token."""
        return int(self.eot.max()) + 1


def bpe_tokenizer(context_length: int):
    """OpenAI CLIP's BPE tokenizer (open_clip's bundled vocabulary file), `context_length` tokens."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


class VisualEncoder:
    """A family's image path.

    Attributes:
        tower: the visual `Tower`.
        encode: images ``(N, 3, H, W)`` -> frame embeddings ``(N, E)`` (the model's own encoder).
        final_norm: the norm the model applies to its pooled frame feature before the
            projection: to the class token (CLIP's ``ln_post``), or after a pooling of its own
            (timm's ``fc_norm``, an identity after SigLIP's attention pool).
        embed_dim: E.
        pooled_at: for towers that do not pool by the class token (SigLIP's and PE-Core's
            attention pool, average pooling), the module whose input is the pooled frame feature
            ``(N, W)``, before `final_norm`; ``None`` where the feature is the class token of the
            last block.
    """

    def __init__(self, tower: Tower, encode: Callable[[torch.Tensor], torch.Tensor], final_norm: nn.Module,
                 embed_dim: int, pooled_at: nn.Module | None = None):
        self.tower, self.encode, self.final_norm, self.embed_dim = tower, encode, final_norm, int(embed_dim)
        self.pooled_at = pooled_at

    @property
    def has_pooled(self) -> bool:
        """Whether the tower has a pooled frame feature (a class token or a pooling of its own)."""
        return self.pooled_at is not None or self.tower.cls_index is not None

    def keep_pooled(self) -> "PooledKeeper | None":
        """Start keeping the pooled frame feature ``(N, W)`` of every forward (before
        `final_norm`); ``None`` for a tower without one. Call ``remove()`` on the keeper when done.

        Example:
            >>> keeper = visual.keep_pooled(); visual.encode(images); keeper.remove(); keeper.value.shape
            torch.Size([8, 768])
        """
        if self.pooled_at is not None:
            keeper = PooledKeeper(None, False)
            keeper.handle = self.pooled_at.register_forward_pre_hook(keeper.before_module)
        elif self.tower.cls_index is not None:
            keeper = PooledKeeper(self.tower.cls_index, self.tower.seq_first)
            keeper.handle = self.tower.blocks[-1].module.register_forward_hook(keeper.after_block)
        else:
            return None
        return keeper


@dataclass(eq=False)
class PooledKeeper:
    """Forward hooks that keep a frame's pooled feature: the class token of the last block's
    output (at `index`), or the input of the module the pooled feature goes into."""

    index: int | None
    seq_first: bool
    value: torch.Tensor | None = None
    handle: object = None

    def after_block(self, module, args, output):
        tokens = first_tensor(output)
        self.value = tokens[self.index] if self.seq_first else tokens[:, self.index]

    def before_module(self, module, args):
        self.value = args[0]

    def remove(self) -> None:
        self.handle.remove()


class TextEncoder:
    """A family's text path in pieces. Subclasses implement `embed`, `run_blocks` and `project`
    and set the attributes below.

    Attributes:
        tower: the text `Tower` (its ``context_length`` set).
        ln_final: the norm after the last block.
        embed_dim: E, the width of `project`'s output.
    """

    tower: Tower
    ln_final: nn.Module
    embed_dim: int

    def __init__(self, tower: Tower):
        self.tower = tower
        self.context_length = int(tower.context_length)
        self.tokenizer = bpe_tokenizer(self.context_length)

    # ---- tokens ---------------------------------------------------------------------------

    def tokenize(self, prompts: list[str], device: torch.device | None = None) -> TokenizedPrompts:
        """BPE ids of `prompts`, padded to the context; the end-of-text token has the highest id."""
        ids = self.tokenizer(list(prompts))
        return TokenizedPrompts(ids.to(device), ids.argmax(dim=-1).to(device))

    def tokens_from_words(self, word_ids: list[list[list[int]]], device=None) -> TokenizedPrompts:
        """Prompts given as lists of words, each word a list of BPE ids; no re-tokenising."""
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        ids = torch.zeros(len(word_ids), self.context_length, dtype=torch.long)
        for row, words in enumerate(word_ids):
            seq = [sot] + [t for word in words for t in word][: self.context_length - 2] + [eot]
            ids[row, : len(seq)] = torch.tensor(seq)
        return TokenizedPrompts(ids.to(device), ids.argmax(dim=-1).to(device))

    def encode_word(self, word: str) -> list[int]:
        return self.tokenizer.encode(word)

    # ---- the tower in pieces ---------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.frozen_inputs())).dtype

    def frozen_inputs(self) -> list[torch.Tensor]:
        """Parameters used before the first block (embeddings)."""
        raise NotImplementedError

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token plus positional embeddings ``(N, L, W)`` of ids ``(N, L)``."""
        raise NotImplementedError

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start..stop-1`` on batch-first states ``(N, L, W)``, under the causal mask."""
        raise NotImplementedError

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The text projection of ``ln_final``'d pooled states ``(N, W) -> (N, E)``."""
        raise NotImplementedError

    def projection_parameters(self) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(N, E)`` of token ids ``(N, L)`` through the whole tower, as the model's own
        text encoder (pooled at the end-of-text token, the highest id)."""
        states = self.ln_final(self.run_blocks(self.embed(ids)))
        return self.project(states[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)])

    def parameters(self) -> Iterator[torch.Tensor]:
        """Every parameter of the text path: embeddings, blocks, final norm, projection."""
        yield from self.frozen_inputs()
        for block in self.tower.blocks:
            yield from block.module.parameters()
        yield from self.ln_final.parameters()
        yield from self.projection_parameters()


def project_with(projection, pooled: torch.Tensor) -> torch.Tensor:
    """`pooled` through a projection that is an ``nn.Linear``, a ``(W, E)`` matrix or ``None``."""
    if projection is None:
        return pooled
    return projection(pooled) if isinstance(projection, nn.Module) else pooled @ projection


def parameters_of(projection) -> list[torch.Tensor]:
    if projection is None:
        return []
    return list(projection.parameters()) if isinstance(projection, nn.Module) else [projection]
