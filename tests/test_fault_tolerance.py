"""A run's state is never wrong, and every failure is one line: checkpoints that identify their
model, finite checkpoints only, finished runs kept, the output-folder lock, recipe changes on
resume, torn metrics lines, bounded and checksummed files, one-line errors, Ctrl-C and hung ranks.

The engine tests use the stand-in model of ``test_engine``; the end-to-end ones a reduced quickstart.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from clipadapt.cli import _user_errors, app
from clipadapt.digest import payload_sha256
from clipadapt.engine import NonFiniteLossError, load_checkpoint
from clipadapt.engine import checkpoint as checkpoint_module
from clipadapt.engine.checkpoint import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    OutputDirLockedError,
    atomic_save,
    output_dir_lock,
)
from clipadapt.engine.metrics import MetricLogger, read_records
from test_engine import TinyVideoModel, _run_script, final_weights, make_recipe, make_trainer
from hang_guard import HANG_GUARD_S

runner = CliRunner()
DATA_STATUS = ("generated the synthetic dataset in ", "reusing the synthetic dataset already in ")


def error_lines(output: str) -> list[str]:
    """The lines a failed command printed, less the synthetic data's status line that precedes them."""
    return [line for line in output.strip().splitlines() if not line.startswith(DATA_STATUS)]
SMALL = ["schedule.epochs=1", "data.synthetic.train_per_class=4", "data.synthetic.test_per_class=2",
         "data.batch_size=4", "data.num_workers=0", "compare={}", "eval.every=1", "resume=auto"]


