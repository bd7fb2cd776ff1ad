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
from clipadapt.recipes import (
    MAX_OPTION_INT,
    Recipe,
    RecipeError,
    recipe_json_schema,
    apply_overrides,
    builtin_recipes,
    from_dict,
    load_recipe,
    load_recipe_dict,
    require_data,
    to_yaml,
    validate,
)
from hang_guard import HANG_GUARD_S

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


WRONG = [{"nested": 1}, [[1]], "zz_not_valid", -7, 2.5, True, None]
WRONG_VALUES = st.sampled_from(WRONG)
# Which of WRONG_VALUES each key accepts, from the Fields tables of docs/recipes.md (not from the schema):
NULLABLE = ("adapters.0.site", "adapters.1.site", "data.root", "data.train_list", "data.val_list", "data.test_list",
            "data.label_map", "eval.heads", "model.precision_frozen", "model.weights", "optim.clip_grad", "resume")
FREE_TEXT = ("model.arch", "model.weights", "output_dir", "video.templates.0")  # any string
INDEXES = ("adapters.0.layers", "adapters.1.layers", "adapters.1.layers.0")  # block indexes, negative from the end
FRACTIONS = ("adapters.0.lr_mult", "adapters.1.lr_mult", "heads.0.weight", "heads.1.weight", "heads.2.weight",
             "heads.3.weight", "optim.clip_grad", "optim.eps", "optim.lr", "optim.weight_decay", "schedule.min_lr",
             "schedule.warmup_epochs")  # non-negative numbers
BOOLEANS = ("model.grad_checkpointing",)


def _documented_to_accept(path, value):
    if value is None:
        return path in NULLABLE
    if isinstance(value, bool):
        return path in BOOLEANS
    if isinstance(value, str):
        return path in FREE_TEXT
    if isinstance(value, int):
        return path in INDEXES
    if isinstance(value, float):
        return path in FRACTIONS
    return False


def _check_wrong_value(path, value):
    data = copy.deepcopy(VALID)
    parent, key = _parent_and_key(data, path)
    parent[key] = value
    errors = validate(data)
    if _documented_to_accept(path, value):
        assert errors == [], f"{path}={value!r}: {list(map(str, errors))}"
        return
    assert errors, f"{path}={value!r} was accepted"
    assert all(e.path == path or e.path.startswith(path + ".") for e in errors), list(map(str, errors))
    if isinstance(value, dict):  # a mapping where a section goes: its unknown key; elsewhere: the mapping itself
        assert any(e.path in (path, f"{path}.nested") for e in errors)
    elif isinstance(value, list):  # an item of the list is wrong, or the list itself
        assert any(e.path in (path, f"{path}.0") for e in errors)
    else:
        assert [e.path for e in errors] == [path]
        assert repr(value) in errors[0].message or str(value) in errors[0].message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(TYPED_PATHS), value=WRONG_VALUES)
def test_a_wrong_value_is_one_error_at_its_key_naming_the_value(path, value):
    _check_wrong_value(path, value)


def test_every_wrong_value_at_every_key_is_reported_or_documented_as_accepted():
    for path in TYPED_PATHS:
        for value in WRONG:
            _check_wrong_value(path, value)


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
    assert [e.path for e in raised.value.errors] == ["adapters.0.name", "data.framse", "optim.lr", "precision"]  # in section order
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


# ---------------------------------------------------------------------------------------------
# validate rejects what run would reject


def _errors(overrides):
    return [str(e) for e in validate(apply_overrides(VALID, overrides))]


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=.nan", "optim.lr: must be a finite number, got nan"),
    ("optim.lr=.inf", "optim.lr: must be a finite number, got inf"),
    ("optim.lr=-0.001", "optim.lr: must be at least 0.0, got -0.001"),
    ("schedule.warmup_epochs=.nan", "schedule.warmup_epochs: must be a finite number, got nan"),
    ("seed=1e23", "seed: expected an integer, got '1e23' (str)"),
    ("seed=100000000000000000000000", "seed: must be below 9223372036854775808, got 100000000000000000000000"),
    ("heads=[]", "heads: must list at least one item"),
    ("optim.betas=[0.9]", "optim.betas: expected at least 2 items, got 1"),
    ("optim.clip_grad=0", "optim.clip_grad: must be above 0.0, got 0"),
    ("eval.crops=true", "eval.crops: expected one of 1, 3, 4, got True (bool)"),
    ("eval.heads=[vcc]", "eval.heads.0: 'vcc' is not a head of this recipe; accepted: contrastive, cmc, cmlm, vc, fused; did you mean 'vc'?"),
    ("data.frames=100000", "data.frames: must be at most 1024, got 100000"),
])
def test_validate_rejects_what_a_run_would(override, expected):
    assert _errors([override]) == [expected]


