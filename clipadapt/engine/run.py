"""What ``clipadapt run`` does: build the data and model of a recipe, train, evaluate, report.

A recipe with a ``compare`` section trains each variant (the recipe plus that variant's
``key=value`` overrides) in its own folder under ``output_dir`` and writes their test
accuracies side by side to ``<output_dir>/summary.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clipadapt.terminal import print_table

from clipadapt.recipes import Recipe, dataset_source, load_recipe, require_data
from clipadapt.recipes.files import read_yaml_file
from clipadapt.engine import distributed
from clipadapt.engine.checkpoint import CheckpointMismatchError, checkpoint_dir, output_dir_lock, recipe_diff, seed_everything
from clipadapt.engine.evaluate import eval_batch_videos, eval_options, evaluate
from clipadapt.engine.train import Trainer, per_rank_batch_size


def _loaders(recipe: Recipe, train_set, eval_set, distributed_run: bool):
    from clipadapt.data import build_loader

    batch = per_rank_batch_size(recipe.data.batch_size, recipe.data.accumulate)
    workers = recipe.data.num_workers
    train = build_loader(train_set, batch, shuffle=True, num_workers=workers, seed=recipe.seed,
                         distributed=distributed_run, drop_last=len(train_set) >= 2 * batch)
    evaluation = build_loader(eval_set, eval_batch_videos(batch, eval_set.num_views), shuffle=False, num_workers=workers,
                              seed=recipe.seed, distributed=distributed_run)
    return train, evaluation


def headline(metrics: dict) -> dict:
    """Top-1/top-5 of the fused prediction (or the only head) as fractions in [0, 1]."""
    name = "fused" if "fused/top1" in metrics else next((k[: -len("/top1")] for k in metrics if k.endswith("/top1")), None)
    if name is None:
        return {}
    return {"top1": metrics[f"{name}/top1"] / 100.0, "top5": metrics[f"{name}/top5"] / 100.0, "head": name}


def finished_results(recipe: Recipe, *, allow_recipe_change: bool = False) -> dict | None:
    """The ``results.json`` of a run of `recipe` that already finished in its ``output_dir``, or None.

    A finished run trained with a recipe that differs in what shapes the model or the optimisation
    state is refused (it is not this recipe's result) unless `allow_recipe_change`.

    Example:
        >>> finished_results(load_recipe("quickstart", ["output_dir=/tmp/none"])) is None  # doctest: +SKIP
        True
    """
    folder = Path(recipe.output_dir)
    path = folder / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not readable JSON ({error}); delete it or pass --retrain") from None
    stored = folder / "recipe.yaml"
    previous = read_yaml_file(stored, what="stored recipe") or {} if stored.is_file() else {}
    if (previous.get("schedule") or {}).get("epochs", recipe.schedule.epochs) != recipe.schedule.epochs:
        return None  # more (or fewer) epochs asked for: not finished for this recipe
    if previous and not allow_recipe_change:
        changes = recipe_diff(previous, recipe.to_dict())
        if changes:
            raise CheckpointMismatchError(
                f"{folder} holds a finished run of another recipe: {'; '.join(changes)} (use another output_dir, "
                "or pass --retrain to train this recipe there)")
    return results


def _clear_finished(folder: Path) -> None:
    """Remove what a finished run left that a retrained one must not inherit."""
    for name in ("results.json", "summary.json"):
        (folder / name).unlink(missing_ok=True)
    for name in ("last.pt", "best.pt"):
        (checkpoint_dir(folder) / name).unlink(missing_ok=True)


def train_and_evaluate(recipe: Recipe, console: Console | None = None, *, retrain: bool = False,
                       allow_recipe_change: bool = False) -> dict:
    """Train `recipe` and evaluate it on its test split; returns and writes ``results.json``.

    A run already finished in ``output_dir`` is not trained again: its results are printed and
    returned, unless `retrain` (then its checkpoints and results are replaced). The output folder
    is locked for the run.
    """
    console = console or Console()
    require_data(recipe)
    distributed_run = distributed.init_distributed()
    with output_dir_lock(recipe.output_dir):
        if not retrain:
            done = finished_results(recipe, allow_recipe_change=allow_recipe_change)
            if done is not None:
                if distributed.is_main():
                    top1 = "-" if done.get("top1") is None else f"{100 * done['top1']:.2f}%"
                    console.print(f"{recipe.output_dir} is a finished run (results.json): top-1 {top1} after "
                                  f"{done.get('steps')} steps; pass --retrain to train it again", highlight=False)
                return done
        elif distributed.is_main():
            _clear_finished(Path(recipe.output_dir))
        distributed.barrier()
        if retrain:
            recipe.resume = None
        return _train_and_evaluate(recipe, console, distributed_run, allow_recipe_change)


def _train_and_evaluate(recipe: Recipe, console: Console, distributed_run: bool, allow_recipe_change: bool) -> dict:
    from clipadapt.data.recipe import build_dataset
    from clipadapt.models import build_from_recipe

    started = time.perf_counter()
    seed_everything(recipe.seed)
    train_set = build_dataset(recipe, "train")
    eval_set = build_dataset(recipe, "val")
    model = build_from_recipe(recipe, train_set.classnames)
    train_loader, eval_loader = _loaders(recipe, train_set, eval_set, distributed_run)
    trainer = Trainer(model, recipe, train_loader, eval_loader, console=console, allow_recipe_change=allow_recipe_change)
    summary = trainer.fit()
    metrics = summary.get("eval") or {}
    epochs = [r for r in summary.get("history", []) if r["kind"] == "epoch"]
    bad_samples = {"train": epochs[-1]["bad_samples"] if epochs else 0, "val": metrics.get("bad_samples", 0)}
    if dataset_source(recipe).has_test_split(recipe.data):
        test_set = build_dataset(recipe, "test")
        if test_set.entries != eval_set.entries:  # a separate test split
            _, test_loader = _loaders(recipe, train_set, test_set, distributed_run)
            metrics = evaluate(trainer.model, test_loader, device=trainer.device, **eval_options(recipe),
                               clips_per_forward=trainer.eval_clips_per_forward)
            bad_samples["test"] = metrics.get("bad_samples", 0)
    # samples replaced in the last pass over each split (train: the last epoch, on this rank)
    results = {"recipe": recipe.name, "metrics": metrics, **headline(metrics), "num_classes": len(train_set.classnames),
               "steps": summary.get("step"), "bad_samples": bad_samples,
               "seconds": round(time.perf_counter() - started, 1)}  # kept with the results: a rerun reports, not re-times
    if distributed.is_main():
        path = Path(recipe.output_dir) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
    return results


def run(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), console: Console | None = None, *,
        retrain: bool = False, allow_recipe_change: bool = False) -> dict:
    """``clipadapt run``: train and evaluate a recipe, or each of its ``compare`` variants.

    A finished run (``results.json`` in its folder) is reported, not retrained, unless `retrain`;
    `allow_recipe_change` lets a resumed run take a recipe that differs from its checkpoint's.

    With variants, ``<output_dir>/summary.json`` holds each variant's test top-1/top-5 (as
    fractions), its class count and the seconds its training and evaluation took (stored in its
    ``results.json``, so a rerun that finds a finished variant reports its time, not the rerun's),
    and their sum (``null`` where a variant finished before its time was recorded).

    Example:
        >>> run("quickstart")                        # doctest: +SKIP
        {'m2clip': {'top1': ..., 'top5': ..., 'num_classes': 4, 'seconds': ...}, 'frame_mean_baseline': {...}, 'seconds': ...}
    """
    console = console or Console()
    recipe = load_recipe(name_or_path, list(overrides))
    shared = []
    if dataset_source(recipe).generated:  # generated once, for all variants
        root = _synthetic_data(recipe, console)
        if not recipe.data.root:
            shared.append(f"data.root={root}")
    if not recipe.compare:
        return train_and_evaluate(recipe, console, retrain=retrain, allow_recipe_change=allow_recipe_change)
    base_dir = Path(recipe.output_dir)
    summary = {}
    for variant, variant_overrides in recipe.compare.items():
        console.rule(f"{variant}")
        variant_recipe = load_recipe(name_or_path, [*overrides, *shared, *variant_overrides, f"output_dir={base_dir / variant}"])
        variant_recipe.compare = {}
        variant_recipe.name = f"{recipe.name}/{variant}"
        result = train_and_evaluate(variant_recipe, console, retrain=retrain, allow_recipe_change=allow_recipe_change)
        summary[variant] = {"top1": result.get("top1"), "top5": result.get("top5"), "num_classes": result.get("num_classes"),
                            "seconds": result.get("seconds")}
    known = [result["seconds"] for result in summary.values() if result["seconds"] is not None]
    seconds = round(sum(known), 1) if len(known) == len(summary) else None
    if distributed.is_main():
        base_dir.mkdir(parents=True, exist_ok=True)
        (base_dir / "summary.json").write_text(json.dumps({**summary, "seconds": seconds}, indent=2))
        print_table(summary_table(recipe, summary), console)
        console.print(f"wrote {base_dir / 'summary.json'} ({_duration(seconds)} in all)", highlight=False)
    return {**summary, "seconds": seconds}


def summary_table(recipe: Recipe, summary: dict) -> Table:
    """The variants' test accuracies; top-5 only when there are more than 5 classes."""
    epochs = recipe.schedule.epochs
    table = Table(title=f"{recipe.name}: test accuracy of {', '.join(summary)} after {epochs} epoch{'s' * (epochs != 1)}")
    with_top5 = any((result.get("num_classes") or 0) > 5 for result in summary.values())
    for column in ("variant", "top-1", *(["top-5"] if with_top5 else []), "time"):
        table.add_column(column)
    for variant, result in summary.items():
        table.add_row(variant, _percent(result["top1"]), *([_percent(result["top5"])] if with_top5 else []),
                      _duration(result["seconds"]))
    return table


def _synthetic_data(recipe: Recipe, console: Console) -> Path:
    """Generate the recipe's synthetic dataset, or say that the one already there is reused."""
    from clipadapt.data.recipe import synthetic_root
    from clipadapt.data.synthetic import generate

    root = synthetic_root(recipe)
    distributed.init_distributed()  # so that only rank 0 writes the videos, the others wait
    if distributed.is_main():
        made = generate(root, **recipe.data.synthetic)
        what = "reusing the synthetic dataset already in" if made.reused else "generated the synthetic dataset in"
        console.print(f"{what} {root}", highlight=False, soft_wrap=True)
    distributed.barrier()
    return root


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}" if minutes else f"{rest} s"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