# ---------------------------------------------------------------------------------------------
# a reduced quickstart run, shared by the end-to-end tests


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    args = ["run", "quickstart", *SMALL, f"output_dir={out / 'run'}", f"data.root={out / 'data'}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out / "run", args


def _recorded_eval(run_dir: Path, step: int) -> dict:
    records = [r for r in read_records(run_dir / "metrics.jsonl") if r["kind"] == "eval" and r["step"] == step]
    assert len(records) == 1
    return {k: v for k, v in records[0].items() if k not in ("kind", "step", "epoch", "time")}


def test_eval_on_a_checkpoint_reproduces_exactly_the_metrics_the_run_recorded(finished_run):
    from clipadapt.recipes import load_recipe
    from clipadapt.engine.tasks import evaluate_checkpoint

    run_dir, args = finished_run
    best = run_dir / "checkpoints" / "best.pt"
    recipe = load_recipe("quickstart", args[2:])
    metrics = evaluate_checkpoint(recipe, best, "val")
    assert metrics == _recorded_eval(run_dir, load_checkpoint(best)["step"])
    shown = runner.invoke(app, ["eval", "quickstart", str(best), *args[2:], "--split", "val"])
    assert shown.exit_code == 0, shown.output
    assert f"{metrics['fused/top1']:.2f}" in shown.output


def test_two_loads_of_a_random_backbone_checkpoint_give_the_trained_frozen_weights(finished_run):
    from clipadapt.engine.checkpoint import frozen_state
    from clipadapt.engine.tasks import load_trained

    run_dir, _ = finished_run
    last = run_dir / "checkpoints" / "last.pt"
    stored = load_checkpoint(last)["identity"]["frozen"]
    first, second = frozen_state(load_trained(last)), frozen_state(load_trained(last))
    assert first.keys() == stored.keys() == second.keys()
    assert all(torch.equal(first[k], stored[k]) and torch.equal(second[k], stored[k]) for k in stored)


def test_eval_with_a_recipe_of_another_model_is_refused_printing_the_difference(finished_run):
    run_dir, args = finished_run
    result = runner.invoke(app, ["eval", "quickstart", str(run_dir / "checkpoints" / "best.pt"), *args[2:], "video.pooling=mean"])
    assert result.exit_code == 1
    assert 'video.pooling: "conv" -> "mean"' in result.output and "Traceback" not in result.output


def test_a_finished_run_run_again_keeps_and_reprints_its_results(finished_run):
    run_dir, args = finished_run
    before = (run_dir / "results.json").read_text()
    checkpoint = (run_dir / "checkpoints" / "last.pt").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "finished run" in again.output and "--retrain" in again.output
    top1 = json.loads(before)["top1"]
    assert f"{100 * top1:.2f}%" in again.output
    assert (run_dir / "results.json").read_text() == before
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == checkpoint


def test_a_finished_run_of_another_recipe_is_refused_with_the_difference(finished_run):
    run_dir, args = finished_run
    result = runner.invoke(app, [*args, "optim.lr=0.5"])
    assert result.exit_code == 1
    assert "optim.lr: 0.01 -> 0.5" in result.output and "--retrain" in result.output


def test_retrain_trains_a_finished_run_again(finished_run, tmp_path):
    import shutil

    run_dir, args = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "results.json").write_text(json.dumps({"metrics": {}, "top1": 0.0123, "steps": 0}))
    args = [a if not a.startswith("output_dir=") else f"output_dir={copy}" for a in args]
    result = runner.invoke(app, [*args, "--retrain"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "resumed from" not in result.output
    assert json.loads((copy / "results.json").read_text())["top1"] != 0.0123


@contextlib.contextmanager
def live_process():
    """A process that runs until the block ends: it reads its stdin, which the block closes at the
    end (a sleep of some seconds would let the process die early on a loaded machine)."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        yield holder
    finally:
        holder.stdin.close()
        holder.wait()


def test_a_second_run_into_a_locked_output_dir_gets_one_line(finished_run, tmp_path):
    run_dir, args = finished_run
    with live_process() as holder:
        (tmp_path / ".clipadapt.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "t"}))
        args = [a if not a.startswith("output_dir=") else f"output_dir={tmp_path}" for a in args]
        result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert f"in use by pid {holder.pid}" in result.output and len(error_lines(result.output)) == 1


# ---------------------------------------------------------------------------------------------
# identity of the frozen weights


def test_a_checkpoint_trained_on_other_frozen_weights_is_refused_saying_what_differs(tmp_path):
    from clipadapt.recipes import load_recipe
    from clipadapt.engine import build_optimizer, build_scheduler, save_checkpoint
    from clipadapt.engine.tasks import load_trained
    from clipadapt.models import build_from_recipe

    recipe = load_recipe("quickstart", ["compare={}"])
    clip_file = tmp_path / "clip.pt"
    model = build_from_recipe(recipe, ["a", "b"])
    from clipadapt.inject import is_adapter_param

    torch.save({k: v for k, v in model.clip.state_dict().items() if not is_adapter_param(k)}, clip_file)
    recipe = load_recipe("quickstart", ["compare={}", f"model.weights={clip_file}"])
    model = build_from_recipe(recipe, ["a", "b"])
    optimizer = build_optimizer(model, recipe.optim)
    scheduler = build_scheduler(optimizer, steps_per_epoch=1, epochs=1, warmup_epochs=0)
    path = save_checkpoint(tmp_path / "last.pt", model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, batch=0,
                           step=1, best=None, recipe=recipe.to_dict(), extra={"classnames": ["a", "b"]})
    assert "frozen" not in load_checkpoint(path)["identity"]  # named weights: only their digests are stored
    load_trained(path)  # the same weights file: accepted
    state = torch.load(clip_file, weights_only=True)
    state["visual.conv1.weight"] = state["visual.conv1.weight"] + 1
    torch.save(state, clip_file)
    with pytest.raises(CheckpointMismatchError, match=r"1 of \d+ frozen tensors differ \(clip\.visual\.conv1\.weight\)"):
        load_trained(path)


# ---------------------------------------------------------------------------------------------
# finite checkpoints only


class NaNGradientModel(TinyVideoModel):
    """From its `bad_call`-th training forward on, a finite loss whose gradient is NaN."""

    def __init__(self, bad_call: int):
        super().__init__(dropout=0.0)
        self.calls, self.bad_call = 0, bad_call

    def forward(self, video, labels=None):
        out = super().forward(video, labels)
        if self.training:
            self.calls += 1
            if self.calls >= self.bad_call:  # 0 · sqrt(0): value 0, gradient NaN
                out["loss"] = out["loss"] + 0.0 * torch.sqrt(self.adapter.weight.sum() * 0.0)
        return out


def test_a_checkpoint_is_never_written_from_non_finite_weights(tmp_path):
    recipe = make_recipe(tmp_path, schedule={"epochs": 2, "checkpoint_every": 1})
    trainer = make_trainer(recipe, model=NaNGradientModel(bad_call=5))
    with pytest.raises(NonFiniteLossError, match=r"last finite checkpoint: .*last\.pt") as raised:
        trainer.fit()
    assert "non-finite" in str(raised.value)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())


# ---------------------------------------------------------------------------------------------
# the output folder lock and recipe changes on resume


def test_output_dir_lock_refuses_a_live_holder_and_replaces_a_stale_one(tmp_path):
    lock = tmp_path / ".clipadapt.lock"
    with live_process() as holder:
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "then"}))
        with pytest.raises(OutputDirLockedError, match=rf"in use by pid {holder.pid} on {socket.gethostname()}"):
            make_trainer(make_recipe(tmp_path)).fit()
    with pytest.warns(UserWarning, match=rf"stale lock .* pid {holder.pid}, which no longer runs"):
        with output_dir_lock(tmp_path):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_resuming_with_a_changed_lr_is_refused_printing_the_diff_unless_allowed(tmp_path):
    make_trainer(make_recipe(tmp_path, schedule={"epochs": 1})).fit()
    changed = make_recipe(tmp_path, schedule={"epochs": 2}, optim={"lr": 0.1})
    with pytest.raises(CheckpointMismatchError, match=r"optim\.lr: 0\.05 -> 0\.1 \(.*--allow-recipe-change"):
        make_trainer(changed).fit()
    trainer = make_trainer(changed)
    trainer.allow_recipe_change = True
    trainer.fit()
    resumed = [r for r in read_records(tmp_path / "metrics.jsonl") if r["kind"] == "train" and r["epoch"] == 1]
    factor = trainer.scheduler.lr_lambdas[0]
    # the new lr, on the schedule of the new epoch count: step s logs the lr after s steps
    assert resumed and all(r["lr"] == pytest.approx(0.1 * factor(r["step"])) for r in resumed)


def test_a_fresh_run_never_leaves_an_earlier_runs_best_checkpoint(tmp_path):
    make_trainer(make_recipe(tmp_path, schedule={"epochs": 1})).fit()
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    (tmp_path / "checkpoints" / "last.pt").unlink()  # else a fresh start is refused (it would overwrite it)
    fresh = make_trainer(make_recipe(tmp_path, schedule={"epochs": 1}, resume=None))
    fresh.val_loader = None  # this run evaluates nothing, so it has no best
    fresh.fit()
    assert not (tmp_path / "checkpoints" / "best.pt").exists()


def test_resuming_with_more_epochs_or_other_workers_is_allowed(tmp_path):
    make_trainer(make_recipe(tmp_path, schedule={"epochs": 1})).fit()
    make_trainer(make_recipe(tmp_path, schedule={"epochs": 2}, data={"num_workers": 1}, eval={"every": 2})).fit()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 2


# ---------------------------------------------------------------------------------------------
# metrics.jsonl


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_naming_the_file(tmp_path):
    make_trainer(make_recipe(tmp_path, schedule={"epochs": 1, "checkpoint_every": 2})).fit()
    path = tmp_path / "metrics.jsonl"
    whole = path.read_text()
    path.write_text(whole + '{"kind": "train", "st')
    with pytest.warns(UserWarning, match=rf"{path}: dropped the torn last line"):
        make_trainer(make_recipe(tmp_path, schedule={"epochs": 2})).fit()
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_bad_metrics_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{oops\n{"kind": "train", "step": 2}\n')
    with pytest.raises(ValueError, match=rf"{path}: line 2 is not a JSON record"):
        MetricLogger(tmp_path, resume_step=2)


# ---------------------------------------------------------------------------------------------
# checksums and bounded files


def _trained_checkpoint(tmp_path) -> Path:
    make_trainer(make_recipe(tmp_path, schedule={"epochs": 1})).fit()
    return tmp_path / "checkpoints" / "last.pt"


def _flip_a_bit_of(path: Path, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    offset = bytes(data).find(tensor.numpy().tobytes())
    assert offset >= 0
    data[offset + 5] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_one_flipped_bit_is_refused(tmp_path):
    path = _trained_checkpoint(tmp_path)
    _flip_a_bit_of(path, load_checkpoint(path)["model"]["adapter.weight"])
    with pytest.raises(CorruptCheckpointError, match=rf"{path} is corrupt: the sha256 of its payload"):
        load_checkpoint(path)


def test_an_adapter_file_with_one_flipped_bit_is_refused(tmp_path):
    import clipadapt
    from tiny import BUILDERS, randomize_

    model = BUILDERS["open_clip"]()
    handle = clipadapt.inject(model, "ted", layers="all", width=8)
    for _, _, module in handle.modules:
        randomize_(module)
    path = clipadapt.save_adapters(model, tmp_path / "ted.safetensors")
    clipadapt.load_adapters(BUILDERS["open_clip"](), path)  # intact: loads
    weight = next(p for n, p in model.named_parameters() if p.requires_grad).detach()
    _flip_a_bit_of(path, weight)
    with pytest.raises(ValueError, match=rf"{path} is corrupt or unverifiable: the sha256 of its tensors"):
        clipadapt.load_adapters(BUILDERS["open_clip"](), path)


def test_adapter_metadata_asking_for_an_absurd_width_is_refused_before_allocating(tmp_path):
    import clipadapt
    from safetensors.torch import load_file, save_file
    from tiny import BUILDERS

    model = BUILDERS["open_clip"]()
    clipadapt.inject(model, "ted", layers="all", width=8)
    path = clipadapt.save_adapters(model, tmp_path / "ted.safetensors")
    meta = clipadapt.saving._bounded_metadata(path)
    injections = json.loads(meta["injections"])
    injections[0]["kwargs"]["width"] = 2**17
    save_file(load_file(str(path)), str(path), metadata={**meta, "injections": json.dumps(injections)})
    with pytest.raises(ValueError, match=r"asks for width=131072; accepted: at most 65536"):
        clipadapt.load_adapters(BUILDERS["open_clip"](), path)


def test_a_corrupt_safetensors_header_names_the_file(tmp_path):
    import clipadapt
    from tiny import BUILDERS

    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x03\x00")
    with pytest.raises(ValueError, match=rf"{path} is not a safetensors adapter file"):
        clipadapt.load_adapters(BUILDERS["open_clip"](), path)


def _write_state(path: Path, recipe_text: str) -> Path:
    state = torch.load(path, weights_only=True)
    state.pop("sha256")
    state["recipe"] = recipe_text
    state["sha256"] = payload_sha256(state)
    torch.save(state, path)
    return path


def test_a_stored_recipe_asking_for_an_absurd_model_is_refused_before_building(tmp_path):
    path = _trained_checkpoint(tmp_path)
    for config in ("{embed_dim: 64, width: 1048576, layers: 4}",  # the family-neutral sizes
                   "{embed_dim: 64, vision_cfg: {width: 1048576, layers: 4}}"):  # open_clip's own form
        absurd = f"model: {{family: open_clip, config: {config}}}\nheads: []\n"
        with pytest.raises(ValueError, match=r"model\.config asks for about \d+ parameters; accepted: at most 5000000000"):
            load_checkpoint(_write_state(path, absurd))


def test_a_stored_recipe_with_a_yaml_tag_gets_one_line(tmp_path):
    path = _write_state(_trained_checkpoint(tmp_path), "seed: !!python/object/apply:os.system ['true']\n")
    result = runner.invoke(app, ["predict", str(path), "video.mp4"])
    assert result.exit_code == 1
    assert f"{path}: the stored recipe is not plain YAML" in result.output and "Traceback" not in result.output


def test_a_stored_recipe_with_an_alias_bomb_is_refused_before_it_is_walked(tmp_path):
    levels = "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 18))  # 2**17 nodes in 600 bytes
    path = _write_state(_trained_checkpoint(tmp_path), "l0: &l0 [x, x]\n" + levels)
    with pytest.raises(ValueError, match=rf"{path}: the stored recipe is not plain YAML \(expands to more than 100000 nodes"):
        load_checkpoint(path)
    result = runner.invoke(app, ["predict", str(path), "video.mp4"])
    assert result.exit_code == 1 and len(error_lines(result.output)) == 1, result.output
    assert "expands to more than 100000 nodes" in result.output and "memory" not in result.output


def test_a_finished_runs_stored_recipe_is_read_by_the_bounded_loader(tmp_path):
    from clipadapt.engine.run import finished_results
    from clipadapt.recipes import RecipeError, load_recipe

    recipe = load_recipe("quickstart", [f"output_dir={tmp_path}"])
    (tmp_path / "results.json").write_text("{}")
    levels = "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 18))
    (tmp_path / "recipe.yaml").write_text("l0: &l0 [x, x]\n" + levels)
    with pytest.raises(RecipeError, match="expands to more than 100000 nodes"):
        finished_results(recipe)


def test_a_truncated_safetensors_file_given_as_a_checkpoint_names_the_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"{path} is not a readable clipadapt training checkpoint \(truncated or corrupt"):
        load_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# one-line failures


def _invoke(error: BaseException, env: dict | None = None):
    command_app = typer.Typer()

    @command_app.command()
    @_user_errors
    def fail() -> None:
        raise error

    return CliRunner().invoke(command_app, [], env=env)


def test_a_full_disk_while_checkpointing_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = atomic_save({"step": 1}, tmp_path / "last.pt")

    def full_disk(obj, handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(OSError, match=rf"cannot write {path}: No space left on device; the previous last.pt is kept") as raised:
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1 and not list(tmp_path.glob(".*.tmp"))
    result = _invoke(raised.value)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and str(path) in result.output


class _FillingFile:
    """A temporary file on a disk with `room` bytes left: the write that passes it fails with
    ENOSPC after writing what fits, as the kernel's write does on a full disk."""

    real = None
    room = 4096

    def __init__(self, **kwargs):
        self.file = _FillingFile.real(**kwargs)
        self.name, self.written = self.file.name, 0

    def write(self, data):
        if self.written + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.file.write(data)

    def __getattr__(self, name):  # flush, fileno
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture
def full_disk(monkeypatch):
    import clipadapt.atomic as atomic

    _FillingFile.real = atomic.tempfile.NamedTemporaryFile
    monkeypatch.setattr(atomic.tempfile, "NamedTemporaryFile", _FillingFile)


def test_a_really_full_disk_while_checkpointing_names_the_file_and_says_so(tmp_path, full_disk):
    path = tmp_path / "last.pt"
    torch.save({"step": 1}, path)
    with pytest.raises(OSError, match=rf"cannot write {path}: No space left on device; the previous last.pt is kept") as raised:
        atomic_save({"step": 2, "weights": torch.zeros(300_000)}, path)
    assert raised.value.errno == errno.ENOSPC
    assert torch.load(path, weights_only=True) == {"step": 1} and not list(tmp_path.glob(".*.tmp"))
    result = _invoke(raised.value)
    assert result.output.strip() == f"error: cannot write {path}: No space left on device; the previous last.pt is kept"


def test_an_adapter_file_on_a_full_disk_names_the_file(tmp_path, full_disk):
    import clipadapt
    from tiny import BUILDERS

    model = BUILDERS["open_clip"]()
    clipadapt.inject(model, "ted", layers="all", width=8)
    path = tmp_path / "ted.safetensors"
    with pytest.raises(OSError, match=rf"cannot write {path}: No space left on device"):
        clipadapt.save_adapters(model, path)
    assert not path.exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("message", ["checkpoint runs/x/[/x].pt does not exist",
                                     "[/tmp/gloo] rank 3 did not answer within 1800 s [bold]"])
def test_error_text_is_printed_literally_never_as_markup(message):
    result = _invoke(FileNotFoundError(message))
    assert result.exit_code == 1 and result.output.strip() == f"error: {message}", result.output


def test_a_checkpoint_path_with_brackets_gets_one_line_naming_it():
    result = runner.invoke(app, ["predict", "x/[/x].pt", "video.mp4"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "x/[/x].pt" in result.output and "Traceback" not in result.output


class _InterruptedInAWorker(torch.utils.data.Dataset):
    """Ctrl-C reaches a DataLoader worker (the terminal signals the whole process group)."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        os.kill(os.getpid(), signal.SIGINT)
        return torch.zeros(1)


def test_ctrl_c_in_a_dataloader_worker_neither_prints_nor_stops_the_run(tmp_path, capfd):
    trainer = make_trainer(make_recipe(tmp_path))
    with trainer._graceful_interrupt():
        list(torch.utils.data.DataLoader(_InterruptedInAWorker(), num_workers=1, multiprocessing_context="fork"))
    assert "Ctrl-C" not in capfd.readouterr().out and not trainer._stop_requested  # the main process saw no Ctrl-C


def test_a_dataloader_workers_error_is_one_line():
    from clipadapt.data.datasets import TooManyBadSamples

    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            raise TooManyBadSamples("8 samples in a row failed to load; last: /data/x.mp4 (no such file); check data.root")

    loader = torch.utils.data.DataLoader(Failing(), num_workers=1)
    with pytest.raises(TooManyBadSamples) as raised:
        next(iter(loader))
    assert "DataLoader worker" in str(raised.value)  # what torch re-raises
    result = _invoke(raised.value)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: 8 samples in a row failed to load; last: /data/x.mp4 (no such file); check data.root"]


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("size mismatch for w:\n copying a param"), ImportError("no module x")])
def test_any_failure_is_one_line_and_clipadapt_debug_keeps_the_traceback(error):
    result = _invoke(error)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    debug = _invoke(error, env={"CLIPADAPT_DEBUG": "1"})
    assert debug.exit_code != 0 and debug.exception is error


def test_an_output_dir_that_is_a_file_gets_one_line(tmp_path):
    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises(NotADirectoryError, match=rf"output_dir {target} is a file"):
        with output_dir_lock(target):
            pass


def test_model_weights_that_are_not_a_weights_file_get_one_line_naming_it(tmp_path):
    bogus = tmp_path / "weights.pt"
    bogus.write_bytes(b"\x80\x04not a pickle")
    result = runner.invoke(app, ["run", "quickstart", *SMALL, f"model.weights={bogus}", f"output_dir={tmp_path / 'out'}",
                                 f"data.root={tmp_path / 'data'}"])
    assert result.exit_code == 1
    assert len(error_lines(result.output)) == 1 and str(bogus) in result.output, result.output


# ---------------------------------------------------------------------------------------------
# the smaller items


def test_orphan_tmp_files_are_removed_on_the_next_start(tmp_path):
    orphan = tmp_path / "checkpoints" / ".last.pt.x1y2z3.tmp"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a checkpoint")
    make_trainer(make_recipe(tmp_path, schedule={"epochs": 1})).fit()
    assert not orphan.exists() and (tmp_path / "checkpoints" / "last.pt").is_file()


def test_checkpoints_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = atomic_save({"step": 1}, tmp_path / "last.pt")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def test_ctrl_c_saves_at_a_step_and_the_resumed_run_ends_with_the_same_weights(tmp_path):
    args = {"schedule": {"epochs": 2}, "eval": {"every": 0}}
    stopped = _run_script({"output_dir": str(tmp_path / "stopped"), "interrupt_at_step": 5, **args})
    assert stopped.returncode != 0 and "TrainingInterrupted: interrupted: saved" in stopped.stderr, stopped.stderr[-2000:]
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["step"] == 6  # the step in flight finished
    torch.set_num_threads(1)
    make_trainer(make_recipe(tmp_path / "stopped", **args)).fit()
    make_trainer(make_recipe(tmp_path / "whole", **args)).fit()
    resumed, whole = final_weights(tmp_path / "stopped"), final_weights(tmp_path / "whole")
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)


def test_ctrl_c_prints_the_resume_command(monkeypatch):
    from clipadapt.engine.train import TrainingInterrupted

    monkeypatch.setattr(sys, "argv", ["clipadapt", "run", "quickstart", "optim.lr=0.1"])
    result = _invoke(TrainingInterrupted("runs/q/checkpoints/last.pt", 7))
    assert result.exit_code == 130
    assert "saved runs/q/checkpoints/last.pt at step 7; resume with: clipadapt run quickstart optim.lr=0.1 resume=auto" in result.output


def test_a_hung_rank_is_named_after_the_process_group_timeout(tmp_path):
    """Rank 1 stops answering at step 2, from which on the timeout is 4 s (see test_engine._main)."""
    hung = _run_script({"output_dir": str(tmp_path), "schedule": {"epochs": 1}, "hang_rank": 1, "hang_at_step": 2,
                        "hang_timeout": 4}, torchrun=2)
    assert hung.returncode != 0
    assert "CollectiveTimeoutError: rank 0: a collective waited more than 4 s" in hung.stderr, hung.stderr[-3000:]
    assert "rank(s) that did not respond: 1" in hung.stderr


def test_ffmpeg_and_decord_noise_is_not_printed_around_the_one_line_error(finished_run, tmp_path):
    pytest.importorskip("decord", reason="decord is the reader that prints FFmpeg's messages")
    run_dir, _ = finished_run
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "clipadapt.cli", "predict", str(run_dir / "checkpoints" / "last.pt"), str(broken)],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    assert done.returncode == 1
    assert done.stdout.strip().splitlines() == [line for line in done.stdout.strip().splitlines() if str(broken) in line]
    assert len(done.stdout.strip().splitlines()) == 1, done.stdout
    assert "moov atom" not in done.stderr and "video_reader.cc" not in done.stderr, done.stderr


def test_only_decoder_lines_are_dropped_from_native_stderr():
    script = ("import os\nfrom clipadapt.cli import _quiet_native_decoders\nwith _quiet_native_decoders():\n"
              "    os.write(2, b'[mov,mp4,m4a @ 0x55c0] moov atom not found\\n')\n"
              "    os.write(2, b'[06:29:20] /src/video/video_reader.cc:83: ERROR opening: x.mp4\\n')\n"
              "    os.write(2, b'a native warning that stays\\n')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "a native warning that stays\n"


def test_resuming_onto_a_model_of_other_shapes_is_one_line_even_when_changes_are_allowed(tmp_path):
    make_trainer(make_recipe(tmp_path, schedule={"epochs": 1})).fit()

    class Wider(TinyVideoModel):
        def __init__(self):
            super().__init__()
            self.vc = torch.nn.Linear(8, 5)

    trainer = make_trainer(make_recipe(tmp_path, schedule={"epochs": 2}), model=Wider())
    trainer.allow_recipe_change = True
    with pytest.raises(CheckpointMismatchError, match=r"cannot resume from .*last\.pt: its trainable tensors do not fit") as raised:
        trainer.fit()
    assert "\n" not in str(raised.value)
