"""TED-Adapter laws (M2-CLIP spec §1) and the adapters' parameter counts on ViT-B/16."""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings, strategies as st

import clipadapt
from clipadapt.adapters import BottleneckAdapter, TEDAdapter
from tiny import BUILDERS, randomize_


def ctx_for(num_frames, grid=(4, 4)):
    return SimpleNamespace(num_frames=num_frames, num_prefix_tokens=1, grid=lambda tokens: grid)


def random_ted(dim=16, width=8, **kwargs):
    return randomize_(TEDAdapter(dim, width=width, **kwargs), std=0.2)


def test_fresh_ted_is_an_exact_identity():
    x = torch.randn(6, 17, 16)
    assert torch.equal(TEDAdapter(16, width=8)(x, ctx_for(3)), torch.zeros_like(x))


def test_first_frame_td_delta_is_zero_and_cls_untouched():
    ted = random_ted(parts=["td"])
    delta = ted(torch.randn(2 * 3, 17, 16), ctx_for(3)).reshape(2, 3, 17, 16)
    assert torch.equal(delta[:, 0], torch.zeros_like(delta[:, 0]))
    assert torch.equal(delta[:, :, 0], torch.zeros_like(delta[:, :, 0]))
    assert delta[:, 1:, 1:].abs().sum() > 0


