"""The command line as a newcomer meets it: --version, readable --help, ls, cp, synthetic, errors."""

import re
from importlib.metadata import version

import pytest
import yaml
from typer.testing import CliRunner

from clipadapt.cli import app
from clipadapt.recipes import builtin_recipes, load_recipe

runner = CliRunner()
COMMANDS = ["ls", "cp", "synthetic", "inspect", "demo", "validate", "run", "eval", "zeroshot", "predict", "flops"]


def test_version_prints_the_installed_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"clipadapt {version('clipadapt')}"


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]], ids=["app", *COMMANDS])
def test_help_shows_no_python_types(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    found = re.findall(r"<(?:bool|str|int|float|path|list\[[^\]]*\])>|\{[a-z_]+\}|list\[", result.output)
    assert not found, f"{found} in:\n{result.output}"


def test_ls_recipes_gives_one_line_descriptions_not_paths():
    from clipadapt.cli import recipe_description

    result = runner.invoke(app, ["ls", "recipes"])
    assert result.exit_code == 0
    assert ".yaml" not in result.output and "description" in result.output
    names = [line.split("│")[1].strip() for line in result.output.splitlines() if line.count("│") == 3]
    assert [n for n in names if n] == list(builtin_recipes())
    descriptions = {name: recipe_description(path) for name, path in builtin_recipes().items()}
    assert all(0 < len(text) <= 100 and "\n" not in text for text in descriptions.values()), descriptions
    assert descriptions["m2clip_k400"] == "M2-CLIP on Kinetics-400, ViT-B/16, 8 frames (the authors' release; see docs/recipes.md)"
    assert descriptions["quickstart"] == "M2-CLIP against a frame-average baseline on synthetic motion data, tiny random-weight CLIP"


def test_cp_copies_a_builtin_recipe_that_then_validates(tmp_path):
    result = runner.invoke(app, ["cp", "m2clip_ssv2", str(tmp_path)])
    assert result.exit_code == 0, result.output
    copied = tmp_path / "m2clip_ssv2.yaml"
    assert copied.read_text() == builtin_recipes()["m2clip_ssv2"].read_text()
    assert yaml.safe_load(copied.read_text())["_base_"] == "m2clip_k400"
    assert load_recipe(str(copied)).to_dict() == load_recipe("m2clip_ssv2").to_dict()
    named = tmp_path / "mine.yaml"
    assert runner.invoke(app, ["cp", "quickstart", str(named)]).exit_code == 0 and named.is_file()


def test_cp_refuses_to_overwrite_and_names_unknown_recipes(tmp_path):
    target = tmp_path / "mine.yaml"
    target.write_text("keep me")
    result = runner.invoke(app, ["cp", "quickstart", str(target)])
    assert result.exit_code == 1 and "exists" in result.output and target.read_text() == "keep me"
    result = runner.invoke(app, ["cp", "quickstrat", str(tmp_path / "x.yaml")], terminal_width=200)
    assert result.exit_code == 1 and "'quickstrat' is not a built-in recipe" in result.output and "quickstart" in result.output


def test_synthetic_generates_the_dataset_on_its_own_and_says_when_it_reuses_it(tmp_path):
    args = ["synthetic", f"data.root={tmp_path}", "data.synthetic.train_per_class=1", "data.synthetic.test_per_class=1",
            "data.synthetic.num_classes=2"]
    first = runner.invoke(app, args, terminal_width=200)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("generated: 4 videos of 2 classes")
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 4
    assert (tmp_path / "train.txt").read_text().count("\n") == 2
    again = runner.invoke(app, args, terminal_width=200)
    assert again.exit_code == 0 and again.output.startswith("already there with these settings, reused: 4 videos")


def test_synthetic_refuses_a_recipe_with_real_data():
    result = runner.invoke(app, ["synthetic", "m2clip_k400"], terminal_width=200)
    assert result.exit_code == 1 and "data.dataset 'k400'" in result.output


def test_predict_top_k_zero_is_an_error(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path / "best.pt"), str(tmp_path / "a.mp4"), "--top-k", "0"])
    assert result.exit_code == 2 and "--top-k" in result.output


def test_predict_in_python_refuses_top_k_zero():
    from clipadapt.engine.tasks import predict

    with pytest.raises(ValueError, match="top_k must be at least 1, got 0"):
        predict(None, ["a.mp4"], top_k=0)


def test_an_unknown_adapter_option_lists_the_accepted_ones():
    import open_clip

    import clipadapt

    clip = open_clip.CLIP(embed_dim=32, vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
                          text_cfg=dict(context_length=16, vocab_size=100, width=32, layers=2, heads=2))
    message = "'widht' is not an option of adapter 'ted'; did you mean 'width'? accepted: kernel_size, mode, parts, shared_projections, width, zero_first_frame"
    with pytest.raises(TypeError, match=re.escape(message)):
        clipadapt.inject(clip, "ted", widht=16)
    assert not clipadapt.injections(clip)


def test_validate_describes_the_quickstarts_tiny_model_as_it_is():
    result = runner.invoke(app, ["validate", "quickstart"])
    words = " ".join(result.output.split())
    assert result.exit_code == 0
    assert "tiny CLIP from model.config (model.arch unused): visual 4 blocks of width 64, 32 px in 8 px patches" in words
    assert "random weights" in words and "ViT-B-16" not in words
    full = " ".join(runner.invoke(app, ["validate", "m2clip_k400"]).output.split())
    assert "open_clip ViT-B-16, weights openai" in full


def test_a_rebuilt_random_weight_model_is_the_one_that_was_trained():
    """A checkpoint holds only trainable weights: the frozen random CLIP must come back the same."""
    import torch

    from clipadapt.models import build_from_recipe

    def frozen(recipe):
        return {name: p for name, p in build_from_recipe(recipe, ["a", "b"]).named_parameters() if not p.requires_grad}

    recipe = load_recipe("quickstart")
    torch.manual_seed(1)
    a = frozen(recipe)
    torch.manual_seed(2)
    b = frozen(recipe)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = frozen(load_recipe("quickstart", ["seed=1"]))
    assert not all(torch.equal(a[k], other[k]) for k in a)
