"""Tokenizers for text towers: OpenAI's BPE, a model's own (open_clip), or a local Hugging Face file.

A text tower is trained with one tokenizer; clipadapt never guesses it. A `Tokenizer` turns
prompts into ids ``(N, context_length)`` exactly as the model's tokenizer does, turns one word
into its ids (no special tokens), and knows, by probing itself once, what it writes around the
words: the leading special ids (``prefix``: start-of-text, ``[CLS]``, or none), the trailing ones
(``suffix``: end-of-text, ``[SEP]``, or none) and the padding id. Nothing here assumes the
end-of-text id is the highest id or that padding is 0.

Sources (`load_tokenizer`):

- ``None`` / ``"bpe"``: OpenAI CLIP's BPE, bundled with open_clip (CLIP, EVA, PE-Core, CoCa ...);
- a path to a ``tokenizer.json`` (the ``tokenizers`` format), or a directory holding one;
- an open_clip model name (``ViT-B-16-SigLIP``): ``open_clip.get_tokenizer(name)``, which reads
  a Hugging Face tokenizer from the local cache only under ``HF_HUB_OFFLINE=1``.

Nothing downloads here: a tokenizer that is not on the machine is a one-line error naming it and
saying how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch

BPE = "bpe"
PROBE_WORD = "a"
PAD_NAMES = ("<pad>", "[pad]", "<|pad|>", "<|endoftext|>")


class Tokenizer:
    """Prompts to ids as a model's own tokenizer writes them, and words to ids for building
    prompts word by word (CMLM's masking).

    Args:
        name: what the tokenizer is, for messages (``OpenAI BPE``, a file path, a model name).
        context_length: ids per prompt (the text tower's context).
        to_ids: prompts -> ids ``(N, context_length)``, padded and truncated as the model's.
        encode_word: one word -> its ids, without special tokens.

    Attributes:
        prefix / suffix: the special ids written before / after the words (possibly none).
        pad_id: the id that fills a prompt after its last token.

    Example:
        >>> tok = bpe_tokenizer(77)
        >>> tok.prefix, tok.suffix, tok.pad_id
        ((49406,), (49407,), 0)
    """

    def __init__(self, name: str, context_length: int, to_ids: Callable[[list[str]], torch.Tensor],
                 encode_word: Callable[[str], list[int]]):
        self.name, self.context_length = name, int(context_length)
        self._to_ids, self._encode_word = to_ids, encode_word
        self.prefix, self.suffix, self.pad_id = self._probe()

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        """Ids ``(N, context_length)`` of `prompts`."""
        ids = torch.as_tensor(self._to_ids(list(prompts))).long()
        if ids.shape != (len(prompts), self.context_length):
            raise ValueError(f"tokenizer {self.name} gave ids of shape {tuple(ids.shape)} for {len(prompts)} prompts; "
                             f"the text tower takes ({len(prompts)}, {self.context_length})")
        return ids

    def encode(self, word: str) -> list[int]:
        """The ids of one word, without special tokens."""
        return list(self._encode_word(word))

    def from_words(self, word_ids: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        """Ids ``(N, context_length)`` of prompts given as words, each word a list of ids:
        ``prefix + words + suffix``, padded; words past the context are cut, the suffix kept.

        Example:
            >>> bpe_tokenizer(8).from_words([[[320], [1929]]])
            tensor([[49406,   320,  1929, 49407,     0,     0,     0,     0]])
        """
        room = self.context_length - len(self.prefix) - len(self.suffix)
        ids = torch.full((len(word_ids), self.context_length), self.pad_id, dtype=torch.long)
        for row, words in enumerate(word_ids):
            seq = [*self.prefix, *[t for word in words for t in word][:room], *self.suffix]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return ids

    def _probe(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """What the tokenizer writes around words, read from its own output: a one-word prompt
        gives the prefix and the padding, a prompt longer than the context the suffix it keeps
        when it cuts (which tells an end token apart from padding when both are one id, SigLIP)."""
        word = self.encode(PROBE_WORD)
        row = self([PROBE_WORD])[0].tolist()
        start = next((i for i in range(len(row) - len(word) + 1) if word and row[i : i + len(word)] == word), None)
        if start is None or row[-1] == word[-1]:
            raise ValueError(f"tokenizer {self.name}: cannot tell its special tokens apart (the ids of {PROBE_WORD!r}, "
                             f"{word}, are not followed by padding in {row[:8]}...)")
        pad_id, rest = row[-1], row[start + len(word):]
        suffix = rest[: next(i for i in range(len(rest)) if all(t == pad_id for t in rest[i:]))]
        if len(word) == 1:
            cut = self([" ".join([PROBE_WORD] * (self.context_length + 1))])[0].tolist()[start:]
            kept = next((i for i, token in enumerate(cut) if token != word[0]), len(cut))
            suffix = cut[kept:]
            if rest[: len(suffix)] != suffix:
                raise ValueError(f"tokenizer {self.name}: ends a cut prompt with {suffix} but a short one with {rest[:4]}...")
        return tuple(row[:start]), tuple(suffix), int(pad_id)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name}, context_length={self.context_length}, prefix={self.prefix}, suffix={self.suffix}, pad_id={self.pad_id})"


def bpe_tokenizer(context_length: int) -> Tokenizer:
    """OpenAI CLIP's BPE (open_clip's bundled vocabulary file), `context_length` ids per prompt.

    Example:
        >>> bpe_tokenizer(77)(["a video of archery"]).shape
        torch.Size([1, 77])
    """
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer(context_length=context_length)
    return Tokenizer("OpenAI BPE", context_length, simple, simple.encode)


def file_tokenizer(path: str | Path, context_length: int) -> Tokenizer:
    """A Hugging Face ``tokenizer.json`` (or a directory holding one), read with ``tokenizers``:
    its own special tokens (post-processor), truncation to `context_length` keeping them, and
    padding with its padding id (or a special token named like ``<pad>`` / ``[PAD]``).

    Example:
        >>> tok = file_tokenizer("siglip/tokenizer.json", 64)   # doctest: +SKIP
    """
    from tokenizers import Tokenizer as HFTokenizer

    file = Path(path)
    if file.is_dir():
        if not (file / "tokenizer.json").is_file():
            raise FileNotFoundError(f"model.tokenizer {str(file)!r} is a directory without tokenizer.json; write one with "
                                    "transformers.AutoTokenizer.from_pretrained(dir).save_pretrained(dir)")
        file = file / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"model.tokenizer {str(file)!r} does not exist (accepted: a tokenizer.json, a directory "
                                "holding one, an open_clip model name, or bpe)")
    prompts_tok, words_tok = HFTokenizer.from_file(str(file)), HFTokenizer.from_file(str(file))
    pad_id = _pad_id(prompts_tok, file)
    prompts_tok.enable_truncation(context_length)
    prompts_tok.enable_padding(length=context_length, pad_id=pad_id, pad_token=prompts_tok.id_to_token(pad_id) or "")
    words_tok.no_padding()
    words_tok.no_truncation()

    def to_ids(prompts: list[str]) -> torch.Tensor:
        return torch.tensor([encoding.ids for encoding in prompts_tok.encode_batch(prompts)], dtype=torch.long)

    return Tokenizer(str(file), context_length, to_ids, lambda word: words_tok.encode(word, add_special_tokens=False).ids)


def _pad_id(hf, file: Path) -> int:
    if hf.padding is not None:
        return int(hf.padding["pad_id"])
    for token_id, token in sorted(hf.get_added_tokens_decoder().items()):
        if token.content.lower() in PAD_NAMES:
            return int(token_id)
    raise ValueError(f"model.tokenizer {str(file)!r} has no padding settings and no <pad>/[PAD] token; save it with "
                     "tokenizer.enable_padding(pad_id=..., pad_token=...)")


def open_clip_tokenizer(name: str, context_length: int) -> Tokenizer:
    """The tokenizer open_clip uses for its model config `name` (``open_clip.get_tokenizer``).

    A Hugging Face tokenizer (SigLIP's, CLIPA's, MetaCLIP 2's) comes from the local cache; when
    it is not there (or the network is off) the error names it and how to provide it.

    Example:
        >>> open_clip_tokenizer("ViT-B-16", 77).prefix
        (49406,)
    """
    import open_clip

    if name not in open_clip.list_models():
        raise ValueError(f"model.tokenizer {name!r} is neither a file nor an open_clip model name (accepted: a "
                         "tokenizer.json, a directory holding one, an open_clip model name, or bpe)")
    hub_name = (open_clip.get_model_config(name) or {}).get("text_cfg", {}).get("hf_tokenizer_name")
    try:
        tokenizer = open_clip.get_tokenizer(name, context_length=context_length)
    except (OSError, ValueError, ImportError) as error:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ValueError(f"the tokenizer of {name}, Hugging Face {hub_name!r}, is not on this machine{offline}: give "
                         f"model.tokenizer a local tokenizer.json or a directory with it, e.g. saved with "
                         f"transformers.AutoTokenizer.from_pretrained({hub_name!r}).save_pretrained(dir) where the "
                         f"network allows ({type(error).__name__})") from None
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is None:  # open_clip's SimpleTokenizer: OpenAI's BPE
        return Tokenizer(f"{name}'s tokenizer (OpenAI BPE)", context_length, tokenizer, tokenizer.encode)
    clean = getattr(tokenizer, "clean_fn", lambda text: text)
    return Tokenizer(f"{name}'s tokenizer ({hub_name})", context_length, tokenizer,
                     lambda word: inner.encode(clean(word), add_special_tokens=False))


def load_tokenizer(source: str | Path | Tokenizer | None, context_length: int) -> Tokenizer:
    """The `Tokenizer` a recipe's ``model.tokenizer`` names, at `context_length`.

    Args:
        source: ``None`` or ``"bpe"`` (OpenAI's BPE), a ``tokenizer.json`` path or a directory
            holding one, an open_clip model name, or a `Tokenizer` (returned as it is).

    Example:
        >>> load_tokenizer("bpe", 77).name
        'OpenAI BPE'
    """
    if isinstance(source, Tokenizer):
        if source.context_length != context_length:
            raise ValueError(f"tokenizer {source.name} writes {source.context_length} ids; the text tower takes {context_length}")
        return source
    if source is None or str(source).lower() == BPE:
        return bpe_tokenizer(context_length)
    path = Path(str(source)).expanduser()
    if path.exists() or path.suffix == ".json" or os.sep in str(source):
        return file_tokenizer(path, context_length)
    return open_clip_tokenizer(str(source), context_length)


__all__ = ["Tokenizer", "bpe_tokenizer", "file_tokenizer", "open_clip_tokenizer", "load_tokenizer"]