@settings(max_examples=20, deadline=None)
@given(videos=st.integers(1, 3), num_frames=st.integers(1, 5), side=st.integers(1, 4), mode=st.sampled_from(["parallel", "sequential"]))
def test_videos_batched_equal_each_alone(videos, num_frames, side, mode):
    torch.manual_seed(0)
    ted = random_ted(mode=mode)
    x = torch.randn(videos * num_frames, 1 + side * side, 16)
    ctx = ctx_for(num_frames, (side, side))
    together = ted(x, ctx)
    alone = torch.cat([ted(chunk, ctx) for chunk in x.split(num_frames)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_changing_frame_t_changes_only_frames_t_minus_1_to_t_plus_1():
    model = BUILDERS["open_clip"]()
    randomize_(clipadapt.inject(model, "ted", layers=0, width=8).modules[0][2], std=0.2)
    num_frames, t = 5, 2
    video = torch.randn(num_frames, 3, 32, 32)
    edited = video.clone()
    edited[t] += torch.randn(3, 32, 32)
    with torch.no_grad(), clipadapt.frames(model, num_frames):
        a, b = model.encode_image(video), model.encode_image(edited)
    changed = [(a[i] - b[i]).abs().max().item() > 1e-5 for i in range(num_frames)]
    assert changed == [False, True, True, True, False]


def test_missing_frame_count_is_a_clear_error():
    model = BUILDERS["open_clip"]()
    clipadapt.inject(model, "ted", layers=0, width=8)
    with pytest.raises(clipadapt.FramesError, match=r"clipadapt.frames\(model, T\)"):
        model.encode_image(torch.randn(2, 3, 32, 32))


def test_frames_must_divide_the_batch():
    model = BUILDERS["open_clip"]()
    clipadapt.inject(model, "ted", layers=0, width=8)
    with pytest.raises(ValueError, match="not a whole number of 3-frame videos"), clipadapt.frames(model, 3):
        model.encode_image(torch.randn(4, 3, 32, 32))


def test_switches_choose_the_branches():
    te_only, td_only = TEDAdapter(16, width=8, parts=["te"]), TEDAdapter(16, width=8, parts=["td"])
    assert hasattr(te_only, "te") and not hasattr(te_only, "td")
    assert hasattr(td_only, "td") and not hasattr(td_only, "te")
    with pytest.raises(ValueError, match="parts"):
        TEDAdapter(16, parts=["tx"])
    with pytest.raises(ValueError, match="mode"):
        TEDAdapter(16, mode="serial")


def test_sequential_feeds_te_into_td():
    torch.manual_seed(0)
    ted = random_ted(mode="sequential")
    x = torch.randn(6, 17, 16)
    ctx = ctx_for(3)
    te = ted.temporal_enhancement(x, 3)
    td = torch.zeros(2, 3, 17, 16)
    td[:, 1:, 1:] = ted.temporal_difference(x + te, 3, ctx)  # frames 1.., patch tokens
    torch.testing.assert_close(ted(x, ctx), te + td.flatten(0, 1))


def params(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_per_block_match_the_spec():
    assert params(TEDAdapter(768, width=384)) == 1_187_328
    assert params(TEDAdapter(768, width=384, shared_projections=True)) == 596_352
    assert params(BottleneckAdapter(512, width=384)) == 394_112


@pytest.fixture(scope="module")
def vit_b16():
    import open_clip

    return open_clip.create_model("ViT-B-16", pretrained=None)


def test_vit_b16_ted_and_text_adapter_counts(vit_b16):
    ted = clipadapt.inject(vit_b16, "ted", tower="visual", layers=range(12), site="pre_mlp", width=384)
    text = clipadapt.inject(vit_b16, "bottleneck", tower="text", layers=[-1], site="pre_mlp", width=384)
    assert ted.num_params() == 14_247_936
    assert text.num_params() == 394_112
    info = clipadapt.summary(vit_b16, show=False)
    assert info["trainable"] == 14_247_936 + 394_112
    clipadapt.eject(vit_b16)


def test_release_first_frame_mode_feeds_a_zero_difference_through_the_branch():
    ted = random_ted(parts=["td"], zero_first_frame=False)
    delta = ted(torch.randn(3, 17, 16), ctx_for(3))
    assert delta[0, 1:].abs().sum() > 0  # the branch biases reach frame 0
    assert torch.equal(delta[:, 0], torch.zeros_like(delta[:, 0]))


# ---- an independent reference, written from the paper's equations (spec §1) ---------------------


def reference_ted(ted, x, num_frames, grid, mode="parallel", parts=("te", "td"), zero_first_frame=True):
    """TE and TD written out with explicit loops over frames and grid offsets, from the weights.

    x: (B·T, 1 + gh·gw, D). TE(x)_t = W_up(conv_t(W_dn x + b_dn)) + b_up over every token, with
    conv_t(z)_t = b + Σ_k K_k z_{t+k-1} (zero outside the clip); TD on the patch tokens:
    d_t = x_t − x_{t−1}, then W_dn, a per-frame 3×3 depthwise conv on the grid, W_up; the class
    token gets zero, and so does frame 0 unless its zero difference goes through the branch.
    """
    videos, tokens, dim = x.shape[0] // num_frames, x.shape[1], x.shape[2]
    gh, gw = grid
    xs = [[x[b * num_frames + t] for t in range(num_frames)] for b in range(videos)]  # [b][t]: (L, D)

    def linear(layer, v):
        return v @ layer.weight.t() + layer.bias

    def te_branch(frames):  # frames: list over t of (L, D)
        z = [linear(ted.te.down, f) for f in frames]
        kernel, bias = ted.te_conv.weight[:, 0, :], ted.te_conv.bias  # (w, 3), (w,)
        out = []
        for t in range(num_frames):
            acc = bias.expand_as(z[t]).clone()
            for k in range(3):
                s = t + k - 1
                if 0 <= s < num_frames:
                    acc = acc + kernel[:, k] * z[s]
            out.append(linear(ted.te.up, acc))
        return out

    def td_branch(frames):
        kernel, bias = ted.td_conv.weight[:, 0], ted.td_conv.bias  # (w, 3, 3), (w,)
        out = []
        for t in range(num_frames):
            delta = torch.zeros(tokens, dim, dtype=x.dtype)
            if t == 0 and zero_first_frame:
                out.append(delta)
                continue
            diff = frames[t][1:] - frames[t - 1][1:] if t > 0 else torch.zeros(tokens - 1, dim, dtype=x.dtype)
            z = linear(ted.td.down, diff).reshape(gh, gw, -1)
            conv = torch.zeros_like(z)
            for i in range(gh):
                for j in range(gw):
                    acc = bias.clone()
                    for di in range(3):
                        for dj in range(3):
                            a, c = i + di - 1, j + dj - 1
                            if 0 <= a < gh and 0 <= c < gw:
                                acc = acc + kernel[:, di, dj] * z[a, c]
                    conv[i, j] = acc
            delta[1:] = linear(ted.td.up, conv.reshape(gh * gw, -1))
            out.append(delta)
        return out

    rows = []
    for frames in xs:
        te = te_branch(frames) if "te" in parts else [torch.zeros(tokens, dim, dtype=x.dtype)] * num_frames
        td_input = [f + e for f, e in zip(frames, te)] if mode == "sequential" else frames
        td = td_branch(td_input) if "td" in parts else [torch.zeros(tokens, dim, dtype=x.dtype)] * num_frames
        rows += [e + d for e, d in zip(te, td)]
    return torch.stack(rows)


@pytest.mark.parametrize("mode, parts, zero_first_frame, shared", [
    ("parallel", ("te", "td"), True, False),
    ("parallel", ("te", "td"), False, False),
    ("sequential", ("te", "td"), True, False),
    ("parallel", ("te", "td"), True, True),
    ("parallel", ("te",), True, False),
    ("parallel", ("td",), False, False),
])
def test_ted_matches_the_papers_equations_written_out(mode, parts, zero_first_frame, shared):
    torch.manual_seed(0)
    ted = random_ted(mode=mode, parts=list(parts), zero_first_frame=zero_first_frame, shared_projections=shared).double()
    num_frames, grid = 4, (3, 2)
    x = torch.randn(2 * num_frames, 1 + 6, 16, dtype=torch.float64)
    with torch.no_grad():
        got = ted(x, ctx_for(num_frames, grid))
        want = reference_ted(ted, x, num_frames, grid, mode, parts, zero_first_frame)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert want.abs().max() > 0.1  # the reference is not trivially zero
