"""GPU acceptance run: M2-CLIP K400 (ViT-B/16, 8 frames, 224 px, bf16) training and inference
clips/s, MFU and peak memory, eager and ``torch.compile``, fed by synthetic tensors, by a frame
store through the real DataLoader (JPEG decode on the GPU, and on CPU workers), and by GPU video
decode where torchcodec's CUDA build imports. One invocation, under 4 minutes on an H100/H200.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` with the math attention
kernel: the training step as it runs (forward, backward, optimiser), inference with autograd
on but every weight frozen and the input requiring grad, which keeps ``nn.MultiheadAttention``
off its fused no-grad path (that path is invisible to the counter) while computing exactly the
inference graph. MFU is those FLOPs per second over the card's measured bf16 matmul rate.

The lent GPU machine has Python 3.12, torch, torchvision, timm, einops, rich, typer,
safetensors and transformers, but no open_clip, fvcore, decord, av, torchcodec or network. The
suite needs only open_clip on top (and never av/decord: its frame store is written from
generated frames). Carry open_clip and its two missing dependencies as wheels::

    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \\
        -d .gpu_wheels open_clip_torch==3.3.0 ftfy wcwidth regex
    # on the GPU machine, with .gpu_wheels carried next to the working tree:
    pip install --no-deps --no-index .gpu_wheels/*.whl && \\
        PYTHONPATH=$PWD python benchmarks/gpu_suite.py --out $OUT/gpu_suite.json

    python benchmarks/gpu_suite.py --device cpu      # the smoke mode CI runs: tiny CLIP, seconds

Without a CUDA build of torchcodec (PyPI's wheels are CPU-only) the GPU video row is reported
skipped with the reason, and video files are read by the CPU readers as usual.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import K400_LIKE  # noqa: E402  (400 class names, 520 prompt words)
from common import write_json  # noqa: E402

CONFIGS = {
    "vit-b16": dict(arch="ViT-B-16", size=224, frames=8, stride=16, batch=32, classes=K400_LIKE,
                    videos=16, video_frames=136, frame_size=(240, 320)),
    "tiny": dict(arch=None, size=32, frames=4, stride=2, batch=2, classes=["left", "right", "up", "down"],
                 videos=4, video_frames=12, frame_size=(36, 48)),
}


# ----------------------------------------------------------------------------- counting and rates

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Measured dense bf16 matmul rate in TFLOP/s (2 FLOPs per multiply-add)."""
    if device.type != "cuda":
        size, repeats = 512, 3
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


@contextlib.contextmanager
def _counting():
    """FlopCounterMode with autograd on and the math attention kernel (every kernel counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        yield counter


@contextlib.contextmanager
def _all_frozen(model: torch.nn.Module):
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def training_flops(step) -> int:
    """FLOPs of one call of `step` (a training step: forward, backward, optimiser)."""
    with _counting() as counter:
        step()
    return counter.get_total_flops()


def inference_flops(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of ``model(*inputs)`` as inference computes it, counted where FlopCounterMode sees
    every kernel: weights frozen (so cached text embeddings stay cached, as under no_grad), the
    floating inputs requiring grad (so attention takes the unfused path), math SDPA.

    Example:
        >>> layer = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
        >>> x = torch.randn(1, 4, 8)
        >>> inference_flops(lambda t: layer(t, t, t)[0], x)
        1536
    """
    frozen = _all_frozen(model) if isinstance(model, torch.nn.Module) else contextlib.nullcontext()
    with frozen, _counting() as counter:
        model(*[x.detach().requires_grad_(True) if x.is_floating_point() else x for x in inputs])
    return counter.get_total_flops()


# ----------------------------------------------------------------------------- GPU video decode

def gpu_video_decoder(device: torch.device):
    """``(torchcodec VideoDecoder class, None)`` where a CUDA build of torchcodec imports and a
    CUDA device is present, else ``(None, the reason in one line)``."""
    if device.type != "cuda":
        return None, f"GPU video decode unavailable: device is {device.type}, not cuda; video files use the CPU readers"
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as error:  # noqa: BLE001 (ImportError, or a missing FFmpeg/CUDA library at import)
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        return None, f"GPU video decode unavailable: torchcodec does not import ({first}); video files use the CPU readers"
    return VideoDecoder, None


def _torchcodec_video(folder: Path, frames: torch.Tensor, fps: int = 30):
    """Write (N, 3, H, W) uint8 frames as a video with torchcodec's encoder, or say why not."""
    try:
        from torchcodec.encoders import VideoEncoder
    except Exception as error:  # noqa: BLE001
        return None, f"no video encoder to make a test video here ({type(error).__name__}: {error})"
    path = folder / "gpu_decode.mp4"
    VideoEncoder(frames, frame_rate=fps).to_file(str(path))
    return path, None


# ----------------------------------------------------------------------------- model and data

