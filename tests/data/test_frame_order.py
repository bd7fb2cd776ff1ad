"""The synthetic benchmark needs frame order: a model blind to it stays near chance within a
reversal pair, and the same model with TED adapters (which see frame differences) separates it."""

import open_clip
import torch
from einops import rearrange

import clipadapt
from clipadapt.data import VideoDataset, normalize_video, synthetic

FRAMES = 8


def load_all(data, list_file):
    dataset = VideoDataset(list_file, root=data.root, num_frames=FRAMES, sampling="segment", size=32, on_error="raise")
    samples = [dataset[i] for i in range(len(dataset))]
    return normalize_video(torch.stack([s["video"] for s in samples])), torch.tensor([s["label"] for s in samples])


def held_out_accuracy(train, test, *, temporal: bool) -> float:
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, layers=1, heads=2),
    )
    if temporal:
        clipadapt.inject(clip, "ted", tower="visual", layers="all", width=32)
    else:
        clipadapt.freeze(clip)
    probe = torch.nn.Linear(32, 2)
    trainable = [p for p in clip.parameters() if p.requires_grad] + list(probe.parameters())
    optimizer = torch.optim.Adam(trainable, lr=1e-2)

    def video_features(videos):  # videos: (B, T, 3, H, W); the mean over frames ignores their order
        with clipadapt.frames(clip, FRAMES):
            features = clip.encode_image(rearrange(videos, "b t c h w -> (b t) c h w"))
        return rearrange(features, "(b t) d -> b t d", t=FRAMES).mean(1)

    def logits(videos):
        return probe(video_features(videos))

    if not temporal:  # a frozen tower gives the same features every step: compute them once
        with torch.no_grad():
            frozen = {id(train[0]): video_features(train[0]), id(test[0]): video_features(test[0])}
        logits = lambda videos: probe(frozen[id(videos)])  # noqa: E731

    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(logits(train[0]), train[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (logits(test[0]).argmax(1) == test[1]).float().mean().item()


def test_frame_order_blind_model_is_near_chance_and_ted_separates_reversal_pairs(tmp_path):
    data = synthetic.generate(tmp_path, num_classes=2, train_per_class=64, test_per_class=24,
                              num_frames=FRAMES, size=32, seed=1)
    assert data.classnames == ["a circle moving left", "a circle moving right"]
    train, test = load_all(data, data.train_list), load_all(data, data.test_list)
    blind = held_out_accuracy(train, test, temporal=False)
    ordered = held_out_accuracy(train, test, temporal=True)
    assert blind <= 0.7, f"a frame-order-blind model reached {blind:.2f} on a reversal pair"
    assert ordered >= 0.8 and ordered - blind >= 0.2, f"TED reached {ordered:.2f}, blind {blind:.2f}"
