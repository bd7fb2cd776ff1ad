"""Gradient checkpointing recomputes blocks during backward, after `frames()` has exited."""

import torch

import clipadapt
from tiny import BUILDERS, randomize_


def grads(checkpointing: bool):
    model = BUILDERS["open_clip"]()
    for handle in (clipadapt.inject(model, "ted", layers="all", width=8), clipadapt.inject(model, "bottleneck", layers="all", site="pre_attn", width=8)):
        for _, _, module in handle.modules:
            randomize_(module, std=0.2)
    model.train()
    model.set_grad_checkpointing(checkpointing)
    video = torch.randn(2 * 3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with clipadapt.frames(model, 3):
        loss = model.encode_image(video).square().sum()
    loss.backward()  # outside the frames() block
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_grad_checkpointing_gives_the_same_gradients():
    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-5, atol=1e-7, msg=name)
