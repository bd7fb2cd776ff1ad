"""Run logs: ``metrics.jsonl`` (one JSON record per line), TensorBoard when installed, and a PNG of
the loss and accuracy curves redrawn each epoch; plus top-k accuracy helpers.

Example:
    >>> import torch
    >>> from clipadapt.engine.metrics import topk_correct
    >>> topk_correct(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]), ks=(1,))
    {1: tensor([ True, False])}
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

__all__ = ["MetricLogger", "read_records", "topk_correct", "accuracy"]


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl``. A torn last line (a crash or a full disk mid-append) is
    dropped with a warning naming the file; a bad line before the last is an error naming it.

    Example:
        >>> read_records("/tmp/clipadapt-doc-run/metrics.jsonl")[0]["kind"]  # doctest: +SKIP
        'train'
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise OSError(error.errno, f"cannot read {path}: {error.strerror or error}") from None
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    records = []
    for position, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            if position == len(numbered) - 1:
                import warnings

                warnings.warn(f"{path}: dropped the torn last line {number} ({error})", stacklevel=2)
                break
            raise ValueError(f"{path}: line {number} is not a JSON record ({error}); "
                             "repair or remove that line to resume") from None
        records.append(record)
    return records


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, torch.Tensor]:
    """Per sample, whether the label is among the `k` highest scores (logits or probabilities).

    ``k`` larger than the number of classes counts every sample correct.

    Example:
        >>> topk_correct(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([1]), ks=(1, 2))
        {1: tensor([False]), 2: tensor([True])}
    """
    ranked = scores.topk(min(max(ks), scores.shape[-1]), dim=-1).indices  # (B, K)
    hits = ranked == labels.unsqueeze(-1)
    return {k: hits[:, :k].any(dim=-1) for k in ks}


def accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Top-k accuracies in percent.

    Example:
        >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]), ks=(1, 2))
        {1: 50.0, 2: 100.0}
    """
    return {k: 100.0 * hit.float().mean().item() for k, hit in topk_correct(scores, labels, ks).items()}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class MetricLogger:
    """Appends records to ``output_dir/metrics.jsonl``, mirrors numbers to TensorBoard when it is
    installed, and draws ``output_dir/curves.png``. Writes nothing when ``enabled`` is False (ranks
    other than 0).

    Args:
        output_dir: the run folder.
        enabled: whether this process writes.
        resume_step: when resuming, records after this optimiser step (written after the
            checkpoint that is resumed) are dropped from the file first.

    Example:
        >>> logger = MetricLogger("/tmp/clipadapt-doc-run")
        >>> logger.log("train", {"loss": 2.3}, step=10, epoch=0)
        >>> logger.close()
    """

    def __init__(self, output_dir: str | os.PathLike, *, enabled: bool = True, resume_step: int | None = None):
        self.output_dir, self.enabled = Path(output_dir), enabled
        self.path = self.output_dir / "metrics.jsonl"
        self.records: list[dict] = []
        self.writer = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            self.records = read_records(self.path)
            if resume_step is not None:
                self.records = [r for r in self.records if r.get("step", 0) <= resume_step]
            else:
                self.records = []
            with open(self.path, "w", encoding="utf-8") as file:
                file.writelines(json.dumps(r) + "\n" for r in self.records)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # TensorBoard is optional
            SummaryWriter = None
        if SummaryWriter is not None:
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"))

    def log(self, kind: str, values: dict, *, step: int, epoch: int) -> None:
        """Record `values` (numbers or strings) of `kind` (``train``, ``epoch``, ``eval``, ...)."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "epoch": int(epoch), "time": round(time.time(), 3), **values}
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if _finite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def plot(self, path: str | os.PathLike | None = None, title: str | None = None) -> Path | None:
        """Draw training loss and evaluation top-1 curves to ``curves.png`` (matplotlib, Agg);
        `title` (the run's name) heads the figure. Epochs are whole numbers and top-1 spans 0–100,
        so that a single evaluation point still reads."""
        if not self.enabled:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        path = Path(path or self.output_dir / "curves.png")
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
        train = [r for r in self.records if r["kind"] == "train" and _finite(r.get("loss"))]
        epochs = [r for r in self.records if r["kind"] == "epoch" and _finite(r.get("loss"))]
        if train:
            loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.5, label="train (steps)")
        if epochs:
            loss_ax.plot([r["step"] for r in epochs], [r["loss"] for r in epochs], marker="o", label="train (epoch mean)")
        loss_ax.set(xlabel="step", ylabel="loss", title="loss")
        evals = [r for r in self.records if r["kind"] == "eval"]
        for key in sorted({k for r in evals for k in r if k.endswith("top1")}):
            points = [(r["epoch"] + 1, r[key]) for r in evals if _finite(r.get(key))]
            acc_ax.plot(*zip(*points), marker="o", label=key)
        acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy", ylim=(0, 100))
        last_epoch = max([r["epoch"] + 1 for r in self.records if r["kind"] in ("epoch", "eval")], default=1)
        acc_ax.set_xlim(0.5, last_epoch + 0.5)
        acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (loss_ax, acc_ax):
            if ax.lines:
                ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
