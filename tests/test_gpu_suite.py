"""benchmarks/gpu_suite.py: its CPU smoke mode runs (without av, decord, fvcore or torchcodec,
as on the lent GPU machine), its inference FLOP count sees attention, and a missing GPU video
decoder is one line and a fallback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_open_clip
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import gpu_suite  # noqa: E402
from hang_guard import HANG_GUARD_S

ABSENT_ON_THE_GPU_MACHINE = ["av", "decord", "fvcore", "torchcodec"]


def vit_forward_flops(images, width, layers, patch, grid, embed_dim):
    """A CLIP ViT's forward FLOPs written out (2 per multiply-add): patch embedding, per block
    qkv, scores, scores·values, output projection, a 4× MLP, then the CLS projection."""
    tokens = grid * grid + 1
    patch_embed = 2 * images * grid * grid * (3 * patch * patch) * width
    block = 2 * images * tokens * (width * 3 * width + tokens * width + tokens * width + width * width + 2 * width * 4 * width)
    return patch_embed + layers * block + 2 * images * width * embed_dim


def test_inference_count_equals_the_grad_enabled_count_and_the_written_out_formula():
    visual = tiny_open_clip().visual.eval()
    images = torch.randn(3, 3, 32, 32)
    counted = gpu_suite.inference_flops(visual, images)
    visual.train()  # the training forward: grad enabled, never the fused path
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as with_grad:
        visual(images)
    assert counted == with_grad.get_total_flops()
    assert counted == vit_forward_flops(3, width=64, layers=2, patch=8, grid=4, embed_dim=32)
    visual.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as naive:
        visual(images)
    assert naive.get_total_flops() < counted  # what the fused no-grad attention hides from the counter


def test_inference_count_keeps_the_parameters_trainable_flags():
    visual = tiny_open_clip().visual
    flags = [p.requires_grad for p in visual.parameters()]
    gpu_suite.inference_flops(visual, torch.randn(1, 3, 32, 32))
    assert [p.requires_grad for p in visual.parameters()] == flags


def test_without_torchcodec_gpu_video_decode_is_one_line_and_a_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import fails, as with PyPI's CPU-only wheel missing
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    decoder, reason = gpu_suite.gpu_video_decoder(torch.device("cuda"))
    assert decoder is None and "\n" not in reason
    assert reason.startswith("GPU video decode unavailable: torchcodec does not import") and "CPU readers" in reason
    decoder, reason = gpu_suite.gpu_video_decoder(torch.device("cpu"))
    assert decoder is None and "not cuda" in reason


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {absent}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
sys.meta_path.insert(0, Block())
sys.argv = ['gpu_suite.py', '--device', 'cpu', '--out', {out!r}]
sys.path.insert(0, {benchmarks!r})
import runpy
runpy.run_path({script!r}, run_name='__main__')
"""


def test_cpu_smoke_mode_runs_without_the_packages_the_gpu_machine_lacks(tmp_path):
    out = tmp_path / "suite.json"
    code = BLOCKER.format(absent=ABSENT_ON_THE_GPU_MACHINE, out=str(out), benchmarks=str(BENCHMARKS),
                          script=str(BENCHMARKS / "gpu_suite.py"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S,
                            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(row["mode"], row["feed"]) for row in report["rows"]}
    assert rows == {(mode, feed) for mode in ("train", "inference")
                    for feed in ("synthetic", "frame store, CPU decode, 0 workers")}
    assert all(row["clips_per_s"] > 0 and row["mfu"] > 0 for row in report["rows"])
    assert report["flops_per_batch"]["train"] > 2 * report["flops_per_batch"]["inference"] > 0
    assert "GPU video decode unavailable" in report["skipped"]["video, GPU decode (torchcodec)"]
    assert "GPU video decode unavailable" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the full suite needs a CUDA device")
def test_gpu_suite_on_cuda(tmp_path):
    report = gpu_suite.main(["--config", "tiny", "--steps", "2", "--compile", "off", "--out", str(tmp_path / "s.json")])
    assert any(row["feed"] == "frame store, GPU JPEG decode" for row in report["rows"])
