"""uint8 until the device: batches cross the loader as uint8, the step normalises them; the
trainer shows how long each iteration waited for data; evaluation forwards are sized by clips."""

import io
import json
import time

import pytest
import torch
from rich.console import Console
from test_engine import TinyVideoModel, TinyVideos, make_recipe

from clipadapt.data import build_loader, normalize_video
from clipadapt.engine import Trainer, evaluate
from clipadapt.engine.evaluate import eval_batch_videos

# CLIP's preprocessing constants as published with the OpenAI model (mean, std of RGB in [0, 1]).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def test_normalize_video_is_clip_preprocessing_written_out():
    video = torch.randint(0, 256, (2, 3, 3, 5, 4), dtype=torch.uint8)  # (B, T, 3, H, W)
    out = normalize_video(video, "cpu")
    for channel in range(3):
        expected = (video[:, :, channel].double() / 255 - OPENAI_MEAN[channel]) / OPENAI_STD[channel]
        assert torch.allclose(out[:, :, channel].double(), expected, atol=1e-5)
    assert out.dtype == torch.float32


def test_normalize_video_passes_float_through_and_refuses_other_types():
    already = torch.randn(1, 2, 3, 4, 4)
    assert normalize_video(already, "cpu") is already
    with pytest.raises(TypeError, match="uint8 .* or normalised float, got torch.int16"):
        normalize_video(already.to(torch.int16))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\); got \(1, 2, 4, 4, 3\)"):
        normalize_video(torch.zeros(1, 2, 4, 4, 3, dtype=torch.uint8))


class Uint8Videos(TinyVideos):
    """TinyVideos as uint8 clips, optionally slow to load (a data-bound loader)."""

    def __init__(self, *args, delay: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay = delay

    def __getitem__(self, key):
        sample = super().__getitem__(key)
        time.sleep(self.delay)
        return {**sample, "video": (sample["video"] * 40 + 128).clamp(0, 255).to(torch.uint8)}


class SeesInput(TinyVideoModel):
    def forward(self, video, labels=None):
        self.seen = video
        return super().forward(video, labels)


def test_the_training_step_normalises_uint8_batches_on_the_device(tmp_path):
    recipe = make_recipe(tmp_path, schedule={"epochs": 1, "warmup_epochs": 0}, eval={"every": 0})
    dataset = Uint8Videos(size=4)
    loader = build_loader(dataset, 4, shuffle=False)
    model = SeesInput()
    Trainer(model, recipe, loader, None, progress=False).fit()
    batch = next(iter(loader))
    assert batch["video"].dtype == torch.uint8  # what crosses the loader
    assert model.seen.dtype == torch.float32
    assert torch.allclose(model.seen, normalize_video(batch["video"]))


def test_metrics_and_summary_show_data_time_and_say_when_data_bound(tmp_path):
    recipe = make_recipe(tmp_path, schedule={"epochs": 1, "warmup_epochs": 0}, eval={"every": 0})
    loader = build_loader(Uint8Videos(size=8, delay=0.05), 4, shuffle=False)
    output = io.StringIO()
    Trainer(TinyVideoModel(), recipe, loader, None, progress=False, log_every=1,
            console=Console(file=output, width=200)).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    epoch = next(r for r in records if r["kind"] == "epoch")
    assert len(train) == 2 and all(r["data_time"] >= 4 * 0.05 for r in train)  # 4 samples of 50 ms per batch
    assert all(0 < r["step_time"] for r in train)
    assert epoch["data_fraction"] == pytest.approx(epoch["data_time"] / (epoch["data_time"] + epoch["step_time"]))
    assert "data-bound:" in output.getvalue() and "% of the step waiting for data" in output.getvalue()


def test_a_fast_loader_is_not_called_data_bound(tmp_path):
    recipe = make_recipe(tmp_path, schedule={"epochs": 1, "warmup_epochs": 0}, eval={"every": 0})
    output = io.StringIO()
    slow_step = SlowModel()
    Trainer(slow_step, recipe, build_loader(Uint8Videos(size=8), 4), None, progress=False,
            console=Console(file=output, width=200)).fit()
    assert "data-bound" not in output.getvalue()


class SlowModel(TinyVideoModel):
    def forward(self, video, labels=None):
        time.sleep(0.05)
        return super().forward(video, labels)


class CountsForwards(TinyVideoModel):
    def forward(self, video, labels=None):
        self.sizes.append(video.shape[0])
        return super().forward(video, labels)


def test_evaluation_forwards_are_sized_by_clips_and_give_the_same_metrics():
    model = CountsForwards().eval()
    loader = build_loader(Uint8Videos(size=7, views=3), eval_batch_videos(4, 3), shuffle=False)
    model.sizes = []
    whole = evaluate(model, loader)
    assert model.sizes == [6, 6, 6, 3]  # 2 videos × 3 views per loader batch
    model.sizes = []
    chunked = evaluate(model, loader, clips_per_forward=4)
    assert max(model.sizes) == 4 and sum(model.sizes) == 21
    assert chunked == pytest.approx(whole)
