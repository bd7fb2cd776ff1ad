"""The ``clipadapt`` command line (typer)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from clipadapt.terminal import print_table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn any CLIP into a video model with small adapters.")
console = Console()


def _plain_help() -> None:
    """Show click's words in ``--help`` (RECIPE, INTEGER, PATH), not the Python types
    (``<bool>``, ``{recipe}``, ``<list[str]>``) that newer typer versions print."""
    core = typer.core
    if not hasattr(core.TyperArgument, "_usage_display_name"):
        return  # an older typer: it prints click's words already

    words = {"int": "INTEGER", "str": "TEXT", "float": "FLOAT", "path": "PATH"}
    python_type = core.TyperOption.display_type

    def option_type(self, ctx):
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        label = str(python_type(self, ctx)).strip("<>").removesuffix(" range")  # the range is shown apart
        return words.get(label, label.upper()) + ("..." if self.nargs != 1 else "")

    def argument_usage(self):
        name = self.display_name_raw.upper()
        return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")

    core.TyperOption.display_type_rich = option_type
    core.TyperArgument.display_type_rich = lambda self, ctx: None
    core.TyperArgument._usage_display_name = argument_usage


_plain_help()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"clipadapt {version('clipadapt')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """Turn any CLIP into a video model with small adapters."""

LISTABLE = ("adapters", "heads", "backbones", "recipes")


def _registry(kind: str):
    from clipadapt.registry import ADAPTERS, BACKBONES, HEADS

    registries = {"adapters": ADAPTERS, "heads": HEADS, "backbones": BACKBONES}
    if kind not in registries:
        raise typer.BadParameter(f"cannot list {kind!r}; choose one of {', '.join(LISTABLE)}")
    return registries[kind]


def _one_line(error: BaseException) -> str:
    """The message of `error` on one line: a DataLoader worker's re-raised error loses its
    "Caught ... in DataLoader worker" banner and the worker's traceback."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, OSError):  # "[Errno 28] cannot write x: No space left on device": the number says nothing more
        text = re.sub(r"^\[Errno \d+\] ", "", text)
    if "Original Traceback" in text:  # torch.utils.data re-raises worker errors with the traceback in the message
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].rsplit(".", 1)[-1] == type(error).__name__ else last
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines) if lines else type(error).__name__


OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")  # dotted.key=value


def _take_overrides(arguments) -> tuple[list[str], list[str]]:
    """Split positional `arguments` into the command's own (files, checkpoints) and
    ``dotted.key=value`` overrides, wherever the user put them; an argument that looks like an
    override but names an existing file stays a file."""
    own, overrides = [], []
    for value in arguments:
        text = str(value)
        (overrides if OVERRIDE.match(text) and not Path(text).exists() else own).append(text)
    return own, overrides


def _resume_command() -> str:
    import shlex
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("resume=") and a != "--retrain"]
    return "clipadapt " + shlex.join([*args, "resume=auto"])


# what FFmpeg (inside decord and PyAV) and decord's own logger print on a file they cannot read
NATIVE_NOISE = (r"^\[[\w,]+ @ (0x)?[0-9a-f]+\]", r"^\[\d\d:\d\d:\d\d\] \S*(video_reader|ffmpeg|decord)\S*:\d+: ")


@contextlib.contextmanager
def _quiet_native_decoders():
    """Drop FFmpeg and decord lines written to file descriptor 2 by native code (and by DataLoader
    workers, which inherit it) during the block; every other line passes through. Python's own
    ``sys.stderr`` keeps writing to the terminal directly.

    Example:
        >>> with _quiet_native_decoders():
        ...     pass
    """
    import os
    import re
    import sys
    import threading

    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):  # no file descriptor 2 to redirect (embedded interpreters)
        yield
        return
    noise = re.compile("|".join(NATIVE_NOISE))

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not noise.search(line.decode(errors="replace")):
                    try:
                        os.write(original, line)
                    except OSError:
                        return

    forwarder = threading.Thread(target=forward, daemon=True)
    forwarder.start()
    python_stderr = sys.stderr
    try:
        on_fd2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): leave it alone
        on_fd2 = False
    if on_fd2:
        sys.stderr = open(os.dup(original), "w", buffering=1, errors="backslashreplace")
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's write end in this process (workers may hold it longer)
        forwarder.join(timeout=2)
        if on_fd2:
            sys.stderr.close()
            sys.stderr = python_stderr
        if not forwarder.is_alive():  # else it still writes there: keep the descriptor
            os.close(original)