def build_model(config: dict, device: torch.device):
    import open_clip

    from clipadapt.models import build_m2clip

    torch.manual_seed(0)
    if config["arch"]:
        clip = open_clip.create_model(config["arch"], pretrained=None)
    else:
        clip = open_clip.CLIP(embed_dim=32, vision_cfg=dict(image_size=config["size"], patch_size=8, width=64, layers=2, head_width=32),
                              text_cfg=dict(context_length=16, vocab_size=49408, width=32, layers=2, heads=2))
    return build_m2clip(clip, config["classes"]).to(device)


def write_store(folder: Path, config: dict) -> Path:
    """A frame store of generated frames (smooth colour fields with noise, as video content
    compresses), without any video decoder; returns its list file."""
    from clipadapt.data.frame_store import write_frame_store

    generator = torch.Generator().manual_seed(0)
    height, width = config["frame_size"]
    lines = []
    for video in range(config["videos"]):
        base = torch.rand(3, height // 8, width // 8, generator=generator) * 255
        frames = []
        for t in range(config["video_frames"]):
            field = torch.nn.functional.interpolate(torch.roll(base, t, dims=-1)[None], size=(height, width), mode="bilinear")[0]
            noise = torch.randn(3, height, width, generator=generator) * 6
            frames.append((field + noise).clamp(0, 255).to(torch.uint8))
        write_frame_store(folder / f"{video:04d}.frames", frames, fps=30.0, quality=90)
        lines.append(f"{video:04d}.frames {video % len(config['classes'])}\n")
    (folder / "train.txt").write_text("".join(lines))
    return folder / "train.txt"


class DecodeOn(torch.utils.data.Dataset):
    """A dataset whose frame stores decode on `device` whichever feed ran last in this process
    (the decode device is process-wide; the GPU and CPU feeds alternate in one process)."""

    def __init__(self, dataset, device: str):
        self.dataset, self.device = dataset, device

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        from clipadapt.data import set_decode_device

        set_decode_device(self.device)
        return self.dataset[key]


def store_loader(list_file: Path, config: dict, *, decode_device: str, num_workers: int, pin_memory: bool):
    from clipadapt.data import VideoDataset, build_loader, train_transform

    dataset = VideoDataset(list_file, root=list_file.parent, num_frames=config["frames"], stride=config["stride"], train=True,
                           transform=train_transform("k400", config["size"]), on_error="raise")
    return build_loader(DecodeOn(dataset, decode_device), config["batch"], shuffle=True, num_workers=num_workers,
                        pin_memory=pin_memory, seed=0, drop_last=True)


def endless(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class TorchcodecClips(torch.utils.data.Dataset):
    """Clips decoded on the GPU by torchcodec (NVDEC), the same sampling and transform as VideoDataset."""

    def __init__(self, decoder_class, path: Path, config: dict, device: torch.device):
        from clipadapt.data import FrameSampler, train_transform

        self.decoder = decoder_class(str(path), device=str(device))
        self.length = len(self.decoder)
        self.sampler = FrameSampler(num_frames=config["frames"], mode="dense", stride=config["stride"])
        self.transform = train_transform("k400", config["size"])
        self.size = config["videos"]

    def __len__(self):
        return self.size

    def __getitem__(self, key):
        index, epoch, seed = key
        generator = torch.Generator().manual_seed(seed * 1000003 + epoch * 1009 + index)
        indices = self.sampler(self.length, train=True, generator=generator)[0]
        clip = self.decoder.get_frames_at(indices.tolist()).data  # (T, 3, H, W) uint8 on the GPU
        return {"video": self.transform(clip, generator), "label": index % 4, "index": index, "bad": 0}


# ----------------------------------------------------------------------------- the measurements

def measure(run_once, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """Mean seconds per call after `warmup` calls, and the peak GiB allocated while timing."""
    for _ in range(warmup):
        run_once()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        run_once()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None, help="default: vit-b16 on cuda, tiny on cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10 on cuda, 1 on cpu)")
    parser.add_argument("--compile", choices=["on", "off"], default=None, help="default: on for cuda, off for cpu")
    parser.add_argument("--workers", type=int, default=None, help="CPU loader workers for the CPU-decode row")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from clipadapt.data import normalize_video

    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    config = dict(CONFIGS[args.config or ("vit-b16" if on_gpu else "tiny")])
    config["batch"] = args.batch or config["batch"]
    steps, warmup = args.steps or (10 if on_gpu else 1), (3 if on_gpu else 1)
    compile_modes = [False, True] if (args.compile or ("on" if on_gpu else "off")) == "on" else [False]
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if on_gpu else 0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu)
    torch.backends.cuda.matmul.allow_tf32 = True
    console = Console()
    started = time.perf_counter()

    peak_rate = matmul_rate(device)
    model = build_model(config, device).train()
    optimizer = torch.optim.AdamW([{**g, "lr": 2.8125e-4 * g["lr_mult"]} for g in model.param_groups(0.01)])
    batch, frames, size = config["batch"], config["frames"], config["size"]
    synthetic = torch.randint(0, 256, (batch, frames, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, len(config["classes"]), (batch,), device=device)

    def train_step(network, video_uint8, target):
        with autocast:
            loss = network(normalize_video(video_uint8, device), target)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer_step(network, video_uint8):
        with torch.no_grad(), autocast:
            return network(normalize_video(video_uint8, device))

    # FLOPs of one batch, counted on the eager model (they do not depend on the feed or compile)
    train_step(model, synthetic, labels)  # warm-up: caches the frozen text prefix
    flops = {"train": training_flops(lambda: train_step(model, synthetic, labels))}
    model.eval()
    infer_step(model, synthetic)  # fills the class-embedding cache used under no_grad
    with autocast:
        flops["inference"] = inference_flops(model, normalize_video(synthetic, device))
    model.train()

    folder = Path(tempfile.mkdtemp(prefix="clipadapt-gpu-suite-"))
    list_file = write_store(folder, config)
    feeds = {"synthetic": lambda: (synthetic, labels)}
    skipped: dict[str, str] = {}
    if on_gpu:
        gpu_batches = endless(store_loader(list_file, config, decode_device=str(device), num_workers=0, pin_memory=False))
        feeds["frame store, GPU JPEG decode"] = lambda: _on(next(gpu_batches), device)
    cpu_batches = endless(store_loader(list_file, config, decode_device="cpu", num_workers=workers, pin_memory=on_gpu))
    feeds[f"frame store, CPU decode, {workers} workers"] = lambda: _on(next(cpu_batches), device)
    decoder_class, reason = gpu_video_decoder(device)
    if decoder_class is not None:
        from clipadapt.data.frame_store import FrameStoreReader

        video_path, reason = _torchcodec_video(folder, FrameStoreReader(folder / "0000.frames", device="cpu").get_clip(
            range(config["video_frames"])))
        if video_path is not None:
            from clipadapt.data import build_loader

            clips = TorchcodecClips(decoder_class, video_path, config, device)
            video_batches = endless(build_loader(clips, batch, shuffle=True, pin_memory=False, drop_last=True))
            feeds["video, GPU decode (torchcodec)"] = lambda: _on(next(video_batches), device)
    if reason is not None:
        skipped["video, GPU decode (torchcodec)"] = reason
        console.print(reason, highlight=False)

    rows = []
    for compiled in compile_modes:
        try:
            network = torch.compile(model) if compiled else model
        except Exception as error:  # noqa: BLE001 (report, never abort the suite)
            skipped["torch.compile"] = f"{type(error).__name__}: {str(error)[:160]}"
            continue
        for mode in ("train", "inference"):
            for feed, next_batch in feeds.items():
                name = f"{mode}, {'compiled' if compiled else 'eager'}, {feed}"
                try:
                    if mode == "train":
                        model.train()
                        seconds, peak = measure(lambda: train_step(network, *next_batch()), steps, warmup, device)
                    else:
                        model.eval()
                        seconds, peak = measure(lambda: infer_step(network, next_batch()[0]), steps, warmup, device)
                except Exception as error:  # noqa: BLE001
                    skipped[name] = f"{type(error).__name__}: {str(error).strip()[:200]}"
                    continue
                rows.append(dict(mode=mode, compiled=compiled, feed=feed, clips_per_s=batch / seconds, seconds_per_batch=seconds,
                                 tflop_per_batch=flops[mode] / 1e12, mfu=flops[mode] / seconds / 1e12 / peak_rate, peak_gib=peak))
        model.train()

    name = torch.cuda.get_device_name(device) if on_gpu else "CPU"
    precision = "bf16" if on_gpu else "fp32"
    table = Table(title=f"M2-CLIP, {config['arch'] or 'tiny CLIP'}, batch {batch} × {frames} frames at {size} px, {precision}, {name}")
    for column in ("mode", "compile", "fed by", "clips/s", "s / batch", "TFLOP / batch", "MFU", "peak GiB"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["mode"], "yes" if row["compiled"] else "no", row["feed"], f"{row['clips_per_s']:.1f}",
                      f"{row['seconds_per_batch']:.3f}", f"{row['tflop_per_batch']:.3g}", f"{100 * row['mfu']:.1f}%",
                      f"{row['peak_gib']:.2f}")
    console.print(table)
    for what, why in skipped.items():
        console.print(f"skipped {what}: {why}", highlight=False)
    console.print(f"measured bf16 matmul rate: {peak_rate:.1f} TFLOP/s; suite took {time.perf_counter() - started:.0f} s", highlight=False)
    result = {"config": {k: v for k, v in config.items() if k != "classes"}, "device": name, "precision": precision,
              "matmul_tflops": peak_rate, "flops_per_batch": flops, "rows": rows, "skipped": skipped,
              "seconds": time.perf_counter() - started}
    path = write_json("gpu_suite", result, args.out)
    console.print(f"wrote {path}")
    return result


def _on(batch: dict, device: torch.device):
    return batch["video"].to(device, non_blocking=True), torch.as_tensor(batch["label"]).to(device, non_blocking=True)


if __name__ == "__main__":
    main()
