import pytest
import torch.nn as nn

from clipadapt.backbones import UnsupportedModelError, describe, detect, towers_of
from tiny import BUILDERS, towers_for


def test_each_family_is_detected_by_structure(family, tiny):
    assert detect(tiny).family == family
    assert tuple(towers_of(tiny)) == towers_for(family)


def test_towers_report_width_grid_and_cls(family, tiny):
    visual = towers_of(tiny)["visual"]
    assert visual.width == 64 and len(visual.blocks) == 2
    assert visual.grid == (4, 4) and visual.cls_index == 0 and visual.num_prefix_tokens == 1
    assert visual.seq_first == (family == "openai_clip")


def test_hf_single_tower_models_are_supported():
    from transformers import CLIPTextModel, CLIPVisionModel

    hf = BUILDERS["hf"]()
    vision = CLIPVisionModel(hf.config.vision_config)
    text = CLIPTextModel(hf.config.text_config)
    assert list(towers_of(vision)) == ["visual"]
    assert list(towers_of(text)) == ["text"]


def test_unsupported_model_error_says_what_was_looked_for():
    with pytest.raises(UnsupportedModelError, match="looked for .*resblocks"):
        detect(nn.Sequential(nn.Linear(2, 2)))


def test_describe_lists_sites(tiny):
    info = describe(tiny)
    assert info["towers"]["visual"]["sites"] == ["pre_attn", "attn_out", "pre_mlp", "mlp_parallel", "post_block"]