def _say(label: str, style: str, message: str) -> None:
    """Print ``label: message`` on one line, the label in `style` and the message literally: text
    from errors, files and other processes (``x/[/x].pt``, gloo's messages) is never read as markup."""
    console.print(Text.assemble((label, style), ": ", message), highlight=False, soft_wrap=True)


def _user_errors(command):
    """Report a failure (a missing file, a bad value, an unreadable video, a diverged run, a full
    disk, a corrupt checkpoint) as one line naming the culprit and exit 1; ``CLIPADAPT_DEBUG=1``
    shows the traceback instead. Ctrl-C during training saves and prints the resume command (exit 130)."""
    import functools
    import os

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from clipadapt.recipes import RecipeError
        from clipadapt.engine.train import TrainingInterrupted

        debug = os.environ.get("CLIPADAPT_DEBUG") == "1"
        try:
            with contextlib.nullcontext() if debug else _quiet_native_decoders():
                return command(*args, **kwargs)
        except RecipeError as error:
            _print_recipe_error(error)
            raise typer.Exit(code=1)
        except TrainingInterrupted as stop:
            _say("interrupted", "bold yellow", f"saved {stop.path} at step {stop.step}; resume with: {_resume_command()}")
            raise typer.Exit(code=130)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except MemoryError:
            if debug:
                raise
            _say("error", "bold red", "out of memory (MemoryError); lower data.batch_size or data.frames, or "
                 "check the sizes the recipe or file asks for")
            raise typer.Exit(code=1)
        except Exception as error:  # noqa: BLE001  (every failure is one line; CLIPADAPT_DEBUG=1 for the traceback)
            if debug:
                raise
            known = isinstance(error, (OSError, ValueError, KeyError, TypeError, RuntimeError))
            prefix = "" if known and type(error).__module__.startswith(("clipadapt", "builtins")) else f"{type(error).__name__}: "
            _say("error", "bold red", f"{prefix}{_one_line(error)}")
            raise typer.Exit(code=1)

    return wrapper


def plain_text(text: str) -> str:
    """Docstring markup as a reader of a listing wants it: ``code``, `name` and :role:`name` as plain words.

    Example:
        >>> plain_text("the delta is ``up(act(down(x)))``; see :class:`clipadapt.Adapter` and `frames`")
        'the delta is up(act(down(x))); see clipadapt.Adapter and frames'
    """
    text = re.sub(r":[\w:]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``|`([^`]+)`", lambda match: match.group(1) or match.group(2), text)


@app.command("ls")
def ls(kind: str = typer.Argument(..., help="adapters | heads | backbones | recipes")) -> None:
    """List registered adapters, heads, backbones or the built-in recipes."""
    if kind == "recipes":
        from clipadapt.recipes import builtin_recipes

        rows = [(name, recipe_description(path)) for name, path in builtin_recipes().items()]
    else:
        registry = _registry(kind)
        rows = [(name, plain_text(registry.summary(name))) for name in registry.names()]  # imports no built-in module
    table = Table(title=kind)
    table.add_column("name", no_wrap=True)
    table.add_column("description")
    for row in rows:
        table.add_row(*row)
    print_table(table, console)