def test_betas_outside_zero_one_are_each_named():
    assert _errors(["optim.betas=[2, -1]"]) == ["optim.betas.0: must be below 1.0, got 2", "optim.betas.1: must be at least 0.0, got -1"]


def test_absurd_shapes_are_refused_before_anything_is_built():
    errors = _errors(["adapters.0.options.width=268435456"])
    assert errors == [f"adapters.0.options.width: 268435456 is beyond any model's sizes (at most {MAX_OPTION_INT})"]
    quick, _ = load_recipe_dict("quickstart", ["model.config.width=1048576"])
    assert [e.path for e in validate(quick)] == ["model.config.width", "model.config"]
    quick, _ = load_recipe_dict("quickstart", ["model.config.width=65536", "model.config.layers=48"])
    assert [str(e) for e in validate(quick)] == ["model.config: asks for about 2.5e+12 parameters; at most 5e+09"]
    errors = _errors(["data.batch_size=4096", "data.frames=64", "data.size=1024"])
    assert errors == ["data.batch_size: one step's clips would take 3072 GiB (batch_size/accumulate × frames × 3 × size² × 4 bytes); at most 64 GiB"]


def test_head_options_are_checked_against_the_head():
    assert _errors(["heads.0.options.gatherr=global"]) == [
        "heads.0.options.gatherr: not an option of head 'contrastive'; did you mean 'gather'? accepted: gather, sharpness"]


# ---------------------------------------------------------------------------------------------
# _base_: replacing a mapping


def test_delete_marker_and_an_empty_mapping_replace_the_base_instead_of_merging(tmp_path):
    _write(tmp_path / "child.yaml", """
        _base_: quickstart
        compare: {}
        adapters:
          - {name: ted, options: {_delete_: true, width: 16}}
        optim: {_delete_: true, lr: 0.5}
        """)
    recipe = load_recipe(tmp_path / "child.yaml")
    assert recipe.compare == {}  # the base's two variants are gone
    assert recipe.optim.lr == 0.5 and recipe.optim.weight_decay == 0.01  # the default, not the base's 0.01 merged
    assert recipe.adapters[0].options == {"width": 16}
    _write(tmp_path / "merge.yaml", "_base_: quickstart\noptim: {lr: 0.5}\ncompare: {extra: []}\n")
    merged = load_recipe(tmp_path / "merge.yaml")
    assert list(merged.compare) == ["m2clip", "frame_mean_baseline", "extra"] and merged.optim.lr == 0.5


def test_delete_marker_replaces_a_nested_base_mapping(tmp_path):
    _write(tmp_path / "child.yaml", """
        _base_: quickstart
        model: {config: {_delete_: true, embed_dim: 32, vision_cfg: {image_size: 32, patch_size: 8, width: 32, layers: 1}, text_cfg: {context_length: 16, vocab_size: 100, width: 32, layers: 1, heads: 2}}}
        """)
    config = load_recipe(tmp_path / "child.yaml").model.config
    assert config["vision_cfg"] == {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1}  # no head_width from the base


def test_a_delete_marker_at_the_top_level_is_an_error(tmp_path):
    _write(tmp_path / "child.yaml", "_base_: quickstart\n_delete_: true\n")
    with pytest.raises(RecipeError, match="_delete_: goes inside a mapping"):
        load_recipe(tmp_path / "child.yaml")


# ---------------------------------------------------------------------------------------------
# Bounded parsing


