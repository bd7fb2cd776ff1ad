import pytest

import clipadapt
from clipadapt.registry import Registry, UnknownNameError


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(UnknownNameError) as err:
        clipadapt.ADAPTERS.get("tde")
    message = str(err.value)
    assert "bottleneck" in message and "ted" in message
    assert "Did you mean 'ted'?" in message


def test_registering_a_taken_name_is_an_error_unless_overridden():
    registry = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(float)
    registry.register("a", override=True)(float)
    assert registry.get("a") is float


def test_builtin_adapters_and_backbones_are_registered():
    assert {"ted", "bottleneck"} <= set(clipadapt.ADAPTERS.names())
    assert {"open_clip", "openai_clip", "hf", "timm"} <= set(clipadapt.BACKBONES.names())


def test_every_name_a_recipe_picks_has_its_builtin_entries_registered():
    from clipadapt.recipes import registries

    known = registries()
    assert {"list", "k400", "ssv2", "ucf101", "hmdb51", "synthetic"} <= set(known["datasets"].names())
    assert {"mean", "conv"} <= set(known["poolings"].names())
    assert {"k400", "ssv2", "none"} <= set(known["transforms"].names())
    assert "adamw" in known["optimizers"] and {"fp32", "bf16", "fp16"} <= set(known["precisions"].names())


PLUGIN = '''
import torch
import clipadapt
from clipadapt.adapters.temporal_pool import TemporalPooling
from clipadapt.data.datasets import Annotations, Entry
from clipadapt.data.recipe import DatasetSource


@clipadapt.register_dataset("one_folder")
class OneFolder(DatasetSource):
    """Every .mp4 under data.root, all of class 0."""

    paths = ("root",)

    def read(self, recipe, split):
        from pathlib import Path

        return Annotations([Entry(str(p), 0) for p in sorted(Path(recipe.data.root).rglob("*.mp4"))], ["thing"])


@clipadapt.register_pooling("last_frame")
class LastFrame(torch.nn.Module):
    def __init__(self, dim, width=None):
        super().__init__()

    def forward(self, frames):
        return frames, frames[:, -1]


@clipadapt.register_transform("flip_only")
def flip_only(size):
    return None


@clipadapt.register_optimizer("plain_sgd")
def plain_sgd(groups, optim_cfg):
    return torch.optim.SGD(groups, lr=optim_cfg.lr)
'''


def test_a_plugin_file_adds_a_dataset_pooling_transform_and_optimizer(tmp_path):
    import torch

    from clipadapt.recipes import load_recipe, validate
    from clipadapt.data.recipe import build_dataset
    from clipadapt.data.synthetic import generate
    from clipadapt.engine.optim import build_optimizer
    from clipadapt.models import build_from_recipe

    (tmp_path / "toy_components.py").write_text(PLUGIN)
    made = generate(tmp_path / "videos", num_classes=2, train_per_class=1, test_per_class=0, num_frames=8, size=32)
    overrides = [f"plugins=[{tmp_path / 'toy_components.py'}]", "data.dataset=one_folder", f"data.root={made.root}",
                 "video.pooling=last_frame", "data.train_aug=flip_only", "optim.name=plain_sgd"]
    recipe = load_recipe("quickstart", overrides)
    dataset = build_dataset(recipe, "train")
    assert len(dataset) == 2 and dataset.classnames == ["thing"] and dataset[0]["video"].shape == (8, 3, 32, 32)
    model = build_from_recipe(recipe, ["thing", "other"])
    per_frame = torch.randn(2, 8, model.embed_dim)
    assert torch.equal(model.pooling(per_frame)[1], per_frame[:, -1])
    assert isinstance(build_optimizer(model, recipe.optim), torch.optim.SGD)
    errors = validate({**recipe.to_dict(), "plugins": [], "data": {**recipe.to_dict()["data"], "dataset": "one_foldr"}})
    assert [(e.path, "Did you mean 'one_folder'?" in e.message) for e in errors] == [("data.dataset", True)]


