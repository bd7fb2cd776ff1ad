"""Decoder heads, one per file, and the multi-task decoder. Importing this package registers them."""

from clipadapt.heads import cmc, cmlm, contrastive, vc  # noqa: F401
from clipadapt.heads.base import Head, HeadInputs, HeadOutput
from clipadapt.heads.cmc import CMCHead
from clipadapt.heads.cmlm import CMLMHead
from clipadapt.heads.contrastive import ContrastiveHead
from clipadapt.heads.decoder import DecoderOutput, MultiTaskDecoder, fuse
from clipadapt.heads.vc import VCHead

__all__ = [
    "Head",
    "HeadInputs",
    "HeadOutput",
    "CMCHead",
    "CMLMHead",
    "ContrastiveHead",
    "VCHead",
    "DecoderOutput",
    "MultiTaskDecoder",
    "fuse",
]
