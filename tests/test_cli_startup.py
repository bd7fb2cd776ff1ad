"""The command line starts at once: ``--version``, ``--help`` and ``ls`` import neither torch nor
the model and video libraries. Checked through ``sys.modules`` in a fresh process, which does not
depend on the machine's speed; the start-up time itself is measured by benchmarks/bench_cli.py.
``import clipadapt`` exposes its public API lazily (PEP 562) and stays light too."""

import subprocess
import sys

import pytest

import clipadapt
from clipadapt.cli import plain_text
from hang_guard import HANG_GUARD_S

HEAVY = ("torch", "torchvision", "torchcodec", "open_clip", "timm", "transformers", "numpy", "av", "decord", "PIL")

COMMAND = """
import sys
from clipadapt.cli import main
sys.argv = ["clipadapt", *sys.argv[1:]]
try:
    main()
except SystemExit as end:
    assert not end.code, end.code
print("imported:", sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY)))
"""


def run_python(code: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}", *args], capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


@pytest.mark.parametrize("args, shows", [
    (["--version"], f"clipadapt {clipadapt.__version__}"),
    (["--help"], "Turn any CLIP into a video model"),
    (["ls", "adapters"], "M2-CLIP's TED-Adapter"),
    (["ls", "heads"], "Classify a video by its similarity to every class prompt"),
    (["ls", "backbones"], "timm VisionTransformer or Eva (visual tower only)"),
    (["ls", "recipes"], "quickstart"),
])
def test_light_commands_import_nothing_heavy(args, shows):
    lines = run_python(COMMAND, *args)
    assert lines[-1] == "imported: []"
    assert shows in "\n".join(lines[:-1])


def test_validate_imports_torch_for_the_option_checks_but_no_model_or_video_library():
    """Adapter and head options are checked against their classes (torch modules); the model
    families, torchvision's transforms and the video readers are not needed to validate."""
    lines = run_python(COMMAND, "validate", "quickstart")
    assert lines[0] == "ok quickstart"
    assert lines[-1] == "imported: ['numpy', 'torch']"


def test_ls_lists_every_registered_name_with_its_summary():
    lines = "\n".join(run_python(COMMAND, "ls", "adapters")[:-1])
    for name in clipadapt.ADAPTERS.builtin_modules:
        assert f"│ {name} " in lines and plain_text(clipadapt.ADAPTERS.summary(name))[:40] in lines


def test_import_clipadapt_is_light_and_its_api_arrives_on_first_use():
    lines = run_python(
        "import sys\nimport clipadapt\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & set(HEAVY)))\n"
        "import clipadapt.inject\n"  # the submodule of the same name does not hide the function
        "print(clipadapt.inject.__module__, clipadapt.inject.__name__, clipadapt.freeze.__name__)\n"
    )
    assert lines == ["[]", "clipadapt.inject inject freeze_model"]


def test_every_public_name_resolves_and_is_listed_by_dir():
    for name in clipadapt.__all__:
        assert getattr(clipadapt, name) is not None, name
    assert set(clipadapt.__all__) <= set(dir(clipadapt))
    assert clipadapt.VideoCLIP.__name__ == "VideoCLIP" and clipadapt.adapters.ted.TEDAdapter.__name__ == "TEDAdapter"
    with pytest.raises(AttributeError, match="module 'clipadapt' has no attribute 'injekt'"):
        clipadapt.injekt