def recipe_description(path: Path) -> str:
    """A recipe's one-line description: its leading comment up to the first ": " or ". "."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    cuts = [i for i in (text.find(": "), text.find(". ")) if i >= 0]
    return (text[: min(cuts)] if cuts else text).rstrip(".")


@app.command("cp")
@_user_errors
def copy_recipe(
    recipe: str = typer.Argument(..., help="a built-in recipe name (clipadapt ls recipes)"),
    dest: Path = typer.Argument(..., help="a file to write, or a folder to write NAME.yaml into"),
) -> None:
    """Copy a built-in recipe to edit it, then `clipadapt run DEST`."""
    from clipadapt.recipes import builtin_recipes

    recipes = builtin_recipes()
    if recipe not in recipes:
        raise ValueError(f"{recipe!r} is not a built-in recipe; choose one of {', '.join(recipes)}")
    target = dest / f"{recipe}.yaml" if dest.is_dir() else dest
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another destination or remove it first")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"folder {target.parent} does not exist")
    target.write_text(recipes[recipe].read_text())
    console.print(f"copied {recipe} to {target}; edit it, then: clipadapt run {target}", highlight=False, soft_wrap=True, markup=False)


@app.command()
@_user_errors
def synthetic(
    recipe: str = typer.Argument("quickstart", help="a recipe whose data.dataset is synthetic"),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides, e.g. data.root=/tmp/motion"),
) -> None:
    """Generate a recipe's synthetic motion dataset on its own (where `run` would look for it)."""
    from clipadapt.data.recipe import synthetic_root
    from clipadapt.data.synthetic import generate

    if "=" in recipe:  # no recipe given: that was an override
        overrides, recipe = [recipe, *(overrides or [])], "quickstart"
    loaded = _load(recipe, overrides)
    if loaded.data.dataset != "synthetic":
        raise ValueError(f"recipe {loaded.name!r} has data.dataset {loaded.data.dataset!r}; this command needs 'synthetic'")
    made = generate(synthetic_root(loaded), **loaded.data.synthetic)
    videos = sum(1 for _ in made.root.glob("videos/*.mp4"))
    verb = "already there with these settings, reused" if made.reused else "generated"
    console.print(f"{verb}: {videos} videos of {len(made.classnames)} classes in {made.root} "
                  f"(lists {made.train_list.name}, {made.test_list.name}; labels {made.label_file.name})",
                  highlight=False, soft_wrap=True)


def _build_named_model(name: str):
    """An open_clip config name or a timm model name, with random weights and no network."""
    import open_clip

    if name in open_clip.list_models():
        return open_clip.create_model(name, pretrained=None)
    import timm

    if timm.is_model(name):
        return timm.create_model(name, pretrained=False)
    raise typer.BadParameter(f"{name!r} is neither an open_clip config (`open_clip.list_models()`) nor a timm model")


@app.command()
@_user_errors
def inspect(name: str = typer.Argument(..., help="an open_clip config (ViT-B-16) or a timm model name")) -> None:
    """Print towers, blocks, widths, layout, CLS index, patch grid and sites of a backbone."""
    from clipadapt.backbones import describe
    from clipadapt.models.builders import quiet_root_logger

    with quiet_root_logger():
        info = describe(_build_named_model(name))
    table = Table(title=f"{name} ({info['family']})")
    for column in ("tower", "blocks", "width", "layout", "CLS index", "prefix tokens", "patch grid"):
        table.add_column(column)
    for tower, t in info["towers"].items():
        grid = "x".join(map(str, t["grid"])) if t["grid"] else "-"
        cls_index = "-" if t["cls_index"] is None else str(t["cls_index"])
        table.add_row(tower, str(t["blocks"]), str(t["width"]), t["layout"], cls_index, str(t["prefix_tokens"]), grid)
    print_table(table, console)
    for tower, t in info["towers"].items():
        console.print(f"{tower} blocks ({t['block']}) hold the sites: {', '.join(t['sites'])}", soft_wrap=True)
        for what, why in t["refused"].items():
            console.print(f"  {tower} refuses {what}: {why}", soft_wrap=True)


@app.command()
def demo() -> None:
    """A one-minute tour on a tiny random-weight CLIP: inject, summary, forward, save, load, eject."""
    from clipadapt.demo import run

    run(console)


