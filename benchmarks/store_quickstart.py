"""The quickstart trained from its videos and from a frame store of them: the same accuracy.

Generates the quickstart's synthetic videos once, runs ``clipadapt run quickstart`` on them,
writes their frame stores with ``clipadapt prepare`` (frames keep their 32×32 size, JPEG
quality 90) and runs the quickstart again on the stores (``data.dataset=list``), then prints
both test accuracies of both variants side by side.

    python benchmarks/store_quickstart.py [--out runs/store_quickstart] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402


def compare(out_dir: str | Path, overrides: list[str] = (), quality: int = 90, console=None) -> dict:
    """``{"videos": {variant: {top1, top5}}, "frame_store": {...}}`` of the quickstart trained
    from its videos and from their frame stores, with the same overrides and seed."""
    from rich.console import Console

    from clipadapt.config import load_recipe
    from clipadapt.data import prepare, synthetic
    from clipadapt.engine.run import run

    console = console or Console()
    out_dir = Path(out_dir)
    recipe = load_recipe("quickstart", list(overrides))
    data = synthetic.generate(out_dir / "data", **recipe.data.synthetic)
    from_videos = run("quickstart", [*overrides, f"data.root={data.root}", f"output_dir={out_dir / 'videos'}"], console=console)
    store = out_dir / "store"
    train = prepare(data.train_list, store, root=data.root, label_map=data.label_file, quality=quality, console=console)
    test = prepare(data.test_list, store, root=data.root, label_map=data.label_file, quality=quality, console=console)
    if train.bad or test.bad:
        raise RuntimeError(f"bad videos while preparing the store: {sorted({**train.bad, **test.bad})}")
    store_overrides = ["data.dataset=list", f"data.root={store}", f"data.train_list={train.list_file}",
                       f"data.val_list={test.list_file}", f"data.test_list={test.list_file}", f"data.label_map={train.label_map}"]
    from_store = run("quickstart", [*overrides, *store_overrides, f"output_dir={out_dir / 'frame_store'}"], console=console)
    return {"videos": from_videos, "frame_store": from_store, "store_gib_per_hour": train.gib_per_hour}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/store_quickstart")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the frame store")
    parser.add_argument("--json", default=None, help="result file (default benchmarks/results/store_quickstart.json)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. schedule.epochs=2")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console()
    result = compare(args.out, args.overrides, quality=args.quality, console=console)
    table = Table(title="quickstart test accuracy: from the videos vs from their frame store")
    for column in ("variant", "videos top-1", "frame store top-1", "videos top-5", "frame store top-5"):
        table.add_column(column)
    for variant in (name for name, scores in result["videos"].items() if isinstance(scores, dict)):  # not "seconds"
        a, b = result["videos"][variant], result["frame_store"][variant]
        table.add_row(variant, f"{100 * a['top1']:.1f}%", f"{100 * b['top1']:.1f}%", f"{100 * a['top5']:.1f}%", f"{100 * b['top5']:.1f}%")
    console.print(table)
    path = write_json("store_quickstart", {**result, "overrides": args.overrides}, args.json)
    console.print(f"wrote {path}")
    print(json.dumps({"videos": result["videos"], "frame_store": result["frame_store"]}))


if __name__ == "__main__":
    main()
