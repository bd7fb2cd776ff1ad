"""Recipes: schema validation, ``_base_`` inheritance, overrides, plugins and the validate command."""

import copy
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from clipadapt.cli import app
from clipadapt.config import (
    Recipe,
    RecipeError,
    apply_overrides,
    builtin_recipes,
    from_dict,
    load_recipe,
    load_recipe_dict,
    require_data,
    to_yaml,
    validate,
)

VALID, _ = load_recipe_dict("m2clip_k400")
FREE_FORM = ("model.config", "data.synthetic")  # mappings whose keys the schema does not fix
REQUIRED = {"adapters", "heads", "adapters.0.name", "adapters.1.name", "heads.0.name", "heads.1.name", "heads.2.name", "heads.3.name"}
ENUMS = ["model.family", "precision", "data.dataset", "data.sampling", "data.train_aug", "data.on_error", "data.backend", "video.pooling",
         "eval.view_fusion", "eval.crops", "adapters.0.tower", "adapters.0.site", "optim.name", "eval.zero_shot.sampling"]


def _paths(node, prefix=""):
    """Every key path of a nested recipe mapping (list items by index), outside free-form options."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if path.startswith(FREE_FORM) or ".options" in path and path.startswith("heads"):
            continue
        yield path
        yield from _paths(value, path)


PATHS = sorted(_paths(VALID))
KEY_PATHS = [p for p in PATHS if not p.split(".")[-1].isdigit()]
TYPED_PATHS = [p for p in PATHS if ".options." not in p]  # option values are the adapter's to check


def _parent_and_key(data, path):
    *parents, key = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, (int(key) if isinstance(node, list) else key)


def _assert_all_errors_have_paths(errors):
    assert errors and all(isinstance(e.path, str) and e.path and e.message for e in errors)


def test_builtin_recipes_are_valid_and_ship_in_the_package():
    recipes = builtin_recipes()
    assert {"m2clip_k400", "m2clip_ssv2"} <= set(recipes)
    for name, path in recipes.items():
        assert path.parent.name == "recipes" and path.parent.parent.name == "clipadapt"
        assert load_recipe(name).name == name
    assert (Path(__file__).parents[1] / "recipes" / "m2clip_k400.yaml").is_file()


def test_k400_recipe_has_the_spec_values():
    recipe = load_recipe("m2clip_k400")
    assert recipe.optim.lr == pytest.approx(1e-3 * 72 / 256) and recipe.data.batch_size == 72
    assert [(h.name, h.weight) for h in recipe.heads] == [("contrastive", 0.5), ("cmc", 0.5), ("cmlm", 0.1), ("vc", 1.0)]
    assert recipe.adapters[0].site == "pre_mlp" and recipe.adapters[1].lr_mult == 0.5
    assert recipe.output_dir == "runs/m2clip_k400"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(KEY_PATHS))
def test_deleting_a_key_gives_its_default_or_an_error_naming_it(path):
    data = copy.deepcopy(VALID)
    parent, key = _parent_and_key(data, path)
    del parent[key]
    errors = validate(data)
    if path in REQUIRED:
        assert path in [e.path for e in errors]
    else:
        assert errors == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(KEY_PATHS), suffix=st.text("abcxyz_", min_size=1, max_size=4))
def test_renaming_a_key_is_reported_at_the_new_path_with_the_closest_match(path, suffix):
    data = copy.deepcopy(VALID)
    parent, key = _parent_and_key(data, path)
    renamed = key + suffix
    parent[renamed] = parent.pop(key)
    errors = validate(data)
    _assert_all_errors_have_paths(errors)
    new_path = path.rsplit(".", 1)[0] + "." + renamed if "." in path else renamed
    unknown = [e for e in errors if e.path == new_path]
    assert unknown and "did you mean" in unknown[0].message


WRONG_VALUES = st.sampled_from([{"nested": 1}, [[1]], "zz_not_valid", -7, 2.5, True, None])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(TYPED_PATHS), value=WRONG_VALUES)
def test_wrong_values_never_raise_and_errors_name_a_key_path(path, value):
    data = copy.deepcopy(VALID)
    parent, key = _parent_and_key(data, path)
    original = parent[key]
    parent[key] = value
    errors = validate(data)
    if errors:
        _assert_all_errors_have_paths(errors)
        assert any(e.path.startswith(path) or e.path.startswith(path.split(".")[0]) for e in errors)
    if isinstance(value, dict) and not isinstance(original, dict):
        assert any(e.path.startswith(path) for e in errors)


@settings(max_examples=20, deadline=None)
@given(path=st.sampled_from(ENUMS))
def test_a_value_outside_an_enum_lists_the_accepted_ones(path):
    data = copy.deepcopy(VALID)
    parent, key = _parent_and_key(data, path)
    parent[key] = "zz_bad"
    errors = validate(data)
    assert [e.path for e in errors] == [path]
    assert "zz_bad" in errors[0].message


def test_every_error_is_listed_not_only_the_first():
    with pytest.raises(RecipeError) as raised:
        load_recipe("m2clip_k400", ["optim.lr=fast", "precision=bf17", "data.framse=16", "adapters.0.name=tedd"])
    assert [e.path for e in raised.value.errors] == ["data.framse", "optim.lr", "precision", "adapters.0.name"]
    message = str(raised.value).lower()
    assert len(message.splitlines()) == 5 and "did you mean 'frames'" in message and "did you mean 'ted'" in message


def test_adapter_options_are_checked_against_the_adapter_signature():
    errors = validate(apply_overrides(VALID, ["adapters.0.options.widht=192"]))
    assert [e.path for e in errors] == ["adapters.0.options.widht"] and "'width'" in errors[0].message


def test_unknown_site_is_an_error():
    errors = validate(apply_overrides(VALID, ["adapters.0.site=pre_mpl"]))
    assert [e.path for e in errors] == ["adapters.0.site"] and "pre_mlp" in errors[0].message


def test_overrides_set_dotted_keys_list_items_and_yaml_values():
    recipe = load_recipe(
        "m2clip_k400", ["optim.lr=1e-3", "data.frames=16", "adapters.0.options.width=192", "adapters.1.layers=[10, 11]",
                        "optim.clip_grad=null", "eval.heads=[vc, fused]"]
    )
    assert recipe.optim.lr == 1e-3 and recipe.data.frames == 16
    assert recipe.adapters[0].options == {"width": 192, "zero_first_frame": False} and recipe.adapters[1].layers == [10, 11]
    assert recipe.optim.clip_grad is None and recipe.eval.heads == ["vc", "fused"]


def test_override_of_a_missing_list_index_names_it():
    with pytest.raises(RecipeError, match=r"adapters\.7: '7' is not an index"):
        load_recipe("m2clip_k400", ["adapters.7.options.width=1"])


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_base_chain_merges_mappings_replaces_lists_and_resolves_builtin_names(tmp_path):
    _write(tmp_path / "middle.yaml", """
        _base_: m2clip_k400
        optim: {lr: 1.0e-4}
        heads: [{name: vc}]
        """)
    (tmp_path / "sub").mkdir()
    leaf = _write(tmp_path / "sub" / "leaf.yaml", """
        _base_: ../middle.yaml
        data: {frames: 32, stride: 4}
        """)
    recipe = load_recipe(leaf, ["seed=5"])
    assert recipe.optim.lr == 1e-4 and recipe.optim.weight_decay == 0.01  # merged mapping
    assert [h.name for h in recipe.heads] == ["vc"]  # list replaced
    assert (recipe.data.frames, recipe.data.stride, recipe.data.batch_size) == (32, 4, 72)
    assert recipe.seed == 5 and recipe.name == "leaf" and recipe.output_dir == "runs/leaf"


def test_base_cycle_is_an_error_naming_the_chain(tmp_path):
    _write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(RecipeError, match=r"_base_: inheritance cycle: a.yaml -> b.yaml -> a.yaml"):
        load_recipe(tmp_path / "a.yaml")


def test_missing_base_names_the_file_and_the_builtin_recipes(tmp_path):
    child = _write(tmp_path / "child.yaml", "_base_: m2clip_k40\n")
    with pytest.raises(RecipeError, match=r"did you mean 'm2clip_k400'"):
        load_recipe(child)


def test_set_but_missing_files_are_errors_and_null_data_paths_wait_for_run(tmp_path):
    errors = validate(apply_overrides(VALID, [f"data.train_list={tmp_path}/none.txt", f"resume={tmp_path}/x.pt"]))
    assert [e.path for e in errors] == ["data.train_list", "resume"]
    recipe = load_recipe("m2clip_k400")
    with pytest.raises(RecipeError) as raised:
        require_data(recipe)
    assert [e.path for e in raised.value.errors] == ["data.root", "data.train_list", "data.val_list"]


def test_plugins_are_imported_to_register_names(tmp_path, monkeypatch):
    _write(tmp_path / "my_plugin_adapters.py", """
        import clipadapt
        @clipadapt.register_adapter("my_plugin_adapter", override=True)
        class Mine(clipadapt.Adapter):
            def __init__(self, dim, gain=1.0):
                super().__init__()
            def forward(self, x, ctx):
                return x * 0
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = apply_overrides(VALID, ["adapters.0.name=my_plugin_adapter", "adapters.0.options={gain: 2.0}"])
    assert [e.path for e in validate(data)] == ["adapters.0.name"]
    data["plugins"] = ["my_plugin_adapters"]
    assert validate(data) == []
    data["plugins"] = ["no_such_plugin_module"]
    assert [e.path for e in validate(data)] == ["plugins.0"]  # the adapter stays registered once imported


