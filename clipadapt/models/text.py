"""Text side of a CLIP, family by family: tokenising, and running the text tower in pieces.

Running in pieces makes class-prompt encoding cheap and still exact:

- the blocks before the first one with something trainable compute the same states at every
  step for fixed prompts, so they run once, without gradient, and are cached;
- under the causal mask, tokens after the longest prompt's end-of-text token never influence
  the tokens up to it, so the sequence is cut there;
- pooled embeddings read only the end-of-text token of the last block, whose MLP branch acts on
  each token alone, so that branch runs on the end-of-text tokens only (the attention before it
  still sees every token). This holds while the last block's adapters sit on the residual
  stream before the MLP (``pre_attn``, ``attn_out``, ``pre_mlp``); otherwise the whole block runs.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.backbones import Tower, detect, get_tower
from clipadapt.backbones.base import first_tensor
from clipadapt.inject import injections

# adapter sites that leave the last block's MLP branch acting on each token alone
_BEFORE_MLP = ("pre_attn", "attn_out", "pre_mlp")


def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


@dataclass
class TokenizedPrompts:
    """Token ids ``(N, L)`` and the position of each prompt's end-of-text token."""

    ids: torch.Tensor
    eot: torch.Tensor

    @property
    def length(self) -> int:
        """Tokens needed to reach every prompt's end-of-text token."""
        return int(self.eot.max()) + 1


