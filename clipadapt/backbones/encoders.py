"""How a family encodes images and text: the pieces `clipadapt.VideoCLIP` composes.

A spec's ``visual(model)`` returns a `VisualEncoder`, its ``text(model)`` a `TextEncoder`. The
text encoder exposes the tower in pieces (embeddings and attention mask, blocks, final norm,
projection) and states how the tower reads its tokens, so the family-agnostic text path
(``clipadapt.models.text``) can cache frozen leading blocks, cut prompts where that is exact,
and run the last block's MLP on the pooled tokens only. What a text encoder states:

- ``pool``: where the tower reads its sentence embedding, one of `POOLS`: ``argmax`` (the
  position of the highest id: CLIP's end-of-text with OpenAI's BPE), ``eos`` (the first
  ``eos_id``: MetaCLIP 2 worldwide), ``first``, ``last`` (the last position of the context:
  SigLIP, CLIPA), ``cls`` (a class embedding appended after the context: CoCa);
- ``causal``: whether a token sees only the tokens before it (then prompts are cut after their
  last token: the states before the cut are unchanged);
- ``tokenizer``: a `clipadapt.backbones.tokenizers.Tokenizer` (OpenAI's BPE by default where the
  tower pools at ``argmax``; otherwise the one the caller gives, e.g. a recipe's
  ``model.tokenizer``), ``None`` with ``no_tokenizer`` saying what to give when unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn

from clipadapt.backbones.base import Tower, first_tensor
from clipadapt.backbones.tokenizers import Tokenizer, bpe_tokenizer

POOLS = ("argmax", "eos", "first", "last", "cls")
"""Where a text tower reads its sentence embedding (see the module docstring)."""


@dataclass
class TokenizedPrompts:
    """Token ids ``(N, L)`` of prompts, where the tower pools them and how many to run.

    Attributes:
        ids: ``(N, L)`` ids, ``L`` the tower's context.
        pool: ``(N,)`` position of each prompt's pooled state in the states the blocks produce
            (``L`` for a class embedding appended after the context).
        length: ids to run for exact results: under a causal mask, up to the longest prompt's
            last token (and pooled position); otherwise the whole context.
    """

    ids: torch.Tensor
    pool: torch.Tensor
    length: int

    def to(self, device: torch.device | str | None) -> "TokenizedPrompts":
        """The same prompts on `device`."""
        return TokenizedPrompts(self.ids.to(device), self.pool.to(device), self.length)


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
    """A family's text path in pieces. Subclasses implement `embed` (or `embed_and_mask`),
    `run_blocks`, `project`, `frozen_inputs` and `projection_parameters`, set the attributes
    below, and state ``pool``, ``causal`` and ``eos_id`` where they differ from CLIP's.

    Attributes:
        tower: the text `Tower` (its ``context_length`` set).
        ln_final: the norm after the last block (applied per token, so before or after pooling alike).
        embed_dim: E, the width of `project`'s output.
        pool / causal / eos_id: how the tower reads its tokens (module docstring).
        tokenizer: the tower's `Tokenizer`, or ``None`` (then ``no_tokenizer`` says what to give).

    Example:
        >>> encoder = clipadapt.backbones.detect(clip).text(clip)
        >>> tokens = encoder.tokenize(["a video of archery"])
        >>> encoder.encode(tokens.ids)        # (1, E), as clip.encode_text
    """

    tower: Tower
    ln_final: nn.Module
    embed_dim: int
    pool: str = "argmax"
    causal: bool = True
    eos_id: int | None = None

    def __init__(self, tower: Tower, tokenizer: Tokenizer | None = None):
        self.tower = tower
        self.context_length = int(tower.context_length)
        if self.pool not in POOLS:
            raise ValueError(f"text pooling {self.pool!r} is not one of {POOLS}")
        if self.pool == "eos" and self.eos_id is None:
            raise ValueError("a text tower pooling at 'eos' must state its eos_id")
        self.no_tokenizer = ""
        self.tokenizer = tokenizer if tokenizer is not None else self.default_tokenizer()

    # ---- tokens ---------------------------------------------------------------------------

    def default_tokenizer(self) -> Tokenizer | None:
        """OpenAI's BPE for a tower that pools at ``argmax`` (BPE's end-of-text is its highest
        id); ``None`` otherwise, with ``no_tokenizer`` saying what to give."""
        if self.pool == "argmax":
            return bpe_tokenizer(self.context_length)
        self.no_tokenizer = (f"this text tower pools by {self.pool!r} and was not trained with OpenAI's BPE as far as its "
                             "structure says: give its tokenizer (model.tokenizer: the open_clip model name, a local "
                             "tokenizer.json or a directory holding one; or TextPath(clip, tokenizer=...))")
        return None

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Use `tokenizer` (it must write `context_length` ids)."""
        if tokenizer.context_length != self.context_length:
            raise ValueError(f"tokenizer {tokenizer.name} writes {tokenizer.context_length} ids; the text tower takes {self.context_length}")
        self.tokenizer = tokenizer

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(self.no_tokenizer or "this text tower has no tokenizer; give one")
        return self.tokenizer

    def pooled_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N,)`` position of the pooled state of ids ``(N, L)``, as the tower pools."""
        rows = ids.shape[0]
        if self.pool == "argmax":
            return ids.argmax(dim=-1)
        if self.pool == "eos":  # the first eos_id (position 0 where a row has none, as open_clip)
            return (ids == self.eos_id).int().argmax(dim=-1)
        position = {"first": 0, "last": ids.shape[1] - 1, "cls": ids.shape[1]}[self.pool]
        return torch.full((rows,), position, dtype=torch.long, device=ids.device)

    def prompts(self, ids: torch.Tensor) -> TokenizedPrompts:
        """`TokenizedPrompts` of ids ``(N, L)`` written by this tower's tokenizer."""
        pool = self.pooled_positions(ids)
        length = ids.shape[1]
        if self.causal and self.pool != "cls":
            pad = self.require_tokenizer().pad_id
            not_pad = (ids != pad).long() * torch.arange(1, length + 1, device=ids.device)
            length = max(int(not_pad.max()), int(pool.max()) + 1)
        return TokenizedPrompts(ids, pool, length)

    def tokenize(self, prompts: list[str], device: torch.device | None = None) -> TokenizedPrompts:
        """Ids of `prompts` by the tower's tokenizer, padded to the context."""
        return self.prompts(self.require_tokenizer()(list(prompts))).to(device)

    def tokens_from_words(self, word_ids: list[list[list[int]]], device=None) -> TokenizedPrompts:
        """Prompts given as lists of words, each word a list of ids; no re-tokenising."""
        return self.prompts(self.require_tokenizer().from_words(word_ids)).to(device)

    def encode_word(self, word: str) -> list[int]:
        """The ids of one word, without special tokens."""
        return self.require_tokenizer().encode(word)

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

    def embed_and_mask(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The blocks' input ``(N, L', W)`` (``L' = L + 1`` with an appended class embedding) and
        the attention mask the tower builds for `ids` (``None`` where `run_blocks` builds its own)."""
        return self.embed(ids), None

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Blocks ``start..stop-1`` on batch-first states ``(N, L, W)`` under `mask` (from
        `embed_and_mask`; families whose blocks build their own mask take no `mask`)."""
        raise NotImplementedError

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The text projection of ``ln_final``'d pooled states ``(N, W) -> (N, E)``."""
        raise NotImplementedError

    def projection_parameters(self) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(N, E)`` of token ids ``(N, L)`` through the whole tower, as the model's own
        text encoder, pooled as the tower pools."""
        x, mask = self.embed_and_mask(ids)
        states = self.run_blocks(x) if mask is None else self.run_blocks(x, mask=mask)
        pooled = states[torch.arange(ids.shape[0], device=ids.device), self.pooled_positions(ids)]
        return self.project(self.ln_final(pooled))

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