def test_recipe_round_trips_through_yaml():
    recipe = load_recipe("m2clip_ssv2")
    again = from_dict(yaml.safe_load(to_yaml(recipe)), name=recipe.name)
    assert isinstance(again, Recipe) and again == recipe


runner = CliRunner()


def test_validate_command_prints_ok_and_a_summary():
    result = runner.invoke(app, ["validate", "m2clip_k400", "data.frames=16"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok m2clip_k400") and "16 frames" in result.output


def test_validate_command_prints_every_error_and_fails():
    result = runner.invoke(app, ["validate", "m2clip_k400", "optim.lr=fast", "precision=bf17"])
    assert result.exit_code == 1
    assert "optim.lr" in result.output and "precision" in result.output and "Traceback" not in result.output


def test_view_fusion_and_fuse_heads_are_checked():
    recipe = load_recipe("m2clip_k400", ["eval.view_fusion=max", "eval.fuse_heads=[vc]"])
    assert recipe.eval.view_fusion == "max" and recipe.eval.fuse_heads == ["vc"]
    assert load_recipe("st_adapter_k400").eval.fuse_heads == ["vc", "cmc"]
    errors = validate(apply_overrides(VALID, ["eval.view_fusion=mean_logits", "eval.fuse_heads=[vc, cmcc]"]))
    assert [e.path for e in errors] == ["eval.view_fusion", "eval.fuse_heads.1"]
    assert "did you mean 'mean_logit'" in errors[0].message and "Did you mean 'cmc'" in errors[1].message
