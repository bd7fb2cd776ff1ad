import pytest
from typer.testing import CliRunner

from clipadapt.cli import app

runner = CliRunner()


def test_inspect_prints_towers_grid_and_sites():
    result = runner.invoke(app, ["inspect", "ViT-B-16"])
    assert result.exit_code == 0, result.output
    assert "visual" in result.output and "14x14" in result.output and "768" in result.output
    assert "pre_attn, attn_out, pre_mlp, mlp_parallel, post_block" in result.output


def test_inspect_unknown_name_fails_with_a_message():
    result = runner.invoke(app, ["inspect", "ViT-Q-99"])
    assert result.exit_code != 0
    assert "neither an open_clip config" in result.output


def test_ls_adapters_and_backbones():
    result = runner.invoke(app, ["ls", "adapters"])
    assert result.exit_code == 0 and "ted" in result.output and "bottleneck" in result.output
    result = runner.invoke(app, ["ls", "backbones"])
    assert result.exit_code == 0 and "openai_clip" in result.output


@pytest.mark.parametrize("kind", ["adapters", "heads", "backbones", "recipes"])
def test_ls_descriptions_are_plain_words_not_docstring_markup(kind):
    result = CliRunner().invoke(app, ["ls", kind])
    assert result.exit_code == 0, result.output
    assert "`" not in result.output and ":class:" not in result.output and "…" not in result.output, result.output
