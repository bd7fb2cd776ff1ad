"""The text path of a CLIP of any family: its text tower run in pieces, exact and cheap.

The family's `clipadapt.backbones.TextEncoder` says how to tokenise, embed, run blocks and
project; this module composes those pieces:

- the blocks before the first one with something trainable compute the same states at every
  step for fixed prompts, so they run once, without gradient, and are cached;
- under a causal mask, tokens after the longest prompt's last token never influence the tokens
  up to it, so the sequence is cut there (without one, or with an appended class embedding,
  the whole context runs);
- pooled embeddings read one state of the last block per prompt (where the tower pools:
  end-of-text, ``eos``, first, last, or the class embedding), whose MLP branch acts on each
  token alone, so that branch runs on the pooled tokens only (the attention before it still
  sees every token). This holds while the last block's adapters sit on the residual stream
  before the MLP (``pre_attn``, ``attn_out``, ``pre_mlp``); otherwise the whole block runs.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.backbones import TextEncoder, TokenizedPrompts, detect
from clipadapt.backbones.tokenizers import Tokenizer, load_tokenizer
from clipadapt.inject import injections
from clipadapt.sets import active_sets

# adapter sites that leave the last block's MLP branch acting on each token alone
_BEFORE_MLP = ("pre_attn", "attn_out", "pre_mlp")


class TextPath:
    """Tokenise and encode text with the text tower of a CLIP of any family.

    ``encode(tokens)`` equals the CLIP's own text encoder; ``encode(tokens, cache_prefix=True)``
    computes the same values while running frozen leading blocks once without gradient. It is
    also the text service heads receive (`clipadapt.heads.TextService`).

    Args:
        tokenizer: the tower's tokenizer when its spec does not know it (SigLIP's, CLIPA's): a
            `Tokenizer`, a ``tokenizer.json`` path or a directory holding one, an open_clip model
            name, or ``bpe`` (`clipadapt.backbones.tokenizers.load_tokenizer`).

    Example:
        >>> text = TextPath(clip)
        >>> emb = text.encode(text.tokenize(["a video of archery"]))   # (1, 512)
        >>> siglip_text = TextPath(siglip, tokenizer="tokenizer.json")
    """

    def __init__(self, clip: nn.Module, encoder: TextEncoder | None = None, tokenizer: str | Tokenizer | None = None):
        self.clip = clip
        self.encoder = encoder or detect(clip).text(clip)
        self.tower = self.encoder.tower
        self.context_length = self.encoder.context_length
        if tokenizer is not None:
            self.encoder.set_tokenizer(load_tokenizer(tokenizer, self.context_length))
        self._prefix_cache: tuple | None = None  # (tokens, (start, dtype, device, length, active sets), (states, mask))

    # ---- tokens and pieces, as the family's encoder has them ------------------------------

    def tokenize(self, prompts: list[str], device: torch.device | None = None) -> TokenizedPrompts:
        return self._checked(self.encoder.tokenize(prompts, device))

    def tokens_from_words(self, word_ids: list[list[list[int]]], device=None) -> TokenizedPrompts:
        """Prompts given as lists of words, each word a list of ids; no re-tokenising."""
        return self._checked(self.encoder.tokens_from_words(word_ids, device))

    def _checked(self, tokens: TokenizedPrompts) -> TokenizedPrompts:
        vocabulary = self.encoder.frozen_inputs()[0].shape[0]
        if int(tokens.ids.max()) >= vocabulary:
            raise ValueError(f"the text tower has a vocabulary of {vocabulary} ids; its prompts are tokenised with "
                             f"{self.tokenizer.name}, which wrote id {int(tokens.ids.max())}: give the tower's own "
                             "tokenizer (model.tokenizer) or build the tower with that tokenizer's vocabulary")
        return tokens

    @property
    def tokenizer(self) -> Tokenizer:
        """The tower's `Tokenizer` (a one-line error when none is known)."""
        return self.encoder.require_tokenizer()

    def encode_word(self, word: str) -> list[int]:
        return self.encoder.encode_word(word)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.dtype

    @property
    def embed_dim(self) -> int:
        """Width of the joint embedding space."""
        return self.encoder.embed_dim

    @property
    def width(self) -> int:
        return self.tower.width

    @property
    def ln_final(self) -> nn.Module:
        return self.encoder.ln_final

    def last_block(self):
        """The last text block (a `clipadapt.backbones.Block`), e.g. for a head's frozen copy."""
        return self.tower.blocks[-1]

    def make_block(self, module: nn.Module):
        """A module laid out as this tower's blocks (a copy of one) as a `Block`."""
        return self.tower.make_block(module)

    def frozen_inputs(self) -> list[torch.Tensor]:
        return self.encoder.frozen_inputs()

    def parameters(self):
        """Every parameter of the text path."""
        return self.encoder.parameters()

    def embed_and_mask(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.encoder.embed_and_mask(ids)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:  # a family whose blocks build their own mask
            return self.encoder.run_blocks(x, start, stop)
        return self.encoder.run_blocks(x, start, stop, mask=mask)

    def finish(self, states: torch.Tensor, pool: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Pooling where the tower pools, ``ln_final`` and the projection."""
        x = self.ln_final(states[torch.arange(states.shape[0], device=states.device), pool])  # per token: pool first
        x = self.encoder.project(x)
        return F.normalize(x, dim=-1) if normalize else x

    def first_trainable_block(self) -> int:
        """Index of the first text block with a trainable parameter (or the block count)."""
        if any(p.requires_grad for p in self.frozen_inputs()):
            return 0
        for index, block in enumerate(self.tower.blocks):
            if any(p.requires_grad for p in block.module.parameters()):
                return index
        return len(self.tower.blocks)

    def token_states(
        self, tokens: TokenizedPrompts, cache_prefix: bool = False, truncate: bool = True, pooled_only: bool = False
    ) -> torch.Tensor:
        """States of the prompt tokens after the last block, before ``ln_final``: ``(N, L', W)``.

        With `truncate`, ``L'`` is ``tokens.length`` (the longest prompt's, where the mask makes
        that exact), not the context length. A class embedding the tower appends is not among
        them (see `states`). `cache_prefix` and `pooled_only` as in `states`.
        """
        ids_length = tokens.length if truncate else tokens.ids.shape[1]
        return self.states(tokens, cache_prefix, truncate, pooled_only)[:, :ids_length]

    def states(
        self, tokens: TokenizedPrompts, cache_prefix: bool = False, truncate: bool = True, pooled_only: bool = False
    ) -> torch.Tensor:
        """Every state after the last block, before ``ln_final``, appended class embedding included.

        With `cache_prefix`, frozen leading blocks run without gradient once for this `tokens`
        object and are reused while it is passed again. With `pooled_only`, only the states at
        the pooled positions are right (the others are not computed in full); see the module
        docstring.
        """
        ids = tokens.ids[:, : tokens.length] if truncate else tokens.ids
        start = self.first_trainable_block()
        rows = self._mlp_on_rows(tokens.pool) if pooled_only and start < len(self.tower.blocks) else nullcontext()
        if start == 0:
            x, mask = self.embed_and_mask(ids)
            with rows:
                return self.run_blocks(x, mask=mask)
        if cache_prefix:
            # switching adapter sets changes the prefix
            key = (start, self.dtype, ids.device, ids.shape[1], active_sets(self.clip))
            cached = self._prefix_cache
            if cached is None or cached[0] is not tokens or cached[1] != key:
                cached = (tokens, key, self._frozen_prefix(ids, start))
                self._prefix_cache = cached
            prefix, mask = cached[2]
        else:
            prefix, mask = self._frozen_prefix(ids, start)
        with rows:
            return self.run_blocks(prefix, start, mask=mask)

    def _frozen_prefix(self, ids: torch.Tensor, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """States after the frozen blocks ``0..stop-1``, without gradient, and the mask."""
        with torch.no_grad():
            x, mask = self.embed_and_mask(ids)
            return self.run_blocks(x, 0, stop, mask=mask), mask

    def _last_block_mlp_is_per_token(self) -> bool:
        last = len(self.tower.blocks) - 1
        return all(
            site in _BEFORE_MLP
            for injection in injections(self.clip)
            if injection.tower == "text"
            for layer, site, _ in injection.modules
            if layer == last
        )

    @contextmanager
    def _mlp_on_rows(self, pool: torch.Tensor):
        """While active, the last block's MLP branch (from its second norm on) sees only the
        pooled token of each sequence; the block's residual add broadcasts it back."""
        if not self._last_block_mlp_is_per_token():
            yield
            return
        batch = torch.arange(pool.shape[0], device=pool.device)
        seq_first = self.tower.seq_first

        def pick(module, args):
            x = args[0]
            picked = x[pool, batch].unsqueeze(0) if seq_first else x[batch, pool].unsqueeze(1)
            return (picked, *args[1:])

        handle = self.tower.blocks[-1].ln_2.register_forward_pre_hook(pick)
        try:
            yield
        finally:
            handle.remove()

    def encode(self, tokens: TokenizedPrompts, normalize: bool = True, cache_prefix: bool = False) -> torch.Tensor:
        """Text embeddings ``(N, E)``, as ``clip.encode_text`` (normalised by default)."""
        states = self.states(tokens, cache_prefix=cache_prefix, pooled_only=True)
        return self.finish(states, tokens.pool, normalize)

    def clear_cache(self) -> None:
        self._prefix_cache = None


def text_path(clip: nn.Module, tokenizer: str | Tokenizer | None = None) -> TextPath:
    """The `TextPath` of a CLIP of any family with a text tower.

    Example:
        >>> text = text_path(clip)
    """
    return TextPath(clip, tokenizer=tokenizer)
