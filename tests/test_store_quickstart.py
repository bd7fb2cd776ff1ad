"""A reduced quickstart trained from its videos and from their frame store learns the same:
the same epochs, nearly the same losses (JPEG changes the pixels slightly), test accuracy
reported for both (benchmarks/store_quickstart.py runs the full size)."""

import json
import sys
from pathlib import Path

import yaml
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from store_quickstart import compare  # noqa: E402

REDUCED = ["schedule.epochs=2", "data.synthetic.train_per_class=4", "data.synthetic.test_per_class=2",
           "data.batch_size=4", "data.num_workers=0", "compare={m2clip: []}"]


def epoch_losses(folder: Path) -> list[float]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "epoch"]


def test_the_quickstart_trains_from_a_frame_store_as_from_its_videos(tmp_path):
    result = compare(tmp_path, REDUCED, console=Console(quiet=True))
    assert set(result["videos"]) == set(result["frame_store"]) == {"m2clip", "seconds"}
    videos, store = epoch_losses(tmp_path / "videos" / "m2clip"), epoch_losses(tmp_path / "frame_store" / "m2clip")
    assert len(videos) == len(store) == 2
    for a, b in zip(videos, store):
        assert abs(a - b) < 0.05 * a, (videos, store)
    assert videos[1] < videos[0] and store[1] < store[0]
    recipe = yaml.safe_load((tmp_path / "frame_store" / "m2clip" / "recipe.yaml").read_text())
    assert recipe["data"]["dataset"] == "list" and recipe["data"]["train_list"].endswith("store/train.txt")
    assert Path(recipe["data"]["train_list"]).read_text().count(".frames") == 16
    assert 0 <= result["frame_store"]["m2clip"]["top1"] <= 1