def _bomb(levels=20):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path, monkeypatch):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert path.stat().st_size < 4096  # 10 × 9^19 strings once expanded
    built = []
    monkeypatch.setattr(yaml.SafeLoader, "construct_document", lambda self, node: built.append(node))
    with pytest.raises(RecipeError, match=r"expands to more than 100000 nodes") as raised:
        load_recipe(path)
    assert built == [] and len(str(raised.value).splitlines()) == 2


def test_an_alias_bomb_in_an_override_or_a_base_is_refused(tmp_path):
    with pytest.raises(RecipeError, match=r"seed: not a recipe: expands to more than"):
        load_recipe("quickstart", ["seed=" + "{" + _bomb().replace("\n", ", ").rstrip(", ") + "}"])
    (tmp_path / "bomb.yaml").write_text(_bomb())
    _write(tmp_path / "child.yaml", "_base_: bomb.yaml\n")
    with pytest.raises(RecipeError, match=r"bomb.yaml: 1 error"):
        load_recipe(tmp_path / "child.yaml")


def test_a_recursive_alias_is_refused(tmp_path):
    (tmp_path / "loop.yaml").write_text("a: &a [1, *a]\n")
    with pytest.raises(RecipeError, match="refers to a node that contains it"):
        load_recipe(tmp_path / "loop.yaml")


def test_small_documents_with_aliases_still_load(tmp_path):
    _write(tmp_path / "aliases.yaml", """
        _base_: quickstart
        optim: &optim {lr: 0.02}
        schedule: {epochs: 3, warmup_epochs: 1}
        """)
    assert load_recipe(tmp_path / "aliases.yaml").optim.lr == 0.02


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file, not a YAML"),
    (b"seed: \xff\xfe\n", "not UTF-8 text"),
    (b"# " + b"x" * (1 << 20) + b"\n", "larger than 1024 KiB"),
])
def test_binary_or_oversized_recipes_and_bases_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "bad.yaml").write_bytes(content)
    _write(tmp_path / "child.yaml", "_base_: bad.yaml\n")
    for recipe in ("bad.yaml", "child.yaml"):
        with pytest.raises(RecipeError) as raised:
            load_recipe(tmp_path / recipe)
        assert len(raised.value.errors) == 1 and message in raised.value.errors[0].message
        assert str(tmp_path / "bad.yaml") in str(raised.value)
        result = runner.invoke(app, ["validate", str(tmp_path / recipe)])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1 and message in result.output


# ---------------------------------------------------------------------------------------------
# JSON Schema


def test_json_schema_accepts_every_builtin_recipe_and_rejects_broken_ones():
    jsonschema = pytest.importorskip("jsonschema")
    from clipadapt.recipes.files import load_with_bases, read_yaml_file

    schema = recipe_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    checker = jsonschema.Draft202012Validator(schema)
    for path in builtin_recipes().values():
        assert list(checker.iter_errors(read_yaml_file(path))) == []  # the file as written (with its _base_)
        assert list(checker.iter_errors(load_with_bases(path))) == []  # and merged
    broken = apply_overrides(VALID, ["optim.lr=fast", "data.framse=3", "eval.crops=2"])
    assert sorted(tuple(e.path) for e in checker.iter_errors(broken)) == [("data",), ("eval", "crops"), ("optim", "lr")]
    assert list(checker.iter_errors({"model": {"family": "hf"}})) != []  # adapters and heads are required without a _base_


def test_json_schema_lists_registered_names_for_editors():
    data = recipe_json_schema()["$defs"]["DataCfg"]["properties"]
    assert {"list", "k400", "ssv2", "ucf101", "hmdb51", "synthetic"} <= set(data["dataset"]["anyOf"][0]["enum"])
    assert {"k400", "ssv2", "none"} <= set(data["train_aug"]["anyOf"][0]["enum"])


def test_schema_command_prints_the_schema():
    import json

    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0 and json.loads(result.output) == recipe_json_schema()


# ---------------------------------------------------------------------------------------------
# model.precision_frozen


