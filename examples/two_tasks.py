"""Two tasks on one frozen CLIP with adapter sets, trained one after the other.

- ``k400``, a Kinetics-like task: which shape is in the video (appearance);
- ``ssv2``, a Something-Something-like task: which way it moves (a video and its time reversal
  are the two classes, so only the order of the frames tells them apart).

The videos are clipadapt's synthetic motion videos (`clipadapt.data.synthetic.render_video`,
in memory, 4 classes: a circle moving left / right, a square moving up / down); the backbone is
the quickstart's tiny random-weight CLIP, frozen. Each task gets its own adapter set (TED in
every visual block) and its own linear classifier on the video embedding. After ``ssv2`` has
trained, ``k400`` is evaluated again: its logits are bit for bit those it had before. Then one
mixed batch serves both tasks, each video through its own set, and each set is saved apart.

    python examples/two_tasks.py [--steps 150] [--per-class 48] [--out two_tasks.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

import clipadapt
from clipadapt.data.synthetic import render_video
from clipadapt.data.transforms import normalize_video
from clipadapt.models import build_clip

FRAMES, SIZE = 8, 32
TINY_CLIP = {"family": "open_clip", "weights": None,
             "config": {"embed_dim": 64, "image_size": 32, "patch_size": 8, "width": 64, "layers": 4, "heads": 2,
                        "text_width": 64, "text_layers": 2, "text_heads": 2, "context_length": 16, "vocab_size": 49408}}
TASKS = {  # task -> (label of a synthetic class, class names)
    "k400": (lambda label: label // 2, ["circle", "square"]),
    "ssv2": (lambda label: label % 2, ["forward", "reversed"]),
}


def videos(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, T, 3, H, W)`` normalised videos of the 4 synthetic classes and their labels."""
    rng = np.random.default_rng(seed)
    labels = torch.arange(4).repeat_interleave(per_class)
    clips = np.stack([render_video(int(label), FRAMES, SIZE, SIZE, rng) for label in labels])
    return normalize_video(rearrange(torch.from_numpy(clips), "n t h w c -> n t c h w")), labels


def embed(clip: nn.Module, video: torch.Tensor, sets=None) -> torch.Tensor:
    """Normalised video embeddings ``(B, E)``: the frame mean of the CLIP's image embeddings."""
    with clipadapt.frames(clip, video.shape[1], sets=sets):
        per_frame = clip.encode_image(rearrange(video, "b t c h w -> (b t) c h w"))
    return F.normalize(rearrange(per_frame, "(b t) e -> b t e", t=video.shape[1]).mean(1), dim=-1)


def train_task(clip, head, name, train, steps: int, batch: int, seed: int) -> None:
    """Inject the set `name` (it becomes the only active one) and train it with `head`."""
    clipadapt.inject(clip, "ted", tower="visual", layers="all", width=32, zero_first_frame=False, adapter_set=name)
    params = [p for p in clip.parameters() if p.requires_grad] + list(head.parameters())  # the set `name` alone
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    video, target = train[0], TASKS[name][0](train[1])
    for _ in range(steps):
        index = torch.randint(len(video), (batch,), generator=generator)
        loss = F.cross_entropy(head(embed(clip, video[index])) * 10, target[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def logits(clip, head, name, video) -> torch.Tensor:
    clipadapt.activate(clip, name)
    return head(embed(clip, video))


def accuracy(scores: torch.Tensor, target: torch.Tensor) -> float:
    return 100.0 * (scores.argmax(-1) == target).float().mean().item()


def run(steps: int = 150, per_class: int = 48, test_per_class: int = 16, batch: int = 16, seed: int = 0,
        out_dir: str | Path | None = None) -> dict:
    """Train ``k400`` then ``ssv2`` on one frozen tiny CLIP; return the accuracies (in %) and checks."""
    torch.manual_seed(seed)
    clip = build_clip(TINY_CLIP).eval()
    clipadapt.freeze(clip)
    train, test = videos(per_class, seed), videos(test_per_class, seed + 1)
    heads = {name: nn.Linear(64, len(classes)) for name, (_, classes) in TASKS.items()}
    result: dict = {}

    train_task(clip, heads["k400"], "k400", train, steps, batch, seed)
    k400_before = logits(clip, heads["k400"], "k400", test[0])
    train_task(clip, heads["ssv2"], "ssv2", train, steps, batch, seed + 1)
    k400_after = logits(clip, heads["k400"], "k400", test[0])
    ssv2 = logits(clip, heads["ssv2"], "ssv2", test[0])
    result["accuracy"] = {
        "k400 after training k400": accuracy(k400_before, TASKS["k400"][0](test[1])),
        "k400 after training ssv2": accuracy(k400_after, TASKS["k400"][0](test[1])),
        "ssv2 after training ssv2": accuracy(ssv2, TASKS["ssv2"][0](test[1])),
    }
    result["k400_logits_unchanged"] = torch.equal(k400_before, k400_after)

    # one mixed batch serves both tasks: even videos through k400, odd ones through ssv2
    sets = ["k400" if i % 2 == 0 else "ssv2" for i in range(len(test[0]))]
    alone = {}
    with torch.no_grad():
        mixed = embed(clip, test[0], sets=sets)
        for name in TASKS:
            clipadapt.activate(clip, name)
            alone[name] = embed(clip, test[0])
    result["mixed_max_difference"] = max(float((mixed[i] - alone[name][i]).abs().max()) for i, name in enumerate(sets))
    with torch.no_grad(), clipadapt.disabled(clip):
        frozen = heads["ssv2"](embed(clip, test[0]))
    result["accuracy"]["ssv2 head on the frozen CLIP (disabled)"] = accuracy(frozen, TASKS["ssv2"][0](test[1]))

    if out_dir is not None:
        out_dir = Path(out_dir)
        result["files"] = [str(clipadapt.save_adapters(clip, out_dir / f"{name}.safetensors", adapter_set=name)) for name in TASKS]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per task")
    parser.add_argument("--per-class", type=int, default=48, help="training videos per synthetic class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the result as JSON here, and the two sets beside it")
    args = parser.parse_args()
    result = run(args.steps, args.per_class, seed=args.seed, out_dir=Path(args.out).parent if args.out else None)
    for what, value in result["accuracy"].items():
        print(f"{what:42s} {value:6.2f}%")
    print(f"k400 logits unchanged after training ssv2: {result['k400_logits_unchanged']}")
    print(f"mixed batch vs each set alone, largest difference: {result['mixed_max_difference']:.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
