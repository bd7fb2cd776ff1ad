"""uint8 until the device: batches cross the loader as uint8, the step normalises them; the
trainer shows how long each iteration waited for data; evaluation forwards are sized by clips.

The timing tests run the trainer on a `ManualClock` that the loader and the model move by the
seconds they stand for, so data_time, step_time and the data-bound verdict are exact whatever
the machine's load."""

import io
import json

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


class ManualClock:
    """Seconds that pass only when `advance` is called (the `clock` of a Trainer)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Uint8Videos(TinyVideos):
    """TinyVideos as uint8 clips; with a clock, each sample takes `seconds` of it to load."""

    def __init__(self, *args, clock: ManualClock | None = None, seconds: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock, self.seconds = clock, seconds

    def __getitem__(self, key):
        sample = super().__getitem__(key)
        if self.clock is not None:
            self.clock.advance(self.seconds)
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
    clock = ManualClock()
    loader = build_loader(Uint8Videos(size=8, clock=clock, seconds=0.05), 4, shuffle=False)
    output = io.StringIO()
    Trainer(TimedModel(clock, 0.01), recipe, loader, None, progress=False, log_every=1, clock=clock,
            console=Console(file=output, width=200)).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    epoch = next(r for r in records if r["kind"] == "epoch")
    assert len(train) == 2
    for record in train:  # 4 samples of 50 ms per batch, one forward of 10 ms
        assert record["data_time"] == pytest.approx(0.2) and record["step_time"] == pytest.approx(0.01)
    assert epoch["data_fraction"] == pytest.approx(0.2 / 0.21)
    assert epoch["samples_per_s"] == pytest.approx(8 / (2 * 0.21))
    assert "data-bound: 95% of the step waiting for data (data 0.200 s, compute 0.010 s per iteration)" in output.getvalue()


def test_a_fast_loader_is_not_called_data_bound(tmp_path):
    recipe = make_recipe(tmp_path, schedule={"epochs": 1, "warmup_epochs": 0}, eval={"every": 0})
    output = io.StringIO()
    clock = ManualClock()
    Trainer(TimedModel(clock, 0.05), recipe, build_loader(Uint8Videos(size=8), 4), None, progress=False, clock=clock,
            console=Console(file=output, width=200)).fit()
    epoch = next(r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch")
    assert epoch["data_time"] == 0 and epoch["step_time"] == pytest.approx(0.05)
    assert "data-bound" not in output.getvalue()


class TimedModel(TinyVideoModel):
    """A model whose training forward takes `seconds` of `clock`."""

    def __init__(self, clock: ManualClock, seconds: float):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def forward(self, video, labels=None):
        self.clock.advance(self.seconds)
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
