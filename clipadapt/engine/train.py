"""The training loop: DDP, mixed precision, gradient accumulation, per-iteration schedule,
progress bars, evaluation, best/last checkpoints and exact resumption.

A run killed at any moment and resumed ends with the same weights as an uninterrupted one: the
state (weights, optimiser, schedule, scaler, every rank's RNG, position in the epoch) is saved at
each epoch end and every ``schedule.checkpoint_every`` optimiser steps, the loader gives the same
order for (seed, epoch), and a resumed epoch skips the batches already consumed without loading them.

Example:
    >>> from clipadapt.engine import Trainer
    >>> summary = Trainer(model, recipe, train_loader, val_loader).fit()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from clipadapt.data.transforms import normalize_video
from clipadapt.sets import check_active_training
from clipadapt.terminal import print_table

from . import distributed
from .checkpoint import (
    NonFiniteStateError,
    check_finite_model,
    checkpoint_dir,
    find_resume,
    get_rng_state,
    load_checkpoint,
    model_record,
    output_dir_lock,
    remove_orphan_tmp_files,
    restore_training_state,
    save_checkpoint,
    seed_everything,
)
from .evaluate import eval_options, evaluate
from .host_memory import retain_freed_memory
from .metrics import MetricLogger
from .optim import build_optimizer
from .precision import autocast, grad_scaler
from .schedule import build_scheduler

__all__ = ["Trainer", "NonFiniteLossError", "TrainingInterrupted", "per_rank_batch_size"]


class NonFiniteLossError(RuntimeError):
    """The loss or the weights became NaN or infinite; the run stopped and the last finite checkpoint stays."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training at a step boundary after saving ``path`` (``step`` optimiser steps)."""

    def __init__(self, path, step: int):
        super().__init__(f"interrupted: saved {path} at step {step}")
        self.path, self.step = path, step


def per_rank_batch_size(batch_size: int, accumulate: int = 1, world_size: int | None = None) -> int:
    """The loader batch of one rank for a global `batch_size` split over ranks and accumulation steps.

    Example:
        >>> per_rank_batch_size(72, accumulate=2, world_size=4)
        9
    """
    world_size = world_size or distributed.world_size()
    parts = world_size * accumulate
    if batch_size % parts:
        raise ValueError(
            f"data.batch_size {batch_size} is not divisible by {world_size} rank(s) × data.accumulate {accumulate}; "
            f"use a multiple of {parts}"
        )
    return batch_size // parts


DATA_BOUND = 0.1  # the epoch summary says "data-bound" from this fraction of the iteration spent waiting


class _StepTiming:
    """Seconds per iteration spent waiting for the batch (``data_time``, as mmaction2 logs it)
    and computing the step (``step_time``: transfer, forward, backward, optimiser)."""

    def __init__(self):
        self.data = self.step = 0.0
        self.count = 0
        self.logged = (0.0, 0.0, 0)
        self.last_data = self.last_step = float("nan")

    def add(self, data: float, step: float) -> None:
        self.data, self.step, self.count = self.data + data, self.step + step, self.count + 1
        self.last_data, self.last_step = data, step

    def since_last_log(self) -> dict[str, float]:
        data, step, count = self.data - self.logged[0], self.step - self.logged[1], self.count - self.logged[2]
        self.logged = (self.data, self.step, self.count)
        return {"data_time": data / max(count, 1), "step_time": step / max(count, 1)}

    def epoch(self) -> dict[str, float]:
        count = max(self.count, 1)
        return {"data_time": self.data / count, "step_time": self.step / count,
                "data_fraction": self.data / max(self.data + self.step, 1e-12)}


