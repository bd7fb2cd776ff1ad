"""Cross-modal masked language modelling (CMLM, M2-CLIP §4.3).

1. Masking: the prompt ("a video of {class}") is split into words; ``max(1, round(0.2·n))``
   of them, drawn uniformly among all words (template words too), become the literal word
   "mask" (one token; a tokenizer that splits it is refused). Labels ``(B, L)`` hold, at the position of each "mask" token, the
   index of the original word in a word vocabulary, and −100 everywhere else.
2. The masked prompt goes through the adapted text tower; its token states before ``ln_final``
   are the queries of a cross-attention block: a frozen copy of the last text block whose
   attention takes keys and values from the per-frame video embeddings, followed by a trainable
   text adapter before its MLP, its MLP, and CLIP's frozen ``ln_final``.
3. A BERT-style prediction head (Linear → GELU → LayerNorm → Linear to the vocabulary, with a
   separate bias) scores every position; cross-entropy on the masked ones.

The word vocabulary is the sorted unique lower-case words of all the class prompts (template
words included), a word-list file (one word, or ``word index``, per line), or only a declared size (enough to
count parameters and FLOPs; training then needs words).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch.nn.utils import parametrize

from clipadapt.adapters.bottleneck import Bottleneck
from clipadapt.backbones.base import Block
from clipadapt.heads.base import Head, HeadContext, HeadInputs, HeadOutput, loss_dtype
from clipadapt.inject import CONTAINER
from clipadapt.registry import register_head

MASK_WORD = "mask"
IGNORE = -100


def prompt_words(prompt: str) -> list[str]:
    """Lower-case words of a prompt, split on white space."""
    return prompt.lower().split()


def word_vocabulary(prompts: list[str]) -> list[str]:
    """Sorted unique lower-case words of `prompts`.

    Example:
        >>> word_vocabulary(["a video of archery", "a video of abseiling"])
        ['a', 'abseiling', 'archery', 'of', 'video']
    """
    return sorted({word for prompt in prompts for word in prompt_words(prompt)})


def read_word_list(path: str | Path) -> list[str]:
    """The words of a word-list file in file order: one word per line, or ``word index`` per
    line (the release's file), where the indices must be 0, 1, 2, ... in order.

    Example:
        >>> Path("words.txt").write_text("a 0\nabseiling 1\n")   # doctest: +SKIP
        >>> read_word_list("words.txt")                           # doctest: +SKIP
        ['a', 'abseiling']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cmlm word_list {str(path)!r} does not exist")
    words = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 2 and fields[1].isdigit():
            if int(fields[1]) != len(words):
                raise ValueError(f"cmlm word_list {str(path)!r} line {number}: index {fields[1]} where {len(words)} "
                                 "was expected (indices count 0, 1, 2, ... in file order)")
        elif len(fields) != 1:
            raise ValueError(f"cmlm word_list {str(path)!r} line {number}: {line.strip()!r}; "
                             "accepted: one word, or a word and its index")
        words.append(fields[0].lower())
    return words


def text_adapter_copy(block: Block, width: int) -> Bottleneck:
    """A trainable copy of the bottleneck adapter injected in `block` (the last text block)."""
    container = getattr(block.module, CONTAINER, None)
    found = [module for key, module in (container.items() if container is not None else []) if key.startswith("bottleneck_")]
    if not found:
        raise ValueError("cmlm adapter_init 'copy' needs a bottleneck adapter in the last text block; inject one "
                         "or choose adapter_init zero_bias | default | zero")
    adapter = copy.deepcopy(found[0].mlp)
    if adapter.down.out_features != width:
        raise ValueError(f"cmlm adapter_width {width} differs from the last text block's adapter width "
                         f"{adapter.down.out_features}, which adapter_init 'copy' copies")
    return adapter.requires_grad_(True)


def num_masked(num_words: int, ratio: float = 0.2) -> int:
    """``max(1, round(ratio·n))`` words to mask in a prompt of `num_words` words."""
    return max(1, round(ratio * num_words))


def clean_copy(block: Block, make_block) -> Block:
    """A frozen copy of `block` as the plain backbone has it, whatever was injected into it.

    Adapter modules, every hook, and every weight parametrization (LoRA) are removed from the
    copy, which keeps the original, unparametrized weights; `make_block` (the tower's) turns
    the copied module into a `Block`.
    """
    twin = copy.deepcopy(block.module)
    for module in list(twin.modules()):
        if CONTAINER in module._modules:
            del module._modules[CONTAINER]
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module._forward_hooks_with_kwargs.clear()
        module._forward_pre_hooks_with_kwargs.clear()
        if parametrize.is_parametrized(module):
            originals = {name: plist.original for name, plist in module.parametrizations.items()}
            del module._modules["parametrizations"]
            module.__class__ = type(module).__bases__[0]  # the plain class, not the shared parametrized one
            for tensor_name, original in originals.items():
                module.register_parameter(tensor_name, original)
    for param in twin.parameters():
        param.requires_grad_(False)
    return make_block(twin)


class PredictionHead(nn.Module):
    """BERT's masked-LM head: Linear W→W, GELU, LayerNorm (eps 1e-12), Linear W→V plus a bias."""

    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(width, eps=1e-12)
        self.decoder = nn.Linear(width, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        for linear in (self.dense, self.decoder):
            nn.init.normal_(linear.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(x)))) + self.bias


