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
    return next((kind for kind in NOT_TRANSFORMERS if kind in row.visual), None)


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
        assert not row.adapters.startswith("supported"), f"{arch} takes adapters but has no video model row"
        return
    if row.text.startswith("Hugging Face"):  # not pre-norm CLIP blocks: refused in one line naming that tower
        assert row.adapters.startswith("supported in the visual tower; text adapters refused"), row
        assert row.video.startswith("refused: ") and "HFTextEncoder" in row.video, row
        return
    assert row.video == "supported", f"{arch}: {row.video}"


def test_the_supported_clips_page_is_what_the_sweep_produces_now():
    page = (ROOT / "docs" / "supported_clips.md").read_text()
    expected = markdown([row_of(arch) for arch in all_configs()])
    assert page == expected, "docs/supported_clips.md is stale: python benchmarks/supported_clips.py --markdown docs/supported_clips.md"


@pytest.mark.parametrize("arch, model_type", [("roberta-ViT-B-32", "roberta"), ("xlm-roberta-base-ViT-B-32", "xlm-roberta"),
                                              ("mt5-base-ViT-B-32", "mt5"), ("nllb-clip-base", "m2m_100")])
def test_a_hugging_face_text_tower_is_built_small_as_a_random_model_of_its_type(arch, model_type):
    from clipadapt.backbones import TinyConfig
    from clipadapt.backbones.shrink import small_open_clip

    tiny = TinyConfig()
    clip = small_open_clip(arch, tiny)
    text = clip.text.transformer
    assert clip.text.config.model_type == model_type
    assert tuple(text.get_input_embeddings().weight.shape) == (tiny.vocab_size, tiny.text_width)
    ids = torch.randint(5, 100, (2, 8))
    assert clip.encode_text(ids).shape == (2, clip.text.output_dim)


def test_a_hugging_face_text_model_of_an_unknown_type_is_refused_naming_it():
    from clipadapt.backbones.base import UnsupportedModelError
    from clipadapt.backbones.shrink import small_hf_text_config

    with pytest.raises(UnsupportedModelError, match="'some/gpt-neo' is not built small.*give its config.json"):
        small_hf_text_config("some/gpt-neo")
