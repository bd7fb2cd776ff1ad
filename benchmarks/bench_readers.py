"""Video readers side by side: exactness against the ffmpeg CLI and time per clip, per backend
and format (10-second 320x240 30 fps files; a clip is 8 frames 8 apart from a random start,
opened from scratch each time as a dataset does per sample).

    python benchmarks/bench_readers.py [--clips 12] [--out benchmarks/results/bench_readers.json]

A backend that refuses a format (it cannot be exact for it) shows ``refused``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipadapt.data.video import AUTO_ORDER, VideoError, available_backends, open_video, probe_video

SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=10"]
FORMATS = {
    "H.264 B-frames (mp4)": ("h264.mp4", ["-c:v", "libx264", "-bf", "3", "-g", "60", "-pix_fmt", "yuv420p"]),
    "HEVC (mp4)": ("hevc.mp4", ["-c:v", "libx265", "-x265-params", "log-level=error:keyint=60", "-pix_fmt", "yuv420p"]),
    "VP9 (webm)": ("vp9.webm", ["-c:v", "libvpx-vp9", "-g", "60", "-b:v", "500k", "-deadline", "realtime", "-pix_fmt", "yuv420p"]),
    "MPEG-4 Part 2 B-frames (avi)": ("mpeg4.avi", ["-c:v", "mpeg4", "-bf", "2", "-g", "60", "-q:v", "4", "-vtag", "XVID"]),
}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def reference(path: Path) -> np.ndarray:
    run = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-fps_mode",
                          "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    log = run.stderr.decode(errors="replace")
    width, height = map(int, re.search(r"Video: rawvideo.*?, (\d+)x(\d+)", log[log.index("Output #0"):]).groups())
    return np.frombuffer(run.stdout, np.uint8).reshape(-1, height, width, 3)


def clip_indices(num_frames: int, rng: random.Random) -> list[int]:
    start = rng.randrange(num_frames - 57)
    return list(range(start, start + 57, 8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12, help="clips timed per backend and format")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_readers.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="clipadapt-bench-readers-"))
    backends = [*available_backends(), "auto"]
    rows = []
    for label, (name, codec) in FORMATS.items():
        path = folder / name
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *SOURCE, *codec, str(path)], check=True)
        frames = reference(path)
        probe = probe_video(path)
        requests = [clip_indices(len(frames), random.Random(seed)) for seed in range(args.clips)]
        times: dict[str, list[float]] = {b: [] for b in backends}
        worst: dict[str, int] = {}
        usable = []
        for backend in backends:
            try:
                open_video(path, backend=backend)
                usable.append(backend)
            except VideoError:
                pass
        for indices in requests:  # interleaved: one clip of each backend per round
            for backend in usable:
                start = time.perf_counter()
                clip = open_video(path, backend=backend).get(indices)
                times[backend].append(time.perf_counter() - start)
                error = int(np.abs(clip.numpy().astype(np.int16) - frames[indices].astype(np.int16)).max())
                worst[backend] = max(worst.get(backend, 0), error)
        for backend in backends:
            reason = None if backend == "auto" else probe.inexact_reason(backend)
            rows.append(dict(format=label, backend=backend, refused=backend not in usable, reason=reason,
                             max_abs_error=worst.get(backend),
                             ms_per_clip=round(statistics.median(times[backend]) * 1e3, 1) if times[backend] else None))
    print(f"{'format':<30}{'backend':<12}{'exact (max |Δ|)':>18}{'ms per clip':>14}")
    for row in rows:
        exact = "refused" if row["refused"] else f"{row['max_abs_error']}"
        ms = "" if row["ms_per_clip"] is None else f"{row['ms_per_clip']:.1f}"
        print(f"{row['format']:<30}{row['backend']:<12}{exact:>18}{ms:>14}")
    result = dict(rows=rows, auto_order=list(AUTO_ORDER), clips=args.clips, python=platform.python_version(),
                  torch=torch.__version__, machine=platform.machine())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