class _SkipSampler(Sampler):
    """The keys of `sampler` after the first `skip` (a resumed epoch)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        iterator = iter(self.sampler)
        for _ in range(self.skip):
            next(iterator, None)
        return iterator

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _without_first_batches(loader, skip: int):
    """An iterable over `loader`'s batches after the first `skip`, not loading the skipped ones
    when `loader` is a :func:`clipadapt.data.build_loader` loader."""
    inner = getattr(loader, "loader", None)
    if skip == 0 or not isinstance(inner, DataLoader) or inner.batch_sampler is None:
        return loader if skip == 0 else (batch for i, batch in enumerate(loader) if i >= skip)
    workers = inner.num_workers
    return DataLoader(
        inner.dataset,
        batch_size=inner.batch_size,
        sampler=_SkipSampler(inner.sampler, skip * inner.batch_size),
        num_workers=workers,
        collate_fn=inner.collate_fn,
        pin_memory=inner.pin_memory,
        drop_last=inner.drop_last,
        worker_init_fn=inner.worker_init_fn,
        prefetch_factor=inner.prefetch_factor if workers else None,
        timeout=inner.timeout,
        multiprocessing_context=inner.multiprocessing_context,
    )


def _iterate_keeping_rng(batches):
    """Iterate `batches` without the draw a DataLoader iterator takes from the global torch RNG,
    so a resumed epoch (a new iterator mid-way) sees the same random numbers as an unbroken one.
    Clips depend on (seed, epoch, index) only, not on that draw."""
    state = torch.get_rng_state()
    iterator = iter(batches)
    torch.set_rng_state(state)
    return iterator


class Trainer:
    """Trains a model that follows the ``VideoCLIP`` interface with the settings of a recipe.

    Args:
        model: ``model(video, labels) -> {"loss", "losses": {head: loss}}`` in train mode,
            ``model(video) -> {head: logits, "fused": probs}`` in eval mode, plus
            ``param_groups(weight_decay)``, ``trainable_state_dict()``, ``load_trainable_state_dict(sd)``.
        recipe: a :class:`clipadapt.recipes.Recipe` (optim, schedule, precision, eval, data.accumulate,
            output_dir, seed, resume).
        train_loader: batches ``{"video": (B, T, 3, H, W), "label": (B,), "bad": (B,)}`` with
            ``set_epoch(epoch)`` (see :func:`clipadapt.data.build_loader`), B per rank.
        val_loader: evaluation batches (all views of a video together), or None.
        device: defaults to ``cuda:LOCAL_RANK`` or the CPU.
        progress: show rich progress bars (rank 0, on a terminal only: piped output gets one
            line per epoch).
        log_every: optimiser steps between ``train`` records in ``metrics.jsonl``.
        clock: seconds as a float, read around each batch for ``data_time``, ``step_time``, the
            speed and ``samples_per_s`` (``time.perf_counter``; a test passes a fake one so the
            data-bound verdict does not depend on the machine's load).

    On the CPU, `fit` first calls `retain_freed_memory` (process-wide), so each step re-uses the
    memory pages of the one before instead of faulting in new ones.

    Example:
        >>> trainer = Trainer(model, recipe, train_loader, val_loader)  # doctest: +SKIP
        >>> summary = trainer.fit()  # doctest: +SKIP
        >>> summary["best_metric"], summary["best"]  # doctest: +SKIP
        ('fused/top1', ...)
    """

    def __init__(self, model, recipe, train_loader, val_loader=None, *, device: torch.device | None = None,
                 progress: bool = True, log_every: int = 10, find_unused_parameters: bool = False, console=None,
                 allow_recipe_change: bool = False, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.recipe, self.train_loader, self.val_loader = recipe, train_loader, val_loader
        self.device = device or distributed.device()
        self.model = model.to(self.device)
        self.rank, self.is_main = distributed.rank(), distributed.is_main()
        self.output_dir = Path(recipe.output_dir)
        self.accumulate = recipe.data.accumulate
        self.num_batches = len(train_loader)
        if self.num_batches == 0:
            raise ValueError("the training loader yields no batch; check data.train_list and data.batch_size")
        self.steps_per_epoch = math.ceil(self.num_batches / self.accumulate)
        # an evaluation forward holds as many clips as a training batch, whatever the views per video
        self.eval_clips_per_forward = getattr(getattr(train_loader, "loader", None), "batch_size", None)
        check_active_training(self.model)
        self.optimizer = build_optimizer(self.model, recipe.optim)
        self.scheduler = build_scheduler(
            self.optimizer, steps_per_epoch=self.steps_per_epoch, epochs=recipe.schedule.epochs,
            warmup_epochs=recipe.schedule.warmup_epochs, min_lr=recipe.schedule.min_lr,
        )
        self.scaler = grad_scaler(recipe.precision, self.device)
        self.network = self.model
        if distributed.world_size() > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        # per-sample random choices (CMLM masking) keyed by dataset index stay the same under DDP
        self.pass_sample_ids = "sample_ids" in inspect.signature(self.model.forward).parameters
        self.progress, self.log_every, self.console = progress and self.is_main, log_every, console
        self.epoch = self.batch = self.step = 0
        self.best: float | None = None
        self.best_metric: str | None = None
        self.running = self._fresh_running()
        self.logger: MetricLogger | None = None
        self.allow_recipe_change = allow_recipe_change
        self._record: dict | None = None  # what identifies the model (frozen tensors do not change)
        self._stop_requested = False

    # -- state ---------------------------------------------------------------------------------

    @staticmethod
    def _fresh_running() -> dict:
        return {"loss_sum": 0.0, "batches": 0, "bad_samples": 0, "head_sums": {}}

    def _recipe_dict(self) -> dict:
        return self.recipe.to_dict() if hasattr(self.recipe, "to_dict") else dict(self.recipe)

    def save(self, name: str) -> Path | None:
        """Write ``checkpoints/<name>.pt`` (rank 0; every rank contributes its RNG state).

        A state holding NaN or inf is never written: :class:`NonFiniteLossError` names the last
        finite checkpoint instead (every rank raises, their weights being the same)."""
        try:
            check_finite_model(self.model, self.optimizer)
        except NonFiniteStateError as error:
            raise NonFiniteLossError(f"the weights became non-finite by step {self.step}, epoch {self.epoch + 1}: {error}; "
                                     f"stopped without writing {name}.pt, last finite checkpoint: "
                                     f"{find_resume(self.output_dir) or 'none'}") from None
        rng = distributed.all_gather_object(get_rng_state())
        if not self.is_main:
            return None
        if self._record is None:
            self._record = model_record(self.model, self._recipe_dict())
        return save_checkpoint(
            checkpoint_dir(self.output_dir) / f"{name}.pt", model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, epoch=self.epoch, batch=self.batch, step=self.step,
            best=self.best, recipe=self._recipe_dict(), rng=rng, record=self._record,
            extra={"running": self.running, "best_metric": self.best_metric,
                   "classnames": list(getattr(self.model, "classnames", None) or [])},
        )

    def resume_path(self) -> Path | None:
        """The checkpoint ``recipe.resume`` points to (``auto``: ``output_dir/checkpoints/last.pt`` if any)."""
        resume = self.recipe.resume
        if resume is None:
            return None
        return find_resume(self.output_dir) if resume == "auto" else Path(resume)

    def resume(self, path: str | Path) -> None:
        """Continue from checkpoint `path` (weights, optimiser, schedule, scaler, RNG, position)."""
        state = load_checkpoint(path)
        restore_training_state(state, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                               scaler=self.scaler, recipe=self._recipe_dict(), path=path, rank=self.rank,
                               allow_recipe_change=self.allow_recipe_change)
        self.epoch, self.batch, self.step, self.best = state["epoch"], state["batch"], state["step"], state["best"]
        self.running = state["extra"].get("running", self._fresh_running())
        self.best_metric = state["extra"].get("best_metric")

    # -- loop ----------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to ``schedule.epochs`` (resuming as ``recipe.resume`` says) and return a summary:
        ``{"step", "epochs", "best", "best_metric", "eval": last metrics, "history": epoch records}``.

        The output folder is locked for the run (:func:`~clipadapt.engine.run_lock.output_dir_lock`);
        temporary files a killed run left there are removed first. Ctrl-C stops at the next
        optimiser step, saves ``last.pt`` and raises :class:`TrainingInterrupted`.
        """
        with output_dir_lock(self.output_dir), self._graceful_interrupt():
            if self.is_main:
                remove_orphan_tmp_files(checkpoint_dir(self.output_dir))
            return self._fit()

    @contextlib.contextmanager
    def _graceful_interrupt(self):
        """First Ctrl-C: finish the step, save, stop. Second: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        owner = os.getpid()

        def request_stop(signum, frame):
            if os.getpid() != owner:  # a DataLoader worker (forked with this handler): the main process answers
                return
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            self._print("Ctrl-C: saving a checkpoint after this step (press again to quit without saving)")

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop_now(self) -> bool:
        flag = torch.tensor(float(self._stop_requested))
        return bool(distributed.all_reduce_sum(flag) > 0) if distributed.is_distributed() else self._stop_requested

    def _fit(self) -> dict:
        if self.device.type == "cpu":
            retain_freed_memory()
        path = self.resume_path()
        if path is not None:
            self.resume(path)
        else:
            earlier = find_resume(self.output_dir)
            if earlier is not None:  # a fresh start would overwrite it: the user must say so
                raise FileExistsError(
                    f"{self.output_dir} holds the checkpoint {earlier} of an earlier run, which a fresh start "
                    "would overwrite: continue it with resume=auto, or start over with --retrain (clipadapt run), "
                    "which replaces it, or use another output_dir")
            seed_everything(self.recipe.seed + self.rank)
            stale = checkpoint_dir(self.output_dir) / "best.pt"
            if self.is_main and stale.is_file():  # a fresh run's best is its own, never an earlier run's
                stale.unlink()
                self._print(f"removed {stale} of an earlier run in {self.output_dir} (a fresh start)")
        self.logger = MetricLogger(self.output_dir, enabled=self.is_main, resume_step=self.step if path else None)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "recipe.yaml").write_text(yaml.safe_dump(self._recipe_dict(), sort_keys=False))
            if path is not None:
                self._print(f"resumed from {path} at epoch {self.epoch + 1}, batch {self.batch}, step {self.step}")
        last_eval: dict = {}
        if path is not None and self.epoch >= self.recipe.schedule.epochs:  # resumed a finished run
            last_eval = next(({k: v for k, v in r.items() if k not in ("kind", "step", "epoch", "time")}
                              for r in reversed(self.logger.records) if r["kind"] == "eval"), {})
        try:
            for epoch in range(self.epoch, self.recipe.schedule.epochs):
                self.train_epoch(epoch)
                last_eval = self._maybe_evaluate(epoch) or last_eval
                self.save("last")
        finally:
            self.logger.close()
        summary = {"step": self.step, "epochs": self.epoch, "best": self.best, "best_metric": self.best_metric,
                   "eval": last_eval, "history": [r for r in self.logger.records if r["kind"] in ("epoch", "eval")]}
        if self.is_main:
            self._print_summary()
        return summary

    def train_epoch(self, epoch: int) -> None:
        """One epoch from ``self.batch`` (0 unless resuming mid-epoch); ends at an epoch boundary."""
        self.network.train()
        self.train_loader.set_epoch(epoch)
        skip = self.batch
        if skip == 0:
            self.running = self._fresh_running()
        batches = _iterate_keeping_rng(_without_first_batches(self.train_loader, skip))
        every = self.recipe.schedule.checkpoint_every
        bar, task = self._progress_bar(epoch, skip)
        started, samples = self.clock(), 0
        timing = _StepTiming()
        try:
            for index in range(skip, self.num_batches):
                waited = self.clock()
                batch = next(batches)
                computed = self.clock()
                try:
                    losses = self._train_batch(batch, index)  # ends in .item(): the device has finished
                except RuntimeError as error:
                    raise distributed.explain_timeout(error) from None
                timing.add(computed - waited, self.clock() - computed)
                samples += len(batch["label"])
                self.running["bad_samples"] += int(torch.as_tensor(batch.get("bad", 0)).sum())
                self.running["loss_sum"] += losses["loss"]
                self.running["batches"] += 1
                for head, value in losses.items():
                    if head != "loss":
                        self.running["head_sums"][head] = self.running["head_sums"].get(head, 0.0) + value
                if bar is not None:
                    speed = (index + 1 - skip) / max(self.clock() - started, 1e-9)
                    bar.update(task, advance=1, loss=f"loss {losses['loss']:.4f}", lr=self.optimizer.param_groups[0]["lr"], speed=f"{speed:.2f} it/s",
                               timing=f"data {timing.last_data:.3f}s step {timing.last_step:.3f}s")
                step_done = (index + 1) % self.accumulate == 0 or index + 1 == self.num_batches
                if not step_done:
                    continue
                self.batch = index + 1
                if self.step % self.log_every == 0:
                    self.logger.log("train", {**losses, "lr": self.optimizer.param_groups[0]["lr"], **timing.since_last_log()},
                                    step=self.step, epoch=epoch)
                if self._stop_now():
                    raise TrainingInterrupted(self.save("last"), self.step)
                if every and self.step % every == 0 and self.batch < self.num_batches:
                    self.save("last")
        finally:
            if bar is not None:
                bar.stop()
        elapsed = self.clock() - started
        self.epoch, self.batch = epoch + 1, 0
        count = max(1, self.running["batches"])
        record = {"loss": self.running["loss_sum"] / count, "lr": self.optimizer.param_groups[0]["lr"],
                  "bad_samples": self.running["bad_samples"],
                  **{f"loss_{h}": s / count for h, s in self.running["head_sums"].items()},
                  "samples_per_s": samples * distributed.world_size() / max(elapsed, 1e-9), **timing.epoch()}
        self.logger.log("epoch", record, step=self.step, epoch=epoch)
        self._print(f"epoch {epoch + 1}/{self.recipe.schedule.epochs}: loss {record['loss']:.4f}, "
                    f"lr {record['lr']:.3g}, bad samples {record['bad_samples']}")
        if record["data_fraction"] >= DATA_BOUND:
            self._print(f"data-bound: {100 * record['data_fraction']:.0f}% of the step waiting for data "
                        f"(data {record['data_time']:.3f} s, compute {record['step_time']:.3f} s per iteration); "
                        "more data.num_workers or a frame store (clipadapt prepare) would help")

    def _train_batch(self, batch: dict, index: int) -> dict[str, float]:
        video = normalize_video(batch["video"], self.device)  # uint8 -> float, CLIP-normalised, on the device
        labels = batch["label"].to(self.device, non_blocking=True)
        group_start = index - index % self.accumulate
        group_size = min(self.accumulate, self.num_batches - group_start)
        step_now = index + 1 == group_start + group_size
        sync = contextlib.nullcontext() if step_now or self.network is self.model else self.network.no_sync()
        with sync:
            extra = {"sample_ids": batch["index"].to(self.device)} if self.pass_sample_ids and "index" in batch else {}
            with autocast(self.recipe.precision, self.device):
                out = self.network(video, labels, **extra)
            losses = self._reduced_losses(out, index)
            self.scaler.scale(out["loss"] / group_size).backward()
        if step_now:
            clip = self.recipe.optim.clip_grad
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
        return losses

    def _reduced_losses(self, out: dict, index: int) -> dict[str, float]:
        """Loss and head losses averaged over ranks; a non-finite one stops every rank."""
        heads = list(out.get("losses", {}))
        values = torch.stack([out["loss"].detach().float()] + [out["losses"][h].detach().float() for h in heads])
        values = distributed.all_reduce_mean(values)
        if not torch.isfinite(values).all():
            bad = [h for h, v in zip(heads, values[1:].tolist()) if not math.isfinite(v)] or ["total"]
            last = find_resume(self.output_dir)
            raise NonFiniteLossError(
                f"non-finite loss ({values[0].item()}) at step {self.step}, epoch {self.epoch + 1}, batch {index} "
                f"from head(s) {', '.join(bad)}; stopped, last finite checkpoint: {last or 'none'}"
            )
        return {"loss": values[0].item(), **{h: v for h, v in zip(heads, values[1:].tolist())}}

    def _maybe_evaluate(self, epoch: int) -> dict | None:
        every, epochs = self.recipe.eval.every, self.recipe.schedule.epochs
        due = (every > 0 and (epoch + 1) % every == 0) or epoch + 1 == epochs
        if self.val_loader is None or not due:
            return None
        metrics = evaluate(self.model, self.val_loader, device=self.device, **eval_options(self.recipe),
                           clips_per_forward=self.eval_clips_per_forward)
        self.logger.log("eval", metrics, step=self.step, epoch=epoch)
        self.logger.plot(title=getattr(self.recipe, "name", None))
        name = self.best_metric or ("fused/top1" if "fused/top1" in metrics else
                                    next((k for k in metrics if k.endswith("/top1")), None))
        if name is not None and name in metrics and (self.best is None or metrics[name] > self.best):
            self.best, self.best_metric = metrics[name], name
            self.save("best")
        top1 = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k.endswith("top1"))
        self._print(f"eval epoch {epoch + 1}: {top1} ({metrics.get('num_videos', 0)} videos, "
                    f"bad samples {metrics.get('bad_samples', 0)})")
        return metrics

    # -- output --------------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        if not self.is_main:
            return
        if self.console is None:
            from rich.console import Console

            self.console = Console()
        self.console.print(text, highlight=False, soft_wrap=True)  # a long line stays one line in a log

    def _progress_bar(self, epoch: int, skip: int):
        if self.console is None:
            from rich.console import Console

            self.console = Console()
        if not self.progress or not self.console.is_terminal:  # piped output gets the epoch lines only
            return None, None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[loss]} lr {task.fields[lr]:.3g}"),
            TextColumn("{task.fields[timing]}"), console=self.console, transient=True,
        )
        task = bar.add_task("train", total=self.num_batches, completed=skip, epoch=f"{epoch + 1}/{self.recipe.schedule.epochs}",
                            loss="", lr=self.optimizer.param_groups[0]["lr"], speed="", timing="")  # nothing measured before the first step
        bar.start()
        return bar, task

    def _print_summary(self) -> None:
        from rich.table import Table

        records = self.logger.records
        evals = {r["epoch"]: r for r in records if r["kind"] == "eval"}
        metric_names = sorted({k for r in evals.values() for k in r if k.endswith("top1")})
        epochs = self.epoch
        best = f", best {self.best_metric} {self.best:.2f}" if self.best is not None else ""
        table = Table(title=f"{getattr(self.recipe, 'name', 'run')}: {epochs} epoch{'s' * (epochs != 1)}, {self.step} steps{best}")
        for column in ["epoch", "loss", "lr", "bad (train)", "bad (val)", *metric_names]:
            table.add_column(column, justify="right")
        for record in (r for r in records if r["kind"] == "epoch"):
            row = [str(record["epoch"] + 1), f"{record['loss']:.4f}", f"{record['lr']:.3g}", str(record["bad_samples"]),
                   str(evals.get(record["epoch"], {}).get("bad_samples", ""))]
            row += [f"{evals[record['epoch']][m]:.2f}" if m in evals.get(record["epoch"], {}) else "" for m in metric_names]
            table.add_row(*row)
        if self.console is None:
            from rich.console import Console

            self.console = Console()
        print_table(table, self.console)
