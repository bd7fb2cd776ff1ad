"""Every config of ``open_clip.list_models()``, built small, goes through inject, identity at
init, one training step, save/load and eject (and M2-CLIP's video model where the text tower is a
transformer), or is refused in one line naming the kind of tower; docs/supported_clips.md is the
table this sweep produces (benchmarks/supported_clips.py)."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from supported_clips import NOT_TRANSFORMERS, all_configs, markdown, sweep_row  # noqa: E402

ROWS = {}  # config -> Row, filled by the sweep and read by the docs check (which fills what is missing)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; restored for the rest of the suite."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def row_of(arch: str):
    if arch not in ROWS:
        ROWS[arch] = sweep_row(arch)
    return ROWS[arch]


def refused_kind(row) -> str | None:
    """The non-transformer tower that explains a refusal (None: no such tower)."""
    for kind in NOT_TRANSFORMERS:
        if kind in row.visual:
            return kind
    return "Hugging Face" if row.text.startswith("Hugging Face") else None


@pytest.mark.parametrize("arch", all_configs())
def test_each_open_clip_config_goes_through_every_step_or_is_refused_naming_its_tower(arch):
    row = row_of(arch)
    if row.adapters.startswith("supported"):
        return
    kind = refused_kind(row)
    assert kind is not None, f"a transformer is refused: {row}"
    assert kind.lower() in row.adapters.lower(), \
        f"the refusal does not name the {kind} tower: {row.adapters}"


@pytest.mark.parametrize("arch", all_configs())
def test_m2clips_video_model_builds_and_trains_on_every_transformer_text_tower(arch):
    row = row_of(arch)
    if row.video == "-":
        assert not row.adapters == "supported", f"{arch} has a transformer text tower but no video model row"
        return
    assert row.video == "supported", f"{arch}: {row.video}"


def test_the_supported_clips_page_is_what_the_sweep_produces_now():
    page = (ROOT / "docs" / "supported_clips.md").read_text()
    expected = markdown([row_of(arch) for arch in all_configs()])
    assert page == expected, "docs/supported_clips.md is stale: python benchmarks/supported_clips.py --markdown docs/supported_clips.md"