@register_head("cmlm")
class CMLMHead(Head):
    """Predict masked prompt words from the text attending to the video's frames.

    Args:
        ratio: share of words masked (0.2), at least one per prompt.
        adapter_width: width of the text adapter inside the cross-attention block (384).
        adapter_init: ``copy`` (a copy of the bottleneck adapter in the last text block, as the
            release; that adapter must exist), or a fresh adapter: ``zero_bias`` (PyTorch's
            weights, zero biases), ``default`` (PyTorch's) or ``zero``.
        word_list: a file with one word per line, or one ``word index`` pair per line (the
            release's K400 file, 520 words), to fix the vocabulary.
        vocab_size: the vocabulary size to use when no words are at hand (no class names and no
            word list), for counting parameters and FLOPs; words, when known, decide the size.
        adapter_lr_mult: learning-rate factor of the text adapter inside the block (the
            release trains it at half the base rate).
        seed: base seed of the per-sample masking when sample ids are given.

    Example:
        >>> model.add_head("cmlm", weight=0.1)
    """

    needs = frozenset({"frames", "labels", "label_prompts", "sample_ids"})

    def __init__(
        self,
        context: HeadContext,
        ratio: float = 0.2,
        adapter_width: int = 384,
        adapter_init: str = "zero_bias",
        word_list: str | None = None,
        vocab_size: int | None = None,
        adapter_lr_mult: float = 1.0,
        seed: int = 0,
    ):
        super().__init__(context)
        text = context.text
        if text is None:
            raise ValueError(f"cmlm encodes masked prompts and needs a text tower: {context.no_text_reason or 'this model has none'}")
        self.ratio, self.seed, self.adapter_lr_mult = ratio, seed, adapter_lr_mult
        if word_list is not None:
            self.vocabulary = read_word_list(word_list)
        elif context.classnames:
            self.vocabulary = word_vocabulary(context.prompts(context.classnames, context.templates[:1]))
        else:
            self.vocabulary = []
        size = len(self.vocabulary) or vocab_size
        if not size:
            raise ValueError("cmlm needs a word vocabulary: give class names, a word_list file or vocab_size")
        width = text.width
        if context.embed_dim != width:
            raise ValueError(f"cmlm attends from text width {width} to video embeddings of width {context.embed_dim}; they must match")
        twin = clean_copy(text.last_block(), text.make_block)
        if twin.cross_attend is None:
            raise TypeError(f"cmlm needs cross-attention in the last text block; the backbone spec gives none for "
                            f"{type(twin.attn).__name__} (Block.cross_attend)")
        self.block = twin.module  # the frozen copy, a submodule of the head
        self._twin = twin
        self._text = text  # the text service, not a submodule of the head
        self._ln_final = (text.ln_final,)  # CLIP's own, frozen; not a submodule of the head
        self.adapter = text_adapter_copy(text.last_block(), adapter_width) if adapter_init == "copy" else Bottleneck(width, adapter_width, "gelu", adapter_init)
        self.predict = PredictionHead(width, size)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self._word_tokens: dict[str, list[int]] = {}
        self._index = {word: i for i, word in enumerate(self.vocabulary)}

    def lr_mults(self) -> dict[str, float]:
        return {"adapter": self.adapter_lr_mult} if self.adapter_lr_mult != 1.0 else {}

    # ---- masking ------------------------------------------------------------------------

    def _word_ids(self, text, word: str) -> list[int]:
        if word not in self._word_tokens:
            self._word_tokens[word] = text.encode_word(word)
        return self._word_tokens[word]

    def mask(self, prompts: list[str], text, generators: list[torch.Generator | None]):
        """Masked token ids and aligned labels for `prompts` (one generator per prompt, or None).

        Returns:
            ``(TokenizedPrompts, labels (B, context_length))``.
        """
        if not self.vocabulary:
            raise ValueError("cmlm has only a declared vocabulary size; training needs words (class names or word_list)")
        mask_ids = self._word_ids(text, MASK_WORD)
        tokenizer = text.tokenizer
        if len(mask_ids) != 1:
            raise ValueError(f"cmlm masks words with the word {MASK_WORD!r}, which {tokenizer.name} writes as {len(mask_ids)} "
                             f"ids {mask_ids}; it must be one id")
        last = tokenizer.context_length - len(tokenizer.suffix)  # positions past it are cut
        rows, labels = [], torch.full((len(prompts), text.context_length), IGNORE, dtype=torch.long)
        for row, (prompt, generator) in enumerate(zip(prompts, generators)):
            words = prompt_words(prompt)
            chosen = set(torch.randperm(len(words), generator=generator)[: num_masked(len(words), self.ratio)].tolist())
            tokens, position = [], len(tokenizer.prefix)  # the words start after the leading special ids
            for index, word in enumerate(words):
                if index in chosen:
                    if word not in self._index:
                        raise KeyError(f"cmlm: word {word!r} of prompt {prompt!r} is not in the word vocabulary")
                    if position < last:
                        labels[row, position] = self._index[word]
                    tokens.append(mask_ids)
                    position += 1
                else:
                    piece = self._word_ids(text, word)
                    tokens.append(piece)
                    position += len(piece)
            rows.append(tokens)
        return text.tokens_from_words(rows), labels

    def _generators(self, sample_ids: torch.Tensor | None, count: int) -> list[torch.Generator | None]:
        if sample_ids is None:
            return [None] * count
        step = int(self.calls)
        return [torch.Generator().manual_seed(hash((self.seed, step, int(i))) & 0x7FFFFFFFFFFFFFFF) for i in sample_ids.tolist()]

    # ---- forward ------------------------------------------------------------------------

    def cross_attend(self, states: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The cross-attention block: text ``(B, L, W)`` attends to frames ``(B, T, W)``."""
        block = self._twin
        query, memory = block.ln_1(states), block.ln_1(frames.to(states.dtype))
        x = states + block.cross_attend(query, memory)
        x = x + self.adapter(x)
        x = x + block.mlp(block.ln_2(x))
        return self._ln_final[0](x)

    def forward(self, inputs: HeadInputs) -> HeadOutput:
        if inputs.labels is None:
            return HeadOutput()
        text = self._text
        prompts = inputs.label_prompts
        tokens, labels = self.mask(prompts, text, self._generators(inputs.sample_ids, len(prompts)))
        if self.training:
            self.calls += 1
        tokens = tokens.to(inputs.labels.device)
        states = text.token_states(tokens, truncate=True)  # (B, L', W)
        out = self.cross_attend(states, inputs.frames)
        logits = self.predict(out.to(self.predict.dense.weight.dtype))
        labels = labels[:, : logits.shape[1]].to(logits.device)
        loss = F.cross_entropy(loss_dtype(logits.flatten(0, 1)), labels.flatten(), ignore_index=IGNORE)
        return HeadOutput(loss=loss)