class TextPath:
    """Tokenise and encode text with a CLIP of the open_clip or OpenAI ``clip`` family.

    ``encode(tokens)`` equals ``clip.encode_text(tokens)``; ``encode(tokens, cache_prefix=True)``
    computes the same values while running frozen leading blocks once without gradient.

    Example:
        >>> text = TextPath(clip)
        >>> emb = text.encode(text.tokenize(["a video of archery"]))   # (1, 512)
    """

    def __init__(self, clip: nn.Module):
        family = detect(clip).family
        if family not in ("open_clip", "openai_clip"):
            raise TypeError(f"TextPath supports open_clip and OpenAI clip models, not {family!r}; see text_path()")
        self.tower: Tower = get_tower(clip, "text")
        self.root = self.tower.module  # CLIP itself (text blocks on the model) or CustomTextCLIP.text
        self.clip = clip
        self.context_length = int(self.root.positional_embedding.shape[0])
        self.tokenizer = _tokenizer(self.context_length)
        self._prefix_cache: tuple | None = None  # (tokens, (start, dtype, device), states)

    # ---- tokens -------------------------------------------------------------------------

    def tokenize(self, prompts: list[str], device: torch.device | None = None) -> TokenizedPrompts:
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

    # ---- the tower in pieces ------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.root.token_embedding.weight.dtype

    @property
    def embed_dim(self) -> int:
        """Width of the joint embedding space."""
        proj = self.root.text_projection
        return proj.out_features if isinstance(proj, nn.Linear) else int(proj.shape[-1])

    @property
    def ln_final(self) -> nn.Module:
        return self.root.ln_final

    def frozen_inputs(self) -> list[torch.Tensor]:
        """Parameters used before the first block (embeddings)."""
        return [self.root.token_embedding.weight, self.root.positional_embedding]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token plus positional embeddings, ``(N, L, W)``."""
        length = ids.shape[1]
        x = self.root.token_embedding(ids).to(self.dtype)
        return x + self.root.positional_embedding[:length].to(self.dtype)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start..stop-1`` on batch-first states ``(N, L, W)`` with the causal mask."""
        blocks = self.tower.blocks[start:stop]
        length = x.shape[1]
        mask = getattr(self.root, "attn_mask", None)
        if self.tower.seq_first:
            x = x.transpose(0, 1)
        for block in blocks:
            if self.tower.seq_first:  # OpenAI blocks slice their own mask
                x = block.module(x)
            else:
                x = block.module(x, attn_mask=None if mask is None else mask[:length, :length])
        return x.transpose(0, 1) if self.tower.seq_first else x

    def finish(self, states: torch.Tensor, eot: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``ln_final``, pooling at the end-of-text token and the projection."""
        x = self.ln_final(states[torch.arange(states.shape[0], device=states.device), eot])  # per token: pool first
        proj = self.projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return F.normalize(x, dim=-1) if normalize else x

    @property
    def projection(self):
        return self.root.text_projection

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
        """States after the last block, before ``ln_final``: ``(N, L', W)``.

        With `truncate`, ``L'`` is the longest prompt's length, not the context length.
        With `cache_prefix`, frozen leading blocks run without gradient once for this `tokens`
        object and are reused while it is passed again. With `pooled_only`, only the states at
        the end-of-text tokens are right (the others are not computed in full); see the module
        docstring.
        """
        ids = tokens.ids[:, : tokens.length] if truncate else tokens.ids
        start = self.first_trainable_block()
        rows = self._mlp_on_rows(tokens.eot) if pooled_only and start < len(self.tower.blocks) else nullcontext()
        if start == 0:
            with rows:
                return self.run_blocks(self.embed(ids))
        if cache_prefix:
            key = (start, self.dtype, ids.device)
            cached = self._prefix_cache
            if cached is None or cached[0] is not tokens or cached[1] != key:
                with torch.no_grad():
                    cached = (tokens, key, self.run_blocks(self.embed(ids), 0, start))
                self._prefix_cache = cached
            prefix = cached[2]
        else:
            with torch.no_grad():
                prefix = self.run_blocks(self.embed(ids), 0, start)
        with rows:
            return self.run_blocks(prefix, start)

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
    def _mlp_on_rows(self, eot: torch.Tensor):
        """While active, the last block's MLP branch (from its second norm on) sees only the
        end-of-text token of each sequence; the block's residual add broadcasts it back."""
        if not self._last_block_mlp_is_per_token():
            yield
            return
        batch = torch.arange(eot.shape[0], device=eot.device)
        seq_first = self.tower.seq_first

        def pick(module, args):
            x = args[0]
            picked = x[eot, batch].unsqueeze(0) if seq_first else x[batch, eot].unsqueeze(1)
            return (picked, *args[1:])

        handle = self.tower.blocks[-1].ln_2.register_forward_pre_hook(pick)
        try:
            yield
        finally:
            handle.remove()

    def encode(self, tokens: TokenizedPrompts, normalize: bool = True, cache_prefix: bool = False) -> torch.Tensor:
        """Text embeddings ``(N, E)``, as ``clip.encode_text`` (normalised by default)."""
        states = self.token_states(tokens, cache_prefix=cache_prefix, pooled_only=True)
        return self.finish(states, tokens.eot, normalize)

    def clear_cache(self) -> None:
        self._prefix_cache = None


class HFTextPath(TextPath):
    """`TextPath` for Hugging Face ``CLIPModel``: embeddings, ``encoder.layers`` under an explicit
    causal mask, ``final_layer_norm``, pooling at the end-of-text token, ``text_projection``.
    Token ids come from the same BPE tokenizer as OpenAI's CLIP."""

    def __init__(self, clip: nn.Module):
        self.tower = get_tower(clip, "text")
        self.root = self.tower.module  # CLIPTextModel / CLIPTextTransformer
        self.clip = clip
        self.context_length = int(self.root.embeddings.position_embedding.num_embeddings)
        self.tokenizer = _tokenizer(self.context_length)
        self._prefix_cache = None

    @property
    def dtype(self) -> torch.dtype:
        return self.root.embeddings.token_embedding.weight.dtype

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.out_features

    @property
    def ln_final(self) -> nn.Module:
        return self.root.final_layer_norm

    @property
    def projection(self):
        return self.clip.text_projection

    def frozen_inputs(self) -> list[torch.Tensor]:
        return list(self.root.embeddings.parameters())

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.root.embeddings(input_ids=ids)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        length = x.shape[1]
        mask = torch.full((length, length), float("-inf"), dtype=x.dtype, device=x.device).triu(1)[None, None]
        for block in self.tower.blocks[start:stop]:
            x = first_tensor(block.module(x, mask))
        return x


def text_path(clip: nn.Module) -> TextPath:
    """The `TextPath` of a CLIP of any family with a text tower.

    Example:
        >>> text = text_path(clip)
    """
    return HFTextPath(clip) if detect(clip).family == "hf" else TextPath(clip)
