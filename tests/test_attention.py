"""SelfAttention: the direct path computes what nn.MultiheadAttention computes, values and gradients."""

import copy

import pytest
import torch
import torch.nn as nn

import clipadapt
from clipadapt.attention import SelfAttention
from tiny import tiny_openai_clip, tiny_text_clip


def pair(batch_first: bool, dropout: float = 0.0):
    torch.manual_seed(0)
    stock = nn.MultiheadAttention(32, 4, batch_first=batch_first, dropout=dropout).double()
    fast = copy.deepcopy(stock)
    assert clipadapt.efficient_attention(fast) == 1
    return stock, fast


def causal(length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1)


def run(module, x, **kwargs):
    x = x.clone().requires_grad_()
    out, weights = module(x, x, x, **kwargs)
    weight_grad = module.in_proj_weight.requires_grad
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(),
                                [x, module.in_proj_weight] if weight_grad else [x])
    return out, weights, grads


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", [None, "causal", "per-head"])
@pytest.mark.parametrize("trainable", [False, True])
def test_direct_path_matches_the_stock_module_in_values_and_gradients(batch_first, mask, trainable):
    stock, fast = pair(batch_first)
    for module in (stock, fast):
        module.requires_grad_(trainable)
    x = torch.randn((3, 7, 32) if batch_first else (7, 3, 32), dtype=torch.float64)
    attn_mask = {None: None, "causal": causal(7), "per-head": torch.randn(3 * 4, 7, 7, dtype=torch.float64)}[mask]
    expected = run(stock, x, need_weights=False, attn_mask=attn_mask)
    got = run(fast, x, need_weights=False, attn_mask=attn_mask)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)
    assert got[1] is None
    for a, b in zip(got[2], expected[2]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_every_other_call_is_the_stock_one():
    stock, fast = pair(batch_first=True)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    padding = torch.tensor([[False] * 4 + [True], [False] * 5])
    for kwargs in ({"need_weights": True}, {"key_padding_mask": padding, "need_weights": False},
                   {"attn_mask": causal(5) == float("-inf"), "need_weights": False}):
        expected, got = stock(x, x, x, **kwargs), fast(x, x, x, **kwargs)
        torch.testing.assert_close(got[0], expected[0])
        assert (got[1] is None) == (expected[1] is None)
    y = torch.randn(2, 3, 32, dtype=torch.float64)  # cross-attention
    torch.testing.assert_close(fast(y, x, x)[0], stock(y, x, x)[0])
    with torch.no_grad():  # PyTorch's own fused kernel
        torch.testing.assert_close(fast(x, x, x, need_weights=False)[0], stock(x, x, x, need_weights=False)[0])


def test_attention_dropout_is_applied_in_training_only():
    _, fast = pair(batch_first=True, dropout=0.5)
    x = torch.randn(2, 5, 32, dtype=torch.float64, requires_grad=True)
    a, b = fast(x, x, x, need_weights=False)[0], fast(x, x, x, need_weights=False)[0]
    assert not torch.allclose(a, b)
    fast.eval()
    torch.testing.assert_close(fast(x, x, x, need_weights=False)[0], fast(x, x, x, need_weights=False)[0])


@pytest.mark.parametrize("build", [tiny_text_clip, tiny_openai_clip])
def test_switching_a_clip_keeps_its_state_and_outputs_and_switches_back(build):
    clip = build()
    keys = list(clip.state_dict())
    stock_blocks = sum(isinstance(m, nn.MultiheadAttention) for m in clip.modules())
    tokens = torch.randint(1, 99, (2, 16))
    with torch.no_grad():
        before = clip.encode_text(tokens)
    assert clipadapt.efficient_attention(clip) == stock_blocks > 0
    assert list(clip.state_dict()) == keys
    assert all(isinstance(m, SelfAttention) for m in clip.modules() if isinstance(m, nn.MultiheadAttention))
    clipadapt.inject(clip, "bottleneck", tower="text", layers=[-1], width=8)
    after = clip.encode_text(tokens)  # under autograd: the direct path, with the causal mask
    assert after.requires_grad
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    assert clipadapt.efficient_attention(clip, enable=False) == stock_blocks
    assert not any(isinstance(m, SelfAttention) for m in clip.modules())


def test_the_direct_path_runs_under_bfloat16_autocast():
    clip = tiny_text_clip()
    clipadapt.efficient_attention(clip)
    clipadapt.inject(clip, "bottleneck", tower="text", layers=[-1], width=8)
    tokens = torch.randint(1, 99, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = clip.encode_text(tokens)
        clipadapt.efficient_attention(clip, enable=False)
        stock = clip.encode_text(tokens)
    assert fast.dtype == stock.dtype == torch.bfloat16
    assert torch.equal(fast, stock)  # the same bf16 products in the same order: bit for bit
    fast.float().sum().backward()
