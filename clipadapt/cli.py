"""The ``clipadapt`` command line (typer)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn any CLIP into a video model with small adapters.")
console = Console()

LISTABLE = ("adapters", "heads", "backbones", "recipes")


def _registry(kind: str):
    import clipadapt

    if kind == "adapters":
        return clipadapt.ADAPTERS
    if kind == "heads":
        import clipadapt.heads  # noqa: F401  (registers the built-in heads)

        return clipadapt.HEADS
    if kind == "backbones":
        return clipadapt.BACKBONES
    raise typer.BadParameter(f"cannot list {kind!r}; choose one of {', '.join(LISTABLE)}")


def _first_line(obj) -> str:
    doc = (obj.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


@app.command("ls")
def ls(kind: str = typer.Argument(..., help="adapters | heads | backbones | recipes")) -> None:
    """List registered adapters, heads, backbones or the built-in recipes."""
    if kind == "recipes":
        from clipadapt.config import builtin_recipes

        rows = [(name, str(path)) for name, path in builtin_recipes().items()]
    else:
        rows = [(name, _first_line(obj)) for name, obj in _registry(kind).items()]
    table = Table(title=kind)
    table.add_column("name")
    table.add_column("path" if kind == "recipes" else "description")
    for row in rows:
        table.add_row(*row)
    console.print(table)


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
def inspect(name: str = typer.Argument(..., help="an open_clip config (ViT-B-16) or a timm model name")) -> None:
    """Print towers, blocks, widths, layout, CLS index, patch grid and sites of a backbone."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    from clipadapt.backbones import describe

    info = describe(_build_named_model(name))
    table = Table(title=f"{name} ({info['family']})")
    for column in ("tower", "blocks", "width", "layout", "CLS index", "prefix tokens", "patch grid"):
        table.add_column(column)
    for tower, t in info["towers"].items():
        grid = "x".join(map(str, t["grid"])) if t["grid"] else "-"
        cls_index = "-" if t["cls_index"] is None else str(t["cls_index"])
        table.add_row(tower, str(t["blocks"]), str(t["width"]), t["layout"], cls_index, str(t["prefix_tokens"]), grid)
    console.print(table)
    sites = next(iter(info["towers"].values()))["sites"]
    console.print(f"sites in every block: {', '.join(sites)}")


@app.command()
def demo() -> None:
    """A one-minute tour on a tiny random-weight CLIP: inject, summary, forward, save, load, eject."""
    from clipadapt.demo import run

    run(console)


@app.command()
def validate(
    recipe: str = typer.Argument(..., help="a recipe file or a built-in recipe name (clipadapt ls recipes)"),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides, e.g. optim.lr=3e-4 data.frames=16"),
) -> None:
    """Check a recipe (with overrides): print every error with its key path, or "ok" and a summary."""
    from clipadapt.config import RecipeError, load_recipe

    try:
        loaded = load_recipe(recipe, overrides or [])
    except RecipeError as error:
        lines = str(error).splitlines()
        console.print(f"[bold red]{lines[0]}[/]", highlight=False)
        for line in lines[1:]:
            path, _, message = line.partition(": ")
            console.print(f"  [red]{path}[/]: {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    adapters = ", ".join(f"{a.name}@{a.tower}" for a in loaded.adapters) or "none"
    heads = ", ".join(f"{h.name}×{h.weight:g}" for h in loaded.heads)
    console.print(f"[bold green]ok[/] {loaded.name}", highlight=False)
    console.print(
        f"  model {loaded.model.family} {loaded.model.arch} ({loaded.model.weights or 'random'}); adapters {adapters}; heads {heads}\n"
        f"  data {loaded.data.dataset}, {loaded.data.frames} frames, batch {loaded.data.batch_size}; "
        f"{loaded.schedule.epochs} epochs, lr {loaded.optim.lr:g}, {loaded.precision}; output {loaded.output_dir}",
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
