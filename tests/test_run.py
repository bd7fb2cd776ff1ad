"""The recipe pipeline end to end on a reduced quickstart: run, eval, zeroshot, predict, flops."""

import json

import pytest
from typer.testing import CliRunner

from clipadapt.cli import app
from hang_guard import HANG_GUARD_S

runner = CliRunner()
SMALL = [
    "schedule.epochs=2",
    "data.synthetic.train_per_class=4",
    "data.synthetic.test_per_class=2",
    "data.batch_size=4",
    "data.num_workers=0",
]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    result = runner.invoke(app, ["run", "quickstart", *SMALL, f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_reduced_quickstart_trains_both_variants_and_writes_the_summary(quickstart):
    out, output = quickstart
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"m2clip", "frame_mean_baseline", "seconds"}
    test_videos = 4 * 2  # 4 classes, data.synthetic.test_per_class=2
    for variant in ("m2clip", "frame_mean_baseline"):
        scores = summary[variant]
        results = json.loads((out / variant / "results.json").read_text())
        assert scores["top1"] == results["top1"] == results["metrics"]["fused/top1"] / 100
        assert results["metrics"]["num_videos"] == test_videos and scores["num_classes"] == 4
        assert abs(scores["top1"] * test_videos - round(scores["top1"] * test_videos)) < 1e-9  # whole videos
        assert isinstance(scores["seconds"], float)  # its value: test_the_summary_times_each_variant_and_the_whole_run
        assert (out / variant / "checkpoints" / "last.pt").is_file()
        assert (out / variant / "metrics.jsonl").is_file()
        assert results["bad_samples"] == {"train": 0, "val": 0}


def test_the_summary_times_each_variant_and_the_whole_run(tmp_path, monkeypatch):
    """Each variant's seconds are those its results recorded; the whole run's are their sum (stand-ins
    for the data generation and the training, so no duration is measured here)."""
    from clipadapt.engine import run as run_module

    variant_seconds = iter([1.5, 2.5])

    def train(recipe, console, **options):
        return {"top1": 0.5, "top5": 1.0, "num_classes": 4, "seconds": next(variant_seconds)}

    monkeypatch.setattr(run_module, "_synthetic_data", lambda recipe, console: tmp_path / "data")
    monkeypatch.setattr(run_module, "train_and_evaluate", train)
    summary = run_module.run("quickstart", [f"output_dir={tmp_path}"])
    assert [summary[variant]["seconds"] for variant in ("m2clip", "frame_mean_baseline")] == [1.5, 2.5]
    assert summary["seconds"] == 4.0
    assert json.loads((tmp_path / "summary.json").read_text())["seconds"] == 4.0


def test_quickstart_output_reads_well_when_piped(quickstart):
    _, output = quickstart
    lines = output.splitlines()
    assert lines[0].startswith("generated the synthetic dataset in") or lines[0].startswith("reusing the synthetic dataset")
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(epochs) == 4 and all(lines[i + 1].strip() for i in epochs)  # no blank line after an epoch line
    assert "nan" not in output.lower()
    words = " ".join(output.split())  # table titles wrap at the console's width
    assert "quickstart: test accuracy of m2clip, frame_mean_baseline after 2 epochs" in words
    assert "quickstart/m2clip: 2 epochs" in words and "quickstart/frame_mean_baseline: 2 epochs" in words
    assert "top-5" not in output  # 4 classes: top-5 would always be 100%
    assert "…" not in output  # piped: tables are printed whole, not cut at 80 columns
    evals = [line for line in lines if line.startswith("eval epoch ")]
    assert evals and all(line.rstrip().endswith(")") for line in evals)  # one line each, not wrapped


def test_a_second_run_says_it_reuses_the_generated_data(quickstart, tmp_path):
    out, _ = quickstart
    result = runner.invoke(app, ["run", "quickstart", *SMALL, "schedule.epochs=1", "compare={}", f"data.root={out / 'data'}",
                                 f"output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"reusing the synthetic dataset already in {out / 'data'}")


def test_eval_prints_the_accuracy_computed_by_hand_from_the_model(quickstart):
    import torch

    from clipadapt.recipes import load_recipe
    from clipadapt.data.recipe import build_dataset
    from clipadapt.data.transforms import normalize_video
    from clipadapt.engine.tasks import load_trained

    out, _ = quickstart
    checkpoint = out / "m2clip" / "checkpoints" / "last.pt"
    result = runner.invoke(app, ["eval", "quickstart", str(checkpoint), *SMALL, f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    model = load_trained(checkpoint)
    dataset = build_dataset(load_recipe("quickstart", [*SMALL, f"output_dir={out}"]), "test")
    hits = {"vc": 0, "cmc": 0, "fused": 0}
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            video = normalize_video(item["video"], torch.device("cpu"))  # uint8 -> CLIP-normalised float
            logits = model(video.reshape(-1, *video.shape[-4:]))  # views as the batch: (V, T, 3, H, W)
            probs = {"vc": logits["vc"].softmax(-1), "cmc": logits["cmc"].softmax(-1)}
            probs["fused"] = (probs["vc"] + probs["cmc"]) / 2
            for head, p in probs.items():
                hits[head] += int(p.mean(0).argmax()) == int(item["label"])
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.output.splitlines() if line.count("│") == 3}
    for head, count in hits.items():
        assert rows[head] == f"{100 * count / len(dataset):.2f}", (head, rows)


def test_zeroshot_on_the_test_classes(quickstart):
    out, _ = quickstart
    result = runner.invoke(app, ["zeroshot", "quickstart", str(out / "m2clip" / "checkpoints" / "last.pt"), *SMALL, f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    assert "zero-shot" in result.output and "population std" in result.output
    assert "± 0.00 (mean ± population std over 1 split(s))" in result.output  # one split: no spread


def test_predict_names_classes_of_video_files(quickstart):
    out, _ = quickstart
    video = next((out / "data" / "videos").glob("*.mp4"))
    checkpoint = str(out / "m2clip" / "checkpoints" / "last.pt")

    def table(args):
        result = runner.invoke(app, ["predict", checkpoint, str(video), *args])
        assert result.exit_code == 0, result.output
        return [(line.split("│")[1].strip(), float(line.split("│")[2])) for line in result.output.splitlines()
                if line.count("│") == 3 and line.split("│")[1].strip() != "class"]

    two, every = table(["--top-k", "2"]), table(["--top-k", "10"])
    assert len(two) == 2 and two == every[:2]
    assert len(every) == 4 and len({name for name, _ in every}) == 4  # all 4 classes, each once
    assert [p for _, p in every] == sorted((p for _, p in every), reverse=True)
    assert abs(sum(p for _, p in every) - 1) < 0.003
    zero_shot = table(["--classes", "a square spinning,a dot falling"])
    assert {name for name, _ in zero_shot} == {"a square spinning", "a dot falling"}
    assert abs(sum(p for _, p in zero_shot) - 1) < 0.003


def test_python_predict_on_a_loaded_run_samples_its_clips_as_the_run_did(quickstart):
    import torch

    from clipadapt import load_trained
    from clipadapt.data.recipe import build_dataset
    from clipadapt.data.transforms import normalize_video
    from clipadapt.engine.tasks import predict
    from clipadapt.recipes import load_recipe

    out, _ = quickstart
    model = load_trained(out / "m2clip")  # a 32-pixel model: the function's old 224-pixel default crashed
    dataset = build_dataset(load_recipe("quickstart", [*SMALL, f"output_dir={out}"]), "test")
    item = dataset[0]  # the evaluation pipeline's clip of the same video, one view
    with torch.no_grad():
        expected = model(normalize_video(item["video"], torch.device("cpu")).reshape(-1, *item["video"].shape[-4:]))["fused"][0]
    (top,) = predict(model, [dataset.path(0)], top_k=4)
    assert [name for name, _ in top] == [model.classnames[i] for i in expected.argsort(descending=True).tolist()]
    assert [p for _, p in top] == pytest.approx(expected.sort(descending=True).values.tolist(), abs=1e-6)


def test_rerunning_a_finished_run_keeps_its_recorded_durations(quickstart):
    out, _ = quickstart
    before = json.loads((out / "summary.json").read_text())
    result = runner.invoke(app, ["run", "quickstart", *SMALL, f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    assert "is a finished run" in result.output
    assert json.loads((out / "summary.json").read_text()) == before


def test_a_fresh_start_onto_an_earlier_runs_checkpoint_is_refused_naming_the_flag(quickstart, tmp_path):
    import shutil

    out, _ = quickstart
    shutil.copytree(out / "m2clip" / "checkpoints", tmp_path / "checkpoints")
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    result = runner.invoke(app, ["run", "quickstart", *SMALL, "compare={}", "resume=null", f"output_dir={tmp_path}",
                                 f"data.root={out / 'data'}"])
    assert result.exit_code == 1, result.output
    assert f"holds the checkpoint {tmp_path / 'checkpoints' / 'last.pt'} of an earlier run" in " ".join(result.output.split())
    assert "resume=auto" in result.output and "--retrain" in result.output
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_key_value_arguments_are_overrides_wherever_they_stand(quickstart):
    out, _ = quickstart
    checkpoint = str(out / "m2clip" / "checkpoints" / "last.pt")
    # an override whose value is a path, where the optional checkpoint could stand
    frozen = runner.invoke(app, ["zeroshot", "quickstart", f"output_dir={out}", *SMALL])
    assert frozen.exit_code == 0 and "top-1" in frozen.output, frozen.output
    before = runner.invoke(app, ["eval", "quickstart", checkpoint, *SMALL, f"output_dir={out}"])
    after = runner.invoke(app, ["eval", "quickstart", f"output_dir={out}", *SMALL, checkpoint])
    assert before.exit_code == after.exit_code == 0 and before.output == after.output, after.output
    video = str(next((out / "data" / "videos").glob("*.mp4")))
    sampled = runner.invoke(app, ["predict", checkpoint, video, "data.sampling=dense", "data.stride=1"])
    assert sampled.exit_code == 0 and "probability" in sampled.output, sampled.output
    refused = runner.invoke(app, ["predict", checkpoint, video, "model.arch=ViT-L-14"])
    assert refused.exit_code == 1 and "predict takes data.* overrides (how clips are sampled) only" in refused.output
    bad = runner.invoke(app, ["predict", checkpoint, video, "data.frames=0"])
    assert bad.exit_code == 1 and "data.frames" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output


def test_run_with_a_bad_override_names_the_key(tmp_path):
    result = runner.invoke(app, ["run", "quickstart", "optim.lrr=1", f"output_dir={tmp_path}"])
    assert result.exit_code == 1
    assert "optim.lrr" in result.output and "lr" in result.output


def test_flops_on_the_quickstart_writes_json(tmp_path):
    path = tmp_path / "flops.json"
    result = runner.invoke(app, ["flops", "quickstart", "--json", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    names = {c["name"] for c in report["components"]}
    assert {"visual.backbone", "visual.adapters.ted", "pooling", "text.backbone"} <= names
    assert report["gflops_per_view"] > 0 and report["trainable_params"] > 0


def test_ddp_on_two_cpu_processes_gives_the_m2clip_losses_of_one_process(tmp_path):
    """Contrastive over the gathered batch, CMLM masks seeded per sample, dropout off."""
    import os
    import subprocess
    import sys

    args = [*SMALL, "schedule.epochs=2", "eval.every=0", "compare={}", "heads.0.options.gather=global"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def train(folder, processes):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command = [*launcher, "-m", "clipadapt.cli", "run", "quickstart", *args, f"output_dir={tmp_path / folder}",
                   f"data.root={tmp_path / 'data'}"]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
        assert done.returncode == 0, done.stderr[-3000:]
        records = map(json.loads, (tmp_path / folder / "metrics.jsonl").read_text().splitlines())
        return [r for r in records if r["kind"] == "epoch"]  # mean losses of each epoch's 4 steps

    one, two = train("one", 1), train("two", 2)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("loss", "loss_contrastive", "loss_cmc", "loss_cmlm", "loss_vc"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


def test_the_siglip_quickstart_runs_both_variants_through_the_cli(tmp_path):
    """A reduced run (its full run, the margin docs/index.md quotes, is `clipadapt run quickstart_siglip`)."""
    from clipadapt.recipes import load_recipe

    result = runner.invoke(app, ["run", "quickstart_siglip", *SMALL, f"output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"m2clip", "frame_mean_baseline", "seconds"}, summary
    stored = load_recipe(str(tmp_path / "m2clip" / "recipe.yaml"))
    assert (stored.model.arch, stored.heads[0].options["loss"]) == ("ViT-B-16-SigLIP", "sigmoid")


@pytest.mark.parametrize("recipe, temporal", [("quickstart", "m2clip"), ("quickstart_timm", "ted")])
def test_the_full_quickstart_temporal_model_beats_the_frame_average_by_15_points(recipe, temporal, tmp_path):
    from clipadapt.engine.run import run

    summary = run(recipe, [f"output_dir={tmp_path}"])
    assert summary[temporal]["top1"] - summary["frame_mean_baseline"]["top1"] >= 0.15, summary


def test_a_file_that_is_not_a_checkpoint_gets_one_line(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["eval", "quickstart", str(bogus), f"output_dir={tmp_path}", *SMALL])
    assert result.exit_code == 1
    assert "bogus.pt is not a readable clipadapt training checkpoint" in result.output
    assert "Traceback" not in result.output


# `clipadapt ...` that dies by SIGKILL right after writing the checkpoint of step argv[1], as a crash would
KILLED_AFTER_CHECKPOINT = """
import os, signal, sys
from clipadapt.cli import main
from clipadapt.engine.train import Trainer

save, last_step = Trainer.save, int(sys.argv[1])

def save_then_die(self, name):
    path = save(self, name)
    if self.step == last_step:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

Trainer.save = save_then_die
sys.argv = ["clipadapt", *sys.argv[2:]]
main()
"""


def test_the_m2clip_quickstart_killed_mid_run_and_resumed_ends_with_the_same_weights(tmp_path):
    """SIGKILL right after the checkpoint of step 3 of 8 (inside the first epoch of 4 steps), then
    the same command again (resume: auto). The run kills itself at that step: a test that watched
    for the file and killed it from outside would race the run on a loaded machine."""
    import os
    import signal
    import subprocess
    import sys

    import torch

    from clipadapt.engine.checkpoint import load_checkpoint

    args = [*SMALL, "schedule.epochs=2", "schedule.checkpoint_every=1", "eval.every=0", "compare={}", "resume=auto",
            f"data.root={tmp_path / 'data'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def command(folder):
        return ["run", "quickstart", *args, f"output_dir={tmp_path / folder}"]

    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_CHECKPOINT, "3", *command("killed")], env=env,
                            capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert load_checkpoint(last)["step"] == 3
    outputs = {}
    for folder in ("killed", "whole"):
        done = subprocess.run([sys.executable, "-m", "clipadapt.cli", *command(folder)], env=env, capture_output=True,
                              text=True, timeout=HANG_GUARD_S)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[folder] = done.stdout
    assert "resumed from" in outputs["killed"] and "resumed from" not in outputs["whole"]
    resumed, whole = load_checkpoint(last)["model"], load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)


def test_zeroshot_without_a_checkpoint_scores_the_frozen_clip(quickstart):
    out, _ = quickstart
    result = runner.invoke(app, ["zeroshot", "quickstart", *SMALL, f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.output.splitlines() if line.count("│") == 4]
    assert [r[2].strip() for r in rows if r[1].strip() != "split"] == ["8"]  # 8 test videos, one split


def test_zeroshot_frozen_scores_the_runs_own_backbone_with_its_adapters_disabled(quickstart):
    out, _ = quickstart
    checkpoint = str(out / "m2clip" / "checkpoints" / "last.pt")

    def table(*arguments):
        result = runner.invoke(app, ["zeroshot", "quickstart", *arguments])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split()), [line for line in result.output.splitlines() if line.count("│") == 4]

    frozen, frozen_rows = table(SMALL[0], checkpoint, *SMALL[1:], f"output_dir={out}", "--frozen")  # overrides on both sides
    fresh, fresh_rows = table(*SMALL, f"output_dir={out}")
    adapted, adapted_rows = table(*SMALL, checkpoint, f"output_dir={out}")
    assert "frozen baseline, adapters disabled" in frozen and "the frozen CLIP" in fresh and "adapted" in adapted
    assert frozen_rows == fresh_rows  # weights: null: the run's backbone is the one the recipe's seed draws
    assert len(adapted_rows) == len(frozen_rows) == 1  # one split, 8 videos


def test_export_writes_an_adapter_file_that_rebuilds_the_trained_video_model(quickstart, tmp_path):
    import copy

    import torch

    import clipadapt
    from clipadapt.saving import read_metadata

    out, _ = quickstart
    run_dir = out / "m2clip"
    exported = tmp_path / "m2clip.safetensors"
    result = runner.invoke(app, ["export", str(run_dir / "checkpoints" / "last.pt"), str(exported)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(exported)
    assert [h["name"] for h in meta["video"]["heads"]] == ["contrastive", "cmc", "cmlm", "vc"]
    assert meta["recipe"]["model"]["family"] == "open_clip"
    trained = clipadapt.load_trained(run_dir)  # a run directory: its best checkpoint, else its last
    backbone = copy.deepcopy(trained.clip)
    clipadapt.eject(backbone)  # the frozen CLIP it was trained on
    again = clipadapt.VideoCLIP.from_adapters(backbone, exported)
    clips = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = trained(clips), again(clips)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    with pytest.raises(ValueError, match="random weights .* load the training checkpoint instead"):
        clipadapt.load_trained(exported)


def test_export_follows_the_umask_and_never_replaces_a_file(quickstart, tmp_path):
    import os

    out, _ = quickstart
    exported = tmp_path / "m2clip.safetensors"
    previous = os.umask(0o022)
    try:
        first = runner.invoke(app, ["export", str(out / "m2clip"), str(exported)])
    finally:
        os.umask(previous)
    assert first.exit_code == 0, first.output
    assert exported.stat().st_mode & 0o777 == 0o644  # as checkpoints: 0666 less the umask, not safetensors' 0600
    before = exported.read_bytes()
    again = runner.invoke(app, ["export", str(out / "m2clip"), str(exported)])
    assert again.exit_code == 1 and again.output.strip() == f"error: {exported} exists; choose another destination or remove it first"
    assert exported.read_bytes() == before


@pytest.mark.parametrize("family", ["hf", "openai_clip"])
def test_the_reduced_quickstart_runs_and_counts_flops_on_other_families(family, tmp_path):
    result = runner.invoke(app, ["run", "quickstart", *SMALL, "schedule.epochs=1", "compare={}", f"model.family={family}",
                                 f"output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    checkpoint = str(tmp_path / "checkpoints" / "last.pt")
    evaluated = runner.invoke(app, ["eval", "quickstart", checkpoint, *SMALL, f"model.family={family}", f"output_dir={tmp_path}"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "cmc" in evaluated.output and "fused" in evaluated.output
    zero_shot = runner.invoke(app, ["zeroshot", "quickstart", checkpoint, *SMALL, f"model.family={family}", f"output_dir={tmp_path}"])
    assert zero_shot.exit_code == 0, zero_shot.output
    video = next((tmp_path / "data" / "videos").glob("*.mp4"))
    predicted = runner.invoke(app, ["predict", checkpoint, str(video), "--top-k", "2"])
    assert predicted.exit_code == 0 and predicted.output.count(" moving ") == 2, predicted.output  # top-2 class names
    path = tmp_path / "flops.json"
    counted = runner.invoke(app, ["flops", "quickstart", f"model.family={family}", "--json", str(path)])
    assert counted.exit_code == 0, counted.output
    names = {c["name"] for c in json.loads(path.read_text())["components"]}
    assert {"visual.backbone", "visual.adapters.ted", "text.backbone"} <= names


def test_the_reduced_visual_quickstart_runs_on_timm_with_eval_predict_and_flops(tmp_path):
    result = runner.invoke(app, ["run", "quickstart_timm", *SMALL, "schedule.epochs=1", f"output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"ted", "frame_mean_baseline", "seconds"}
    checkpoint = str(tmp_path / "ted" / "checkpoints" / "last.pt")
    evaluated = runner.invoke(app, ["eval", "quickstart_timm", checkpoint, *SMALL, f"output_dir={tmp_path}"])
    assert evaluated.exit_code == 0 and "vc" in evaluated.output, evaluated.output
    video = next((tmp_path / "data" / "videos").glob("*.mp4"))
    predicted = runner.invoke(app, ["predict", checkpoint, str(video), "--top-k", "2"])
    assert predicted.exit_code == 0 and predicted.output.count(" moving ") == 2, predicted.output  # top-2 class names
    path = tmp_path / "flops.json"
    counted = runner.invoke(app, ["flops", "quickstart_timm", "--json", str(path)])
    assert counted.exit_code == 0, counted.output
    names = {c["name"] for c in json.loads(path.read_text())["components"]}
    assert {"visual.backbone", "visual.adapters.ted", "heads.vc"} <= names and "text.backbone" not in names