@pytest.mark.parametrize("frozen, precision", [("bf16", "fp32"), ("fp16", "fp32"), ("fp16", "bf16"), ("bf16", "fp16")])
def test_frozen_precision_other_than_the_autocast_is_refused(frozen, precision):
    errors = validate(apply_overrides(VALID, [f"model.precision_frozen={frozen}", f"precision={precision}"]))
    assert [e.path for e in errors] == ["model.precision_frozen"]
    assert f"need precision: {frozen}" in errors[0].message and f"got precision {precision}" in errors[0].message


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_frozen_precision_with_its_autocast_trains(dtype):
    import torch

    from clipadapt.data.recipe import recipe_classnames
    from clipadapt.engine.precision import autocast
    from clipadapt.models import build_from_recipe

    recipe = load_recipe("quickstart", [f"model.precision_frozen={dtype}", f"precision={dtype}"])
    torch.manual_seed(0)
    model = build_from_recipe(recipe, recipe_classnames(recipe))
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[dtype])}
    with autocast(recipe.precision, torch.device("cpu")):
        out = model(torch.randn(2, 8, 3, 32, 32), torch.tensor([0, 1]))
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(out["loss"]) and all(g is not None and torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------------------------
# Plugins


def test_a_plugin_that_fails_on_import_is_one_error_naming_it(tmp_path, monkeypatch):
    _write(tmp_path / "broken_plugin_mod.py", "raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    errors = validate({**VALID, "plugins": ["broken_plugin_mod"]})
    assert [str(e) for e in errors] == ["plugins.0: plugin 'broken_plugin_mod' failed while importing: RuntimeError: no GPU here"]


def test_a_plugin_file_given_by_path_is_imported(tmp_path):
    plugin = _write(tmp_path / "file_plugin.py", """
        import clipadapt
        @clipadapt.register_adapter("file_plugin_adapter", override=True)
        class Mine(clipadapt.Adapter):
            def __init__(self, dim, gain=1.0):
                super().__init__()
            def forward(self, x, ctx):
                return x * 0
        """)
    data = apply_overrides(VALID, ["adapters.0.name=file_plugin_adapter", "adapters.0.options={gain: 2.0}"])
    assert validate({**data, "plugins": [str(plugin)]}) == []
    assert [str(e) for e in validate({**data, "plugins": [str(tmp_path / "none.py")]})][0].startswith("plugins.0: cannot import")


def test_validate_lists_the_plugins_then_imports_them_and_no_plugins_skips_them(tmp_path, monkeypatch):
    _write(tmp_path / "listed_plugin_mod.py", """
        import clipadapt
        print("IMPORTED listed_plugin_mod")
        @clipadapt.register_head("listed_plugin_head", override=True)
        class Mine(clipadapt.HEADS.get("vc")):
            pass
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(tmp_path / "r.yaml", "_base_: quickstart\nplugins: [listed_plugin_mod]\nheads: [{name: listed_plugin_head}]\n")
    skipped = runner.invoke(app, ["validate", str(tmp_path / "r.yaml"), "--no-plugins"])
    assert skipped.exit_code == 0, skipped.output
    assert "IMPORTED" not in skipped.output and "importing plugins" not in skipped.output
    assert "skipped: plugins listed_plugin_mod not imported" in skipped.output
    assert "skipped: heads.0.name: 'listed_plugin_head' not checked (plugins not imported)" in skipped.output
    result = runner.invoke(app, ["validate", str(tmp_path / "r.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "importing plugins: listed_plugin_mod" and lines[1] == "IMPORTED listed_plugin_mod"
    assert "skipped" not in result.output and lines[2].startswith("ok r")


def test_a_file_in_the_working_directory_never_shadows_a_plugin(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "installed").mkdir()
    _write(tmp_path / "installed" / "shadowed_plugin.py", "print('the installed plugin')\n")
    work = tmp_path / "work"
    work.mkdir()
    _write(work / "shadowed_plugin.py", "raise SystemExit('the working-directory copy was imported')\n")
    _write(work / "r.yaml", "_base_: quickstart\nplugins: [shadowed_plugin]\n")
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, str(tmp_path / "installed")]), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "clipadapt.cli", "validate", "r.yaml"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the installed plugin" in result.stdout and "working-directory copy" not in result.stdout + result.stderr


def test_eval_without_data_names_the_missing_keys():
    result = runner.invoke(app, ["eval", "m2clip_k400", "runs/none/best.pt"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "data.root: a 'k400' run needs this path" in result.output and "data.val_list" in result.output
