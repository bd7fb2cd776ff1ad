"""The quickstart trained from its videos and from a frame store of them: the same accuracy.

Generates the quickstart's synthetic videos once, runs ``clipadapt run quickstart`` on them,
writes their frame stores with ``clipadapt prepare`` (frames keep their 32×32 size, JPEG
quality 90) and runs the quickstart again on the stores (``data.dataset=list``), then prints
both test accuracies of both variants side by side; with several ``--seeds``, once per training
seed on the same videos, and their means.

    python benchmarks/store_quickstart.py [--out runs/store_quickstart] [--seeds 0 1 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402


def compare(out_dir: str | Path, overrides: list[str] = (), quality: int = 90, console=None,
            data_dir: str | Path | None = None) -> dict:
    """``{"videos": {variant: {top1, top5}}, "frame_store": {...}}`` of the quickstart trained
    from its videos and from their frame stores, with the same overrides and seed. The videos
    are generated in `data_dir` (default ``out_dir/data``; an existing identical set is reused)."""
    from rich.console import Console

    from clipadapt.recipes import load_recipe
    from clipadapt.data import prepare, synthetic
    from clipadapt.engine.run import run

    console = console or Console()
    out_dir = Path(out_dir)
    recipe = load_recipe("quickstart", list(overrides))
    data = synthetic.generate(Path(data_dir) if data_dir else out_dir / "data", **recipe.data.synthetic)
    from_videos = run("quickstart", [*overrides, f"data.root={data.root}", f"output_dir={out_dir / 'videos'}"], console=console)
    store = out_dir / "store"
    train = prepare(data.train_list, store, root=data.root, label_map=data.label_file, quality=quality, console=console)
    test = prepare(data.test_list, store, root=data.root, label_map=data.label_file, quality=quality, console=console)
    if train.bad or test.bad:
        raise RuntimeError(f"bad videos while preparing the store: {sorted({**train.bad, **test.bad})}")
    store_overrides = ["data.dataset=list", f"data.root={store}", f"data.train_list={train.list_file}",
                       f"data.val_list={test.list_file}", f"data.test_list={test.list_file}", f"data.label_map={train.label_map}",
                       f"data.num_classes={len(data.classnames)}"]
    from_store = run("quickstart", [*overrides, *store_overrides, f"output_dir={out_dir / 'frame_store'}"], console=console)
    return {"videos": from_videos, "frame_store": from_store, "store_gib_per_hour": train.gib_per_hour}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/store_quickstart")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the frame store")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="training seeds (recipe key `seed`: random weights, adapters, order); the videos stay the same")
    parser.add_argument("--json", default=None, help="result file (default benchmarks/results/store_quickstart.json)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. schedule.epochs=2")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console()
    runs = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}" if len(args.seeds) > 1 else Path(args.out)
        runs.append({"seed": seed, **compare(out, [*args.overrides, f"seed={seed}"], quality=args.quality, console=console,
                                             data_dir=Path(args.out) / "data")})
    variants = [name for name, scores in runs[0]["videos"].items() if isinstance(scores, dict)]  # not "seconds"
    mean = {source: {variant: sum(run[source][variant]["top1"] for run in runs) / len(runs) for variant in variants}
            for source in ("videos", "frame_store")}
    table = Table(title=f"quickstart test top-1 from the videos and from their frame store (JPEG quality {args.quality})")
    for column in ("seed", "variant", "videos", "frame store"):
        table.add_column(column)
    for run in [*runs, {"seed": "mean", **{source: {v: {"top1": mean[source][v]} for v in variants} for source in mean}}]:
        for variant in variants:
            table.add_row(str(run["seed"]), variant, *(f"{100 * run[source][variant]['top1']:.1f}%" for source in ("videos", "frame_store")))
    console.print(table)
    result = {"runs": runs, "mean_top1": mean, "quality": args.quality, "overrides": args.overrides}
    path = write_json("store_quickstart", result, args.json)
    console.print(f"wrote {path}")
    print(json.dumps({"mean_top1": mean}))


if __name__ == "__main__":
    main()
