"""Clip loading speed: clips/s in one process (one loader worker) for 8-frame dense and TSN
sampling from 10-second 320x240 videos, decord vs PyAV.

    python benchmarks/bench_data.py [--videos 4] [--clips 40] [--out benchmarks/results/bench_data.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from clipadapt.data import VideoDataset, decord_available, synthetic, train_transform

CASES = [("dense", dict(sampling="dense", stride=16)), ("segment", dict(sampling="segment"))]


def clips_per_second(list_file, root, backend: str, sampling: dict, transform, clips: int) -> float:
    dataset = VideoDataset(list_file, root=root, num_frames=8, train=True, backend=backend,
                           transform=transform, on_error="raise", **sampling)
    dataset[0]  # warm-up: imports and file cache
    start = time.perf_counter()
    for i in range(clips):
        dataset[(i % len(dataset), 0, i)]
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="videos generated (10 s, 30 fps, 320x240)")
    parser.add_argument("--clips", type=int, default=40, help="clips timed per case")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_data.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    folder = Path(tempfile.gettempdir()) / "clipadapt-bench-data"
    started = time.perf_counter()
    data = synthetic.generate(folder, num_classes=2, train_per_class=max(1, args.videos // 2), test_per_class=0,
                              num_frames=300, size=(240, 320), fps=30, crf=18)
    generation_s = time.perf_counter() - started

    backends = ["decord", "pyav"] if decord_available() else ["pyav"]
    pipelines = {"decode only": lambda clip, generator: clip, "k400 train transform": train_transform("k400")}
    rows = []
    for pipeline_name, transform in pipelines.items():
        for sampling_name, sampling in CASES:
            for backend in backends:
                rate = clips_per_second(data.train_list, data.root, backend, sampling, transform, args.clips)
                rows.append(dict(pipeline=pipeline_name, sampling=sampling_name, backend=backend,
                                 clips_per_s=round(rate, 2)))

    print(f"{'pipeline':<22}{'sampling':<10}{'backend':<8}{'clips/s per worker':>20}")
    for row in rows:
        print(f"{row['pipeline']:<22}{row['sampling']:<10}{row['backend']:<8}{row['clips_per_s']:>20.2f}")
    result = dict(
        videos=len(list(data.train_list.read_text().splitlines())), frames_per_video=300, size=[240, 320],
        clip_frames=8, dense_stride=16, generation_s=round(generation_s, 2), clips_timed=args.clips,
        machine=platform.processor() or platform.machine(), torch_threads=1, results=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
