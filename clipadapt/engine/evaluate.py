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

from . import distributed
from .metrics import topk_correct
from .precision import autocast

__all__ = ["evaluate", "view_probabilities"]

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


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    *,
    device: torch.device | None = None,
    heads: list[str] | None = None,
    precision: str = "fp32",
    progress=None,
) -> dict[str, float]:
    """Top-1/top-5 (percent) per head and fused over `loader`, reduced across ranks.

    Args:
        model: in eval mode ``model(video) -> {head: logits (N, C), "fused": probs (N, C)}``.
        loader: batches ``{"video": (B, V, T, 3, H, W) or (B, T, 3, H, W), "label": (B,), "index": (B,)}``.
        heads: report only these (``None``: every classifying head and ``fused``).
        precision: autocast precision (``fp32``, ``bf16``, ``fp16``).
        progress: an optional callable ``progress(num_videos_done)``.

    Returns:
        ``{"<head>/top1": ..., "<head>/top5": ..., "num_videos": N, "bad_samples": B}``; a video that
        the distributed sampler repeated to even out the ranks is counted once; ``bad_samples``
        sums the batches' ``"bad"`` fields (unreadable videos replaced) over all ranks.

    Example:
        >>> evaluate(model, loader, heads=["vc", "fused"])  # doctest: +SKIP
        {'vc/top1': 80.1, 'vc/top5': 95.0, 'fused/top1': 83.4, 'fused/top5': 96.3, 'num_videos': 19796, 'bad_samples': 0}
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    indices, hits, names, bad = [], [], None, 0
    for batch in loader:
        bad += int(torch.as_tensor(batch.get("bad", 0)).sum())
        video = batch["video"].to(device, non_blocking=True)
        if video.ndim == 5:  # one view: (B, T, 3, H, W)
            video = video.unsqueeze(1)
        labels = batch["label"].to(device)
        num_views = video.shape[1]
        with autocast(precision, device):
            outputs = model(rearrange(video, "b v t c h w -> (b v) t c h w"))
        probs = view_probabilities(outputs, num_views, heads)
        names = names or sorted(probs, key=lambda n: (n == "fused", n))
        columns = [topk_correct(probs[name], labels, KS)[k] for name in names for k in KS]
        hits.append(torch.stack(columns, dim=1).cpu())  # (B, heads·k)
        indices.append(torch.as_tensor(batch["index"]).cpu() if "index" in batch else torch.full((len(labels),), -1))
        if progress is not None:
            progress(len(labels))
    model.train(was_training)
    local = (torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
             torch.cat(hits) if hits else torch.zeros(0, 0, dtype=torch.bool), names or [], bad)
    gathered = distributed.all_gather_object(local)
    names = next((n for _, _, n, _ in gathered if n), [])
    bad = sum(rank_bad for *_, rank_bad in gathered)
    seen: set[int] = set()
    kept = []
    for rank_indices, rank_hits, _, _ in gathered:
        for index, row in zip(rank_indices.tolist(), rank_hits):
            if index >= 0 and index in seen:
                continue  # padding added by DistributedSampler
            seen.add(index)
            kept.append(row)
    if not kept:
        return {"num_videos": 0, "bad_samples": bad}
    table = torch.stack(kept).float().mean(dim=0) * 100.0
    metrics = {f"{name}/top{k}": float(table[i * len(KS) + j]) for i, name in enumerate(names) for j, k in enumerate(KS)}
    metrics["num_videos"], metrics["bad_samples"] = len(kept), bad
    return metrics
