"""PyTorch's ``nn.MultiheadAttention`` vs clipadapt's `SelfAttention` under autograd.

One ViT-B/16 attention (width 768, 12 heads), 16 frames × 197 tokens, batch-first, frozen
weights, input with gradient (as below a trainable adapter): forward plus backward to the
input, interleaved, CPU. The no-grad fused forward is the reference.

    python benchmarks/bench_attention.py [--repeats 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, ratio_table, write_json

import clipadapt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    stock = nn.MultiheadAttention(768, 12, batch_first=True).requires_grad_(False)
    direct = copy.deepcopy(stock)
    clipadapt.efficient_attention(direct)
    tokens = torch.randn(16, 197, 768)

    def no_grad_forward(module):
        with torch.no_grad():
            module(tokens, tokens, tokens, need_weights=False)

    def forward_backward(module):
        x = tokens.clone().requires_grad_()
        module(x, x, x, need_weights=False)[0].sum().backward()

    variants = {
        "fused, no grad": lambda: no_grad_forward(stock),
        "MultiheadAttention, fwd+bwd": lambda: forward_backward(stock),
        "SelfAttention, fwd+bwd": lambda: forward_backward(direct),
    }
    seconds = interleaved(variants, args.repeats)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    title = f"ViT-B/16 attention, 16 × 197 tokens, CPU ({torch.get_num_threads()} threads)"
    table = ratio_table(title, "variant", median, "fused, no grad", unit="ms")
    console = Console()
    console.print(table)
    speedup = median["MultiheadAttention, fwd+bwd"] / median["SelfAttention, fwd+bwd"]
    console.print(f"SelfAttention is {speedup:.2f}× as fast under autograd")
    path = write_json("bench_attention", {"seconds": seconds, "median": median, "speedup": speedup}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