@app.command()
def validate(
    recipe: str = typer.Argument(..., help="a recipe file or a built-in recipe name (clipadapt ls recipes)"),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides, e.g. optim.lr=3e-4 data.frames=16"),
    no_plugins: bool = typer.Option(False, "--no-plugins", help="do not import the recipe's plugins; what only they could register goes unchecked"),
) -> None:
    """Check a recipe (with overrides): print every error with its key path, or "ok" and a summary."""
    from clipadapt.recipes import RecipeError, from_dict, load_recipe_dict
    from clipadapt.recipes import validate as check

    try:
        data, name = load_recipe_dict(recipe, overrides or [])
        plugins = data.get("plugins") if isinstance(data.get("plugins"), list) else []
        if plugins and not no_plugins:
            console.print(f"importing plugins: {', '.join(map(str, plugins))}", highlight=False, markup=False)
        skipped: list[str] = []
        errors = check(data, plugins=not no_plugins, skipped=skipped)
        for note in skipped:
            _say("skipped", "yellow", note)
        if errors:
            raise RecipeError(errors, source=str(recipe))
        loaded = from_dict(data, name=name, validated=True)
    except RecipeError as error:
        _print_recipe_error(error)
        raise typer.Exit(code=1)
    adapters = ", ".join(f"{a.name}@{a.tower}" for a in loaded.adapters) or "none"
    heads = ", ".join(f"{h.name}×{h.weight:g}" for h in loaded.heads)
    console.print(f"[bold green]ok[/] {loaded.name}", highlight=False)
    console.print(
        f"  model {describe_model(loaded.model)}; adapters {adapters}; heads {heads}\n"
        f"  data {loaded.data.dataset}, {loaded.data.frames} frames, batch {loaded.data.batch_size}; "
        f"{loaded.schedule.epochs} epochs, lr {loaded.optim.lr:g}, {loaded.precision}; output {loaded.output_dir}\n"
        f"  {_preprocess_line(loaded)}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


def _preprocess_line(loaded) -> str:
    """What ``validate`` says about images: the size, interpolation, mean and std that will be
    used and where they come from (or why they cannot be known yet)."""
    from clipadapt.data.recipe import recipe_preprocess

    try:
        return recipe_preprocess(loaded).describe()
    except (ValueError, ImportError, RuntimeError) as error:
        return f"images: {str(error).splitlines()[0]}"


def describe_model(model) -> str:
    """What a recipe's ``model`` section builds, in words (``validate`` prints it)."""
    from clipadapt.backbones.hf import TINY_TYPES
    from clipadapt.backbones.open_clip import PLAIN_TINY_ARCHS

    weights = f"weights {model.weights}" if model.weights else "random weights"
    config = model.config
    if not config:
        return f"{model.family} {model.arch}, {weights}"
    if "vision_cfg" in config:  # an open_clip CLIP(**config) mapping
        vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
        text = {"text_layers": text.get("layers"), "text_width": text.get("width")}
        config = {**config, **vision, **text}
    what = "a tiny CLIP" if model.family != "timm" else "a tiny ViT"
    arch = "(model.arch unused)"
    if model.family == "open_clip" and model.arch not in PLAIN_TINY_ARCHS:
        what, arch = f"{model.arch} made small", "(its layout at these sizes)"
    elif model.family == "hf" and model.arch in TINY_TYPES:
        what, arch = f"a tiny {model.arch} model", "(model.arch: its type)"
    text = (f"; text {config.get('text_layers')} blocks of width {config.get('text_width')}"
            if model.family != "timm" and config.get("text_layers") else "")
    return (f"{model.family} {what} from model.config {arch}: visual {config.get('layers')} blocks of width "
            f"{config.get('width')}, {config.get('image_size')} px in {config.get('patch_size')} px patches{text}; "
            f"embedding {config.get('embed_dim')}; {weights}")


@app.command()
def schema(output: Path = typer.Option(None, "--output", "-o", help="write to this file instead of printing")) -> None:
    """Print the JSON Schema of recipe files, for editors (VS Code's YAML extension: `# yaml-language-server: $schema=FILE`)."""
    import json

    from clipadapt.recipes import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n")
        console.print(f"wrote {output}", highlight=False, markup=False)


def _print_recipe_error(error) -> None:
    lines = str(error).splitlines()
    if len(lines) == 2:  # one error: one line
        _say("error", "bold red", f"{error.source}: {lines[1]}")
        return
    console.print(Text(lines[0], style="bold red"), highlight=False)
    for line in lines[1:]:
        path, _, message = line.partition(": ")
        _say(f"  {path}", "red", message)


@app.command()
@_user_errors
def run(
    recipe: str = typer.Argument(..., help="a recipe file or a built-in recipe name (clipadapt ls recipes)"),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides, e.g. optim.lr=3e-4 data.frames=16"),
    retrain: bool = typer.Option(False, "--retrain", help="train again a run that already finished in output_dir"),
    allow_recipe_change: bool = typer.Option(False, "--allow-recipe-change",
                                             help="resume even though the recipe differs from the checkpoint's"),
) -> None:
    """Train a recipe, then evaluate it (each variant of its `compare` section side by side).

    A finished run is reported, not retrained (`--retrain` to train again). A resumed run refuses a
    recipe that changes the model or the optimisation (`--allow-recipe-change` to proceed).
    Multi-GPU: `torchrun --nproc-per-node 8 -m clipadapt.cli run RECIPE ...`.
    """
    from clipadapt.engine.run import run as run_recipe

    run_recipe(recipe, overrides or [], console=console, retrain=retrain, allow_recipe_change=allow_recipe_change)


def _load(recipe: str, overrides: list[str] | None):
    from clipadapt.recipes import RecipeError, load_recipe

    try:
        return load_recipe(recipe, overrides or [])
    except RecipeError as error:
        _print_recipe_error(error)
        raise typer.Exit(code=1)


def _metrics_table(title: str, metrics: dict) -> Table:
    table = Table(title=title)
    with_top5 = metrics.get("num_classes", 6) > 5  # top-5 of 5 classes or fewer is always 100
    for column in ("head", "top-1", *(["top-5"] if with_top5 else [])):
        table.add_column(column)
    heads = sorted({key.split("/")[0] for key in metrics if "/" in key}, key=lambda h: (h == "fused", h))
    for head in heads:
        table.add_row(head, f"{metrics[f'{head}/top1']:.2f}", *([f"{metrics[f'{head}/top5']:.2f}"] if with_top5 else []))
    return table


@app.command("eval")
@_user_errors
def eval_command(
    recipe: str = typer.Argument(..., help="the recipe whose data and eval sections to use"),
    checkpoint: str = typer.Argument(..., metavar="CHECKPOINT", help="a training checkpoint (runs/NAME/checkpoints/best.pt)"),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides"),
    split: str = typer.Option("test", help="test | val | train"),
    adapter_set: str = typer.Option(None, "--adapter-set", help="evaluate with each of these adapter sets active in turn, "
                                    "comma-separated (a+b stacks a and b): one table"),
) -> None:
    """Evaluate a checkpoint on the recipe's test set: multi-view fusion, top-1/top-5 per head and fused."""
    from clipadapt.engine.tasks import evaluate_adapter_sets, evaluate_checkpoint

    from clipadapt.recipes import require_data

    own, overrides = _take_overrides([checkpoint, *(overrides or [])])
    if len(own) != 1:
        raise ValueError(f"eval takes one CHECKPOINT besides key=value overrides; got {len(own)}: {', '.join(own) or 'none'}")
    checkpoint = Path(own[0])
    loaded = _load(recipe, overrides)
    require_data(loaded, (split,))
    if adapter_set:
        per_set = evaluate_adapter_sets(loaded, checkpoint, [s.strip() for s in adapter_set.split(",") if s.strip()], split)
        print_table(_sets_table(f"{loaded.name}: {loaded.eval.clips}×{loaded.eval.crops} views, per adapter set", per_set), console)
        return
    metrics = evaluate_checkpoint(loaded, checkpoint, split)
    print_table(_metrics_table(f"{loaded.name}: {metrics.get('num_videos', 0)} videos, {loaded.eval.clips}×{loaded.eval.crops} views", metrics), console)


def _sets_table(title: str, per_set: dict) -> Table:
    """One row per head, a top-1 column per adapter set."""
    table = Table(title=title)
    table.add_column("head")
    for name, metrics in per_set.items():
        table.add_column(f"{name} top-1 ({metrics.get('num_videos', 0)} videos)", justify="right")
    heads = sorted({key.split("/")[0] for m in per_set.values() for key in m if key.endswith("/top1")}, key=lambda h: (h == "fused", h))
    for head in heads:
        table.add_row(head, *(f"{m[f'{head}/top1']:.2f}" if f"{head}/top1" in m else "" for m in per_set.values()))
    return table


@app.command()
@_user_errors
def zeroshot(
    recipe: str = typer.Argument(..., help="a zero-shot recipe (m2clip_zeroshot_ucf101, ...)"),
    checkpoint: str = typer.Argument(None, metavar="[CHECKPOINT]", help="a training checkpoint; none: the recipe's model untrained"),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides"),
    splits: str = typer.Option("1,2,3", help="comma-separated official splits (UCF101, HMDB51)"),
    frozen: bool = typer.Option(False, "--frozen", help="score CHECKPOINT's model with its adapters disabled and frame-mean "
                                "pooling: the frozen-CLIP baseline of that run (without CHECKPOINT the recipe's CLIP is frozen already)"),
) -> None:
    """Classify the videos of new classes without retraining; mean ± population std over splits."""
    from clipadapt.engine.tasks import zero_shot

    own, overrides = _take_overrides([*([checkpoint] if checkpoint else []), *(overrides or [])])
    if len(own) > 1:
        raise ValueError(f"zeroshot takes at most one CHECKPOINT besides key=value overrides; got {len(own)}: {', '.join(own)}")
    checkpoint = Path(own[0]) if own else None
    loaded = _load(recipe, overrides)
    from clipadapt.recipes import dataset_source

    chosen = [int(s) for s in splits.split(",") if s.strip()] if dataset_source(loaded).official_splits else [loaded.data.split]
    result = zero_shot(loaded, checkpoint, chosen, frozen=frozen)
    what = "the frozen CLIP" if checkpoint is None else "frozen baseline, adapters disabled" if frozen else "adapted"
    table = Table(title=f"{loaded.name}: zero-shot, {what}")
    with_top5 = all(m.get("num_classes", 6) > 5 for m in result["splits"].values())
    for column in ("split", "videos", "top-1", *(["top-5"] if with_top5 else [])):
        table.add_column(column)
    for split, metrics in result["splits"].items():
        table.add_row(str(split), str(metrics["num_videos"]), f"{metrics['zeroshot/top1']:.2f}",
                      *([f"{metrics['zeroshot/top5']:.2f}"] if with_top5 else []))
    print_table(table, console)
    console.print(f"top-1 {result['top1_mean']:.2f} ± {result['top1_std']:.2f} (mean ± population std over {len(chosen)} split(s))")


@app.command()
@_user_errors
def predict(
    checkpoint: Path = typer.Argument(..., help="a run directory, a training checkpoint or an exported adapter file"),
    videos: list[str] = typer.Argument(..., metavar="VIDEO...", help="video files, and data.* overrides of how clips are sampled"),
    classes: str = typer.Option(None, help="zero-shot among these names: comma-separated, or a file with one per line"),
    top_k: int = typer.Option(5, min=1, help="how many classes to show (at least 1)"),
    frames: int = typer.Option(None, help="frames per clip (default: the checkpoint's recipe)"),
    adapter_set: str = typer.Option(None, "--adapter-set", help="the adapter set to run, or a+b to stack b on a, as in eval "
                                    "(default: those active when training ended)"),
) -> None:
    """Top-k classes of video files, from a trained checkpoint or zero-shot among given names."""
    from clipadapt.engine.tasks import load_trained, predict as predict_videos
    from clipadapt.recipes import RecipeError, apply_overrides
    from clipadapt.recipes import validate as validate_recipe

    videos, overrides = _take_overrides(videos)
    changing = [override for override in overrides if not override.startswith("data.")]
    if changing:
        raise ValueError(f"predict takes data.* overrides (how clips are sampled) only: {changing[0]!r} would change the trained model")
    if not videos:
        raise ValueError("predict needs at least one VIDEO file")
    names = None
    if classes:
        path = Path(classes)
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else [c.strip() for c in classes.split(",") if c.strip()]
    model = load_trained(checkpoint)  # keeps its recipe: clips are sampled as in training
    if adapter_set:
        from clipadapt.sets import activate

        if "," in adapter_set:
            raise ValueError(f"predict runs one adapter set (or a+b, stacked), got --adapter-set {adapter_set!r}; "
                             "to compare sets use clipadapt eval --adapter-set a,b")
        activate(model, *[s.strip() for s in adapter_set.split("+") if s.strip()])
    if overrides:  # checked as a recipe's values would be; the rest of the stored recipe is as trained
        changed = apply_overrides(model.recipe, overrides)
        keys = tuple(override.partition("=")[0] for override in overrides)
        errors = [error for error in validate_recipe(changed, plugins=False) if error.path.startswith(keys)]
        if errors:
            raise RecipeError(errors, source=str(checkpoint))
        model.recipe = changed
    results = predict_videos(model, videos, num_frames=frames, top_k=top_k, classnames=names)
    for video, top in zip(videos, results):
        table = Table(title=str(video))
        table.add_column("class")
        table.add_column("probability", justify="right")
        for name, probability in top:
            table.add_row(name, f"{probability:.3f}")
        print_table(table, console)


@app.command()
@_user_errors
def flops(
    recipe: str = typer.Argument(..., help="a recipe file or a built-in recipe name"),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides"),
    frames: int = typer.Option(None, help="frames per view (default: the recipe's data.frames)"),
    json_path: Path = typer.Option(None, "--json", help="write the report as JSON"),
    plot: Path = typer.Option(None, help="write a bar chart (PNG) of where FLOPs and parameters go"),
) -> None:
    """GFLOPs per view (and × the recipe's views) and parameters, per component; no data, no download."""
    from clipadapt.analysis.flops import flops_command
    from clipadapt.data.recipe import recipe_classnames
    from clipadapt.models import build_from_recipe

    loaded = _load(recipe, [*(overrides or []), "model.weights=null"])  # weights do not change FLOPs
    model = build_from_recipe(loaded, recipe_classnames(loaded))
    flops_command(model, frames=frames or loaded.data.frames, views=loaded.eval.clips * loaded.eval.crops,
                  num_classes=model.num_classes, image_size=model.preprocess.size, json_path=json_path, plot_path=plot,
                  console=console)


@app.command()
@_user_errors
def prepare(
    list_file: Path = typer.Argument(..., help="a list file (path label per line)"),
    out_dir: Path = typer.Argument(..., help="where the frame stores and the new list file go"),
    root: Path = typer.Option(None, help="the folder the list's paths start from"),
    label_map: Path = typer.Option(None, help="class names, copied to OUT_DIR/labels.txt"),
    short_side: int = typer.Option(320, help="resize frames to this short side (never enlarged); 0 keeps the size"),
    quality: int = typer.Option(90, help="JPEG quality, 1-100"),
    every: int = typer.Option(1, help="keep every k-th frame only"),
    workers: int = typer.Option(None, help="processes (default: all CPUs)"),
) -> None:
    """Decode each video once into a frame store (one file of JPEG frames per video) and write a
    list file naming the stores; resumable, bad videos reported and skipped."""
    from clipadapt.data.prepare import prepare as prepare_store

    prepare_store(list_file, out_dir, root=root, label_map=label_map, short_side=short_side or None,
                  quality=quality, every=every, workers=workers, console=console)


@app.command()
@_user_errors
def export(
    checkpoint: Path = typer.Argument(..., help="a training checkpoint or a run directory"),
    out: Path = typer.Argument(..., help="the adapter file to write (.safetensors)"),
    adapter_set: str = typer.Option(None, "--adapter-set", help="write this adapter set only (with the heads and pooling)"),
) -> None:
    """Write the adapters, pooling and heads of a trained run to a safetensors adapter file."""
    from clipadapt.engine.tasks import export_adapters

    path = export_adapters(checkpoint, out, adapter_set)
    console.print(f"wrote {path}", markup=False)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
