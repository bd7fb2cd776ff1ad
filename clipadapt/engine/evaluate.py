"""Multi-view evaluation: every view of a video is classified, per-view softmax probabilities are
averaged per head, and top-1/top-5 are reported per head and for the model's fused prediction,
reduced over all ranks (each video counted once).

Example:
    >>> from clipadapt.engine import evaluate
    >>> metrics = evaluate(model, val_loader)  # doctest: +SKIP
    >>> metrics["fused/top1"]  # doctest: +SKIP
    83.4
"""

from __future__ import annotations

import torch
from einops import rearrange

from clipadapt.data.transforms import normalize_video

from . import distributed
from .metrics import topk_correct
from .precision import autocast

__all__ = ["evaluate", "view_probabilities", "eval_batch_videos"]

KS = (1, 5)


def view_probabilities(outputs: dict, num_views: int, heads: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Per head, the mean over views of its softmax probabilities: (B·V, C) -> (B, C).

    ``outputs["fused"]`` already holds probabilities and is averaged as is. Entries that are not
    (B·V, C) tensors are ignored; `heads` keeps only the named ones (``fused`` included).

    Example:
        >>> out = {"vc": torch.zeros(6, 4), "fused": torch.full((6, 4), 0.25)}
        >>> {k: v.shape for k, v in view_probabilities(out, num_views=3).items()}
        {'vc': torch.Size([2, 4]), 'fused': torch.Size([2, 4])}
    """
    fused = {}
    for name, value in outputs.items():
        if not torch.is_tensor(value) or value.ndim != 2 or (heads is not None and name not in heads):
            continue
        probs = value.float() if name == "fused" else value.float().softmax(dim=-1)
        fused[name] = rearrange(probs, "(b v) c -> b v c", v=num_views).mean(dim=1)
    return fused


def eval_batch_videos(clips_per_forward: int, num_views: int) -> int:
    """Videos per evaluation loader batch so a forward holds about `clips_per_forward` clips
    whatever the number of views (at least one video).

    Example:
        >>> eval_batch_videos(32, 12), eval_batch_videos(32, 1), eval_batch_videos(4, 12)
        (3, 32, 1)
    """
    return max(1, -(-clips_per_forward // max(1, num_views)))


def _forward_in_chunks(model, clips: torch.Tensor, clips_per_forward: int | None, precision: str, device) -> dict:
    """``model(clips)`` over (N, T, 3, H, W) clips in forwards of at most `clips_per_forward`;
    the (N, C) outputs are concatenated, other entries of the output dict are dropped."""
    size = clips_per_forward or clips.shape[0]
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, clips.shape[0], size):
        chunk = clips[start : start + size]
        with autocast(precision, device):
            out = model(chunk)
        for name, value in out.items():
            if torch.is_tensor(value) and value.ndim == 2 and value.shape[0] == chunk.shape[0]:
                parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    *,
    device: torch.device | None = None,
    heads: list[str] | None = None,
    precision: str = "fp32",
    progress=None,
    clips_per_forward: int | None = None,
) -> dict[str, float]:
    """Top-1/top-5 (percent) per head and fused over `loader`, reduced across ranks.

    Args:
        model: in eval mode ``model(video) -> {head: logits (N, C), "fused": probs (N, C)}``.
        loader: batches ``{"video": (B, V, T, 3, H, W) or (B, T, 3, H, W), "label": (B,), "index": (B,)}``;
            a uint8 video is normalised on the device, a float one is taken as normalised.
        heads: report only these (``None``: every classifying head and ``fused``).
        precision: autocast precision (``fp32``, ``bf16``, ``fp16``).
        progress: an optional callable ``progress(num_videos_done)``.
        clips_per_forward: run the model on at most this many clips at once (views of several
            videos share a forward); ``None``: one forward per loader batch.

    Returns:
        ``{"<head>/top1": ..., "<head>/top5": ..., "num_videos": N}``; a video that the distributed
        sampler repeated to even out the ranks is counted once.

    Example:
        >>> evaluate(model, loader, heads=["vc", "fused"])  # doctest: +SKIP
        {'vc/top1': 80.1, 'vc/top5': 95.0, 'fused/top1': 83.4, 'fused/top5': 96.3, 'num_videos': 19796}
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    indices, hits, names = [], [], None
    for batch in loader:
        video = normalize_video(batch["video"], device)  # uint8 -> float, CLIP-normalised, on the device
        if video.ndim == 5:  # one view: (B, T, 3, H, W)
            video = video.unsqueeze(1)
        labels = batch["label"].to(device)
        num_views = video.shape[1]
        outputs = _forward_in_chunks(model, rearrange(video, "b v t c h w -> (b v) t c h w"), clips_per_forward, precision, device)
        probs = view_probabilities(outputs, num_views, heads)
        names = names or sorted(probs, key=lambda n: (n == "fused", n))
        columns = [topk_correct(probs[name], labels, KS)[k] for name in names for k in KS]
        hits.append(torch.stack(columns, dim=1).cpu())  # (B, heads·k)
        indices.append(torch.as_tensor(batch["index"]).cpu() if "index" in batch else torch.full((len(labels),), -1))
        if progress is not None:
            progress(len(labels))
    model.train(was_training)
    local = (torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
             torch.cat(hits) if hits else torch.zeros(0, 0, dtype=torch.bool), names or [])
    gathered = distributed.all_gather_object(local)
    names = next((n for _, _, n in gathered if n), [])
    seen: set[int] = set()
    kept = []
    for rank_indices, rank_hits, _ in gathered:
        for index, row in zip(rank_indices.tolist(), rank_hits):
            if index >= 0 and index in seen:
                continue  # padding added by DistributedSampler
            seen.add(index)
            kept.append(row)
    if not kept:
        return {"num_videos": 0}
    table = torch.stack(kept).float().mean(dim=0) * 100.0
    metrics = {f"{name}/top{k}": float(table[i * len(KS) + j]) for i, name in enumerate(names) for j, k in enumerate(KS)}
    metrics["num_videos"] = len(kept)
    return metrics
