"""Multi-view evaluation with two explicit fusions, reduced over all ranks (each video once).

1. Over views (``view_fusion``), per head: a video's V views give logits ``(V, C)``;
   ``mean_prob`` averages their softmax probabilities (the release), ``mean_logit`` takes the
   softmax of their mean logits, ``max`` the element-wise maximum of their probabilities.
2. Over heads (``fuse_heads``, default ``vc`` and ``cmc``): ``fused`` is the mean of those
   heads' view-fused scores (of the ones the model has).

Top-1/top-5 are reported per head and for ``fused``.

Example:
    >>> from clipadapt.engine import evaluate
    >>> metrics = evaluate(model, val_loader, view_fusion="mean_prob", fuse_heads=["vc", "cmc"])  # doctest: +SKIP
    >>> sorted(metrics)  # doctest: +SKIP
    ['cmc/top1', 'cmc/top5', 'fused/top1', 'fused/top5', 'num_classes', 'num_videos', 'vc/top1', 'vc/top5']
"""

from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange

from clipadapt.backbones.preprocess import carried_preprocess
from clipadapt.data.transforms import normalize_video

from . import distributed
from .metrics import topk_correct
from .precision import autocast

__all__ = ["evaluate", "eval_batch_videos", "eval_options", "fuse_views", "fuse_heads", "view_scores", "VIEW_FUSIONS", "FUSE_HEADS"]

KS = (1, 5)
VIEW_FUSIONS = ("mean_prob", "mean_logit", "max")
FUSE_HEADS = ("vc", "cmc")
FUSED = "fused"


def _score_dtype(logits: torch.Tensor) -> torch.Tensor:
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def fuse_views(logits: torch.Tensor, num_views: int, how: str = "mean_prob") -> torch.Tensor:
    """One head's scores per video from its per-view logits: ``(B·V, C) -> (B, C)``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])     # one video, two views
        >>> fuse_views(logits, 2, "max")
        tensor([[0.8808, 0.7311]])
    """
    if how not in VIEW_FUSIONS:
        raise ValueError(f"view fusion {how!r} is not one of {VIEW_FUSIONS}")
    per_view = rearrange(_score_dtype(logits), "(b v) c -> b v c", v=num_views)
    if how == "mean_logit":
        return per_view.mean(dim=1).softmax(dim=-1)
    probs = per_view.softmax(dim=-1)
    return probs.mean(dim=1) if how == "mean_prob" else probs.amax(dim=1)


def fuse_heads(scores: dict[str, torch.Tensor], heads: Sequence[str] = FUSE_HEADS) -> torch.Tensor | None:
    """Mean of the view-fused scores ``(B, C)`` of `heads` (those present); ``None`` if none is.

    Example:
        >>> fuse_heads({"vc": torch.tensor([[1.0, 0.0]]), "cmc": torch.tensor([[0.0, 1.0]])})
        tensor([[0.5000, 0.5000]])
    """
    chosen = [scores[name] for name in heads if name in scores]
    return torch.stack(chosen).mean(dim=0) if chosen else None


def view_scores(outputs: dict, num_views: int, view_fusion: str = "mean_prob",
                heads: Sequence[str] = FUSE_HEADS) -> dict[str, torch.Tensor]:
    """Per head, its view-fused scores ``(B, C)``, and ``fused`` over `heads`.

    `outputs` maps head names to per-view logits ``(B·V, C)``; a ``fused`` entry the model
    returns itself is left out (the fusion over heads is recomputed from the heads' logits), and
    entries that are not ``(B·V, C)`` tensors are ignored.

    Example:
        >>> out = {"vc": torch.zeros(6, 4), "cmc": torch.zeros(6, 4)}
        >>> {k: v.shape for k, v in view_scores(out, num_views=3).items()}
        {'vc': torch.Size([2, 4]), 'cmc': torch.Size([2, 4]), 'fused': torch.Size([2, 4])}
    """
    scores = {name: fuse_views(value, num_views, view_fusion) for name, value in outputs.items()
              if name != FUSED and torch.is_tensor(value) and value.ndim == 2}
    fused = fuse_heads(scores, heads)
    if fused is not None:
        scores[FUSED] = fused
    return scores


