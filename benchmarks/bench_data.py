"""Clip loading speed per loader worker: video files (each available backend) vs the frame store,
with the ffmpeg CLI's full-decode rate of the same files as the yardstick, in one run.

Cases: dense 8×16 and TSN 8 segments, from 10-second 320×240 H.264 videos (30 fps), one
process, one torch thread (what a DataLoader worker has), decode only and with the K400 train
transform. The frame store is written first with ``clipadapt.data.prepare`` (short side 320, so
these frames keep their size, JPEG quality 90); its disk cost per hour of video is reported.
ffmpeg is the static binary of the ``imageio-ffmpeg`` wheel, run as
``ffmpeg -threads 1 -i FILE -f null -``.

    python benchmarks/bench_data.py [--videos 4] [--clips 40] [--out benchmarks/results/bench_data.json]

JSON: ``results: [{source, backend, sampling, pipeline, clips_per_s, x_best_video}]`` (source
``video`` | ``frame_store``, sampling ``dense`` | ``segment``), ``ffmpeg_frames_per_s``,
``store_gib_per_hour`` and ``store_vs_best_video_dense``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

from clipadapt.data import VideoDataset, prepare, synthetic, train_transform  # noqa: E402
from clipadapt.data.video import BACKENDS, VideoError, open_video  # noqa: E402

CASES = [("dense", dict(sampling="dense", stride=16)), ("segment", dict(sampling="segment"))]
FRAMES, FPS, SIZE = 300, 30, (240, 320)


def clips_per_second(list_file, root, backend: str, sampling: dict, transform, clips: int) -> float:
    dataset = VideoDataset(list_file, root=root, num_frames=8, train=True, backend=backend,
                           transform=transform, on_error="raise", **sampling)
    dataset[0]  # warm-up: imports and file cache
    start = time.perf_counter()
    for i in range(clips):
        dataset[(i % len(dataset), 0, i)]
    return clips / (time.perf_counter() - start)


def available_backends(video: Path) -> dict[str, str | None]:
    """Each video backend and why it cannot be used here (None when it can)."""
    reasons = {}
    for backend in BACKENDS:
        try:
            reader = open_video(video, backend=backend)
            used = getattr(reader, "backend", backend)
            reasons[backend] = None if used == backend else f"not installed here (fell back to {used})"
        except (VideoError, ImportError, ValueError) as error:
            reasons[backend] = str(error)
    return reasons


def ffmpeg_frames_per_second(videos: list[Path]) -> float:
    """Full-decode rate of the ffmpeg CLI on one thread (imageio-ffmpeg's static binary)."""
    import imageio_ffmpeg

    executable = imageio_ffmpeg.get_ffmpeg_exe()
    frames = 0
    start = time.perf_counter()
    for video in videos:
        result = subprocess.run([executable, "-hide_banner", "-threads", "1", "-i", str(video), "-f", "null", "-"],
                                capture_output=True, text=True, check=True)
        counts = re.findall(r"frame=\s*(\d+)", result.stderr)
        frames += int(counts[-1])
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="videos generated (10 s, 30 fps, 320x240)")
    parser.add_argument("--clips", type=int, default=40, help="clips timed per case")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_data.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    folder = Path(tempfile.gettempdir()) / "clipadapt-bench-data"
    data = synthetic.generate(folder, num_classes=2, train_per_class=max(1, args.videos // 2), test_per_class=0,
                              num_frames=FRAMES, size=SIZE, fps=FPS, crf=18)
    started = time.perf_counter()
    store = prepare(data.train_list, folder / "store", root=data.root, short_side=320, quality=90, workers=1, progress=False)
    prepare_s = time.perf_counter() - started
    videos = [data.root / line.split()[0] for line in data.train_list.read_text().splitlines()]

    reasons = available_backends(videos[0])
    backends = [b for b, reason in reasons.items() if reason is None]
    ffmpeg_rate = ffmpeg_frames_per_second(videos)
    pipelines = {"decode only": lambda clip, generator: clip, "k400 train transform": train_transform("k400")}
    rows = []
    for pipeline_name, transform in pipelines.items():
        for sampling_name, sampling in CASES:
            for backend in backends:
                rate = clips_per_second(data.train_list, data.root, backend, sampling, transform, args.clips)
                rows.append(dict(source="video", backend=backend, sampling=sampling_name, pipeline=pipeline_name, clips_per_s=rate))
            rate = clips_per_second(store.list_file, store.root, "decord", sampling, transform, 5 * args.clips)
            rows.append(dict(source="frame_store", backend="torchvision.io.decode_jpeg (cpu)", sampling=sampling_name,
                             pipeline=pipeline_name, clips_per_s=rate))
    for row in rows:
        best = max(r["clips_per_s"] for r in rows if r["source"] == "video" and r["sampling"] == row["sampling"]
                   and r["pipeline"] == row["pipeline"])
        row["x_best_video"] = round(row["clips_per_s"] / best, 2)
        row["clips_per_s"] = round(row["clips_per_s"], 2)

    ffmpeg_videos_per_s = ffmpeg_rate / FRAMES
    print(f"{'pipeline':<22}{'sampling':<9}{'source':<13}{'backend':<34}{'clips/s per worker':>19}{'× best video':>14}"
          f"{'× ffmpeg full decode':>22}")
    for row in rows:
        print(f"{row['pipeline']:<22}{row['sampling']:<9}{row['source']:<13}{row['backend']:<34}{row['clips_per_s']:>19.2f}"
              f"{row['x_best_video']:>14.2f}{row['clips_per_s'] / ffmpeg_videos_per_s:>22.2f}")
    for backend, reason in reasons.items():
        if reason is not None:
            print(f"backend {backend} skipped: {reason}")
    print(f"ffmpeg -threads 1 full decode: {ffmpeg_rate:.0f} frames/s = {ffmpeg_videos_per_s:.2f} videos/s "
          f"(the last column: clips per time ffmpeg takes to decode a whole video)")
    print(f"frame store: {store.store_bytes / 2**20:.1f} MiB for {store.video_seconds:.0f} s of video = "
          f"{store.gib_per_hour:.2f} GiB per hour (320x240, JPEG q90); written in {prepare_s:.1f} s on one process")
    dense = {r["source"]: r["x_best_video"] for r in rows if r["sampling"] == "dense" and r["pipeline"] == "decode only"}
    print(f"dense 8x16, decode only: frame store {dense['frame_store']:.1f}x the best video backend per worker")
    result = dict(
        videos=len(videos), frames_per_video=FRAMES, fps=FPS, size=list(SIZE), clip_frames=8, dense_stride=16,
        clips_timed=args.clips, clips_timed_frame_store=5 * args.clips, torch_threads=1, results=rows,
        skipped_backends={b: r for b, r in reasons.items() if r is not None},
        ffmpeg_frames_per_s=round(ffmpeg_rate, 1), store_gib_per_hour=round(store.gib_per_hour, 3),
        store_prepare_s=round(prepare_s, 2), store_vs_best_video_dense=dense["frame_store"],
    )
    path = write_json("bench_data", result, args.out)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