FAMILY_PLUGIN = '''
import clipadapt
from clipadapt.backbones.open_clip import OpenCLIPSpec


@clipadapt.register_backbone("plugin_clip")
class PluginClip(OpenCLIPSpec):
    """open_clip's models under another family name (built by the plugin, never detected)."""

    family = "plugin_clip"

    @classmethod
    def matches(cls, model):
        return False
'''


def test_a_plugin_family_is_a_valid_model_family_and_a_misspelt_one_is_named(tmp_path):
    from clipadapt.recipes import RecipeError, load_recipe
    from clipadapt.models import build_clip

    (tmp_path / "plugin_family.py").write_text(FAMILY_PLUGIN)
    plugin = f"plugins=[{tmp_path / 'plugin_family.py'}]"
    recipe = load_recipe("quickstart", [plugin, "model.family=plugin_clip"])
    assert recipe.model.family == "plugin_clip"
    assert clipadapt.describe(build_clip(recipe.model.model_dump()))["family"] == "open_clip"
    with pytest.raises(RecipeError, match=r"model\.family: unknown backbone 'plugin_clp'.*Did you mean 'plugin_clip'"):
        load_recipe("quickstart", [plugin, "model.family=plugin_clp"])


BUILTIN_PACKAGES = ("clipadapt.backbones", "clipadapt.adapters", "clipadapt.adapters.temporal_pool", "clipadapt.heads",
                    "clipadapt.data.recipe", "clipadapt.engine.optim", "clipadapt.engine.precision")
REGISTERED = """
import importlib, json, sys
from clipadapt import registry
for module in sys.argv[1:]:
    importlib.import_module(module)
tables = {kind: getattr(registry, kind) for kind in ("ADAPTERS", "HEADS", "BACKBONES", "DATASETS", "POOLINGS",
                                                     "TRANSFORMS", "OPTIMIZERS", "PRECISIONS")}
print(json.dumps({kind: [[name, obj.__module__] for name, obj in table._items.items()] for kind, table in tables.items()}))
"""


def test_the_table_of_builtin_names_is_what_the_builtin_modules_register():
    """A fresh process imports the built-in packages as `import clipadapt` once did and reads what
    their decorators registered, in order; the registries' table of names must say the same."""
    import json
    import subprocess
    import sys

    from hang_guard import HANG_GUARD_S

    from clipadapt import registry

    done = subprocess.run([sys.executable, "-c", REGISTERED, *BUILTIN_PACKAGES], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, check=True)
    registered = json.loads(done.stdout)
    for kind, entries in registered.items():
        assert [list(entry) for entry in getattr(registry, kind).builtin_modules.items()] == entries, kind


def test_listing_a_builtin_summary_reads_the_docstring_the_object_has():
    from clipadapt import registry

    for table in (registry.ADAPTERS, registry.HEADS, registry.BACKBONES):
        fresh = Registry(table.kind, table.builtin_modules)  # nothing imported through it: read from the source
        for name in table.builtin_modules:
            assert fresh.summary(name) == table.get(name).__doc__.strip().splitlines()[0], name


PLUGIN_BEFORE_BUILTINS = """
import sys
import clipadapt
assert "clipadapt.adapters.ted" not in sys.modules

@clipadapt.register_adapter("mine")
class Mine:
    '''a plugin adapter'''

print([name for name, _ in clipadapt.ADAPTERS.items_in_order()])
try:
    clipadapt.register_adapter("ted")(Mine)
except ValueError as error:
    print(error)
"""


def test_a_plugin_registered_first_comes_after_the_builtins_and_cannot_take_their_names():
    import subprocess
    import sys

    from hang_guard import HANG_GUARD_S

    done = subprocess.run([sys.executable, "-c", PLUGIN_BEFORE_BUILTINS], capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    order, refusal = done.stdout.splitlines()
    assert order == str([*clipadapt.ADAPTERS.builtin_modules, "mine"])
    assert refusal.startswith("adapter 'ted' is already registered")


def test_an_unknown_builtin_module_entry_is_a_loud_error():
    broken = Registry("thing", {"ghost": "clipadapt.registry"})  # that module registers no "ghost"
    assert "ghost" in broken.names()
    with pytest.raises(RuntimeError, match=r"built-in thing\(s\) not registered by their modules: \{'ghost'"):
        broken.get("ghost")