def eval_options(recipe) -> dict:
    """The keyword arguments of `evaluate` that a recipe's ``eval`` section and precision set.

    Example:
        >>> evaluate(model, loader, **eval_options(recipe))  # doctest: +SKIP
    """
    section = recipe.eval
    return {"heads": section.heads, "precision": recipe.precision,
            "view_fusion": getattr(section, "view_fusion", "mean_prob"),
            "fuse_heads": list(getattr(section, "fuse_heads", FUSE_HEADS))}


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
    view_fusion: str = "mean_prob",
    fuse_heads: Sequence[str] = FUSE_HEADS,
) -> dict[str, float]:
    """Top-1/top-5 (percent) per head and fused over `loader`, reduced across ranks.

    Args:
        model: in eval mode ``model(video) -> {head: logits (N, C)}`` (a ``fused`` entry is
            recomputed, see `view_scores`).
        loader: batches ``{"video": (B, V, T, 3, H, W) or (B, T, 3, H, W), "label": (B,), "index": (B,)}``;
            a uint8 video is normalised on the device with the mean and std the model carries
            (`clipadapt.backbones.preprocess.carried_preprocess`), a float one is taken as normalised.
        heads: report only these (``None``: every classifying head and ``fused``).
        precision: autocast precision (``fp32``, ``bf16``, ``fp16``).
        progress: an optional callable ``progress(num_videos_done)``.
        clips_per_forward: run the model on at most this many clips at once (views of several
            videos share a forward); ``None``: one forward per loader batch.
        view_fusion: how the views of a video are fused per head: ``mean_prob``,
            ``mean_logit`` or ``max`` (`fuse_views`).
        fuse_heads: the heads averaged into ``fused`` (those the model has).

    Returns:
        ``{"<head>/top1": ..., "<head>/top5": ..., "num_videos": N, "num_classes": C, "bad_samples": B}``;
        a video that the distributed sampler repeated to even out the ranks is counted once;
        ``bad_samples`` sums the batches' ``"bad"`` fields (unreadable videos replaced) over all ranks.

    Example:
        >>> evaluate(model, loader, heads=["vc", "fused"])  # doctest: +SKIP
        {'vc/top1': ..., 'vc/top5': ..., 'fused/top1': ..., 'fused/top5': ..., 'num_videos': ..., 'num_classes': ..., 'bad_samples': ...}
    """
    if view_fusion not in VIEW_FUSIONS:
        raise ValueError(f"view_fusion {view_fusion!r} is not one of {VIEW_FUSIONS}")
    device = device or next(model.parameters()).device
    preprocess = carried_preprocess(model)
    was_training = model.training
    model.eval()
    indices, hits, names, num_classes, bad = [], [], None, 0, 0
    for batch in loader:
        bad += int(torch.as_tensor(batch.get("bad", 0)).sum())
        video = normalize_video(batch["video"], device, preprocess.mean, preprocess.std)  # uint8 -> float, on the device
        if video.ndim == 5:  # one view: (B, T, 3, H, W)
            video = video.unsqueeze(1)
        labels = batch["label"].to(device)
        num_views = video.shape[1]
        outputs = _forward_in_chunks(model, rearrange(video, "b v t c h w -> (b v) t c h w"), clips_per_forward, precision, device)
        probs = view_scores(outputs, num_views, view_fusion, fuse_heads)
        if heads is not None:
            probs = {name: value for name, value in probs.items() if name in heads}
        names = names or sorted(probs, key=lambda n: (n == FUSED, n))
        num_classes = next(iter(probs.values())).shape[-1] if probs else 0
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
    metrics["num_videos"], metrics["num_classes"], metrics["bad_samples"] = len(kept), num_classes, bad
    return metrics
