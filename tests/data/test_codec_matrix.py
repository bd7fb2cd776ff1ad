"""Every backend returns, for every requested index, the frame a full in-order decode by the ffmpeg
command line yields, or refuses the file; ``auto`` always reads it exactly.

The files are generated (64x48, 40 frames) and the reference decoded by the static ffmpeg that
PyPI's ``imageio-ffmpeg`` ships, so no system package is needed.
"""

import logging
import re
import subprocess

import numpy as np
import pytest
import torch

from clipadapt.data import video as video_module
from clipadapt.data.video import VideoError, available_backends, open_video, probe_video

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (the reference ffmpeg) is not installed")
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1.6"]
H264 = ["-c:v", "libx264", "-g", "12", "-pix_fmt", "yuv420p"]
X265 = "log-level=error:keyint=12:bframes=3"
MPEG4 = ["-c:v", "mpeg4", "-g", "12", "-q:v", "4"]

# name -> (ffmpeg arguments before the output file, 8 or 10 bits, what it exercises)
CASES = {
    "h264.mp4": ([*SOURCE, *H264, "-bf", "0"], 8),
    "h264_bframes.mp4": ([*SOURCE, *H264, "-bf", "3"], 8),
    "h264_vfr.mp4": ([*SOURCE, "-vf", r"select='lt(n\,10)+not(mod(n\,3))'", "-fps_mode", "vfr", *H264, "-bf", "2"], 8),
    "hevc.mp4": ([*SOURCE, "-c:v", "libx265", "-x265-params", X265, "-pix_fmt", "yuv420p", "-tag:v", "hvc1"], 8),
    "h264_10bit.mp4": ([*SOURCE, "-c:v", "libx264", "-g", "12", "-bf", "3", "-pix_fmt", "yuv420p10le"], 10),
    "hevc_10bit.mp4": ([*SOURCE, "-c:v", "libx265", "-x265-params", X265, "-pix_fmt", "yuv420p10le", "-tag:v", "hvc1"], 10),
    "vp9.webm": ([*SOURCE, "-c:v", "libvpx-vp9", "-g", "12", "-b:v", "200k", "-pix_fmt", "yuv420p"], 8),
    "mpeg4.avi": ([*SOURCE, *MPEG4, "-bf", "0", "-vtag", "XVID"], 8),
    "mpeg4_bframes.avi": ([*SOURCE, *MPEG4, "-bf", "2", "-vtag", "XVID"], 8),
    "mpeg4_bframes.mkv": ([*SOURCE, *MPEG4, "-bf", "2"], 8),
    "mpeg4_bframes.mp4": ([*SOURCE, *MPEG4, "-bf", "2"], 8),
    "trimmed.mp4": (["-ss", "0.5", "-t", "1.3", "-i", "{long.mp4}", "-c:v", "copy"], 8),
    "rotated_90.mp4": (["-display_rotation:v:0", "90", "-i", "{h264.mp4}", "-c", "copy"], 8),
    "rotated_90_mirrored.mp4": (["-display_rotation:v:0", "90", "-display_hflip:v:0", "-i", "{h264.mp4}", "-c", "copy"], 8),
    "rotated_180.mp4": (["-display_rotation:v:0", "180", "-i", "{h264.mp4}", "-c", "copy"], 8),
    "audio_first.mp4": ([*SOURCE, "-f", "lavfi", "-i", "sine=frequency=440:duration=1.6", "-map", "1:a",
                         "-map", "0:v", *H264, "-bf", "2", "-c:a", "aac"], 8),
    "one_frame.mp4": ([*SOURCE, "-frames:v", "1", *H264], 8),
}
HELPERS = {"long.mp4": ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2.4", *H264, "-bf", "3", "-g", "24"]}
TOLERANCE = {8: 3, 10: 8}
BACKENDS = ["decord", "torchcodec", "pyav"]


def ffmpeg(*args):
    run = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-y", *map(str, args)], capture_output=True)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.decode(errors="replace")[-400:])
    return run


def reference_decode(path) -> np.ndarray:
    """All frames in order, (N, H, W, 3) uint8, as the ffmpeg CLI decodes them (rotation applied)."""
    run = ffmpeg("-i", path, "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    log = run.stderr.decode(errors="replace")
    width, height = map(int, re.search(r"Video: rawvideo.*?, (\d+)x(\d+)", log[log.index("Output #0"):]).groups())
    return np.frombuffer(run.stdout, np.uint8).reshape(-1, height, width, 3)


@pytest.fixture(scope="session")
def codec_matrix(tmp_path_factory):
    """{name: (path, reference frames, bits)} for every case; a case the encoder lacks is None."""
    folder = tmp_path_factory.mktemp("codec_matrix")
    made = {}
    for name, arguments in {**HELPERS, **{n: a for n, (a, _) in CASES.items()}}.items():
        resolved = [str(folder / a[1:-1]) if a.startswith("{") else a for a in arguments]
        try:
            ffmpeg(*resolved, folder / name)
        except RuntimeError as error:
            made[name] = str(error).strip().splitlines()[-1]
            continue
        made[name] = folder / name
    return {
        name: (made[name], reference_decode(made[name]), bits) if not isinstance(made[name], str) else made[name]
        for name, (_, bits) in CASES.items()
    }


def case(codec_matrix, name):
    made = codec_matrix[name]
    if isinstance(made, str):
        pytest.skip(f"the imageio-ffmpeg binary cannot encode {name}: {made}")
    return made


def requested_indices(length: int) -> list[list[int]]:
    """Ascending, descending and shuffled requests that together touch every index."""
    order = np.random.default_rng(length).permutation(length).tolist()
    return [list(range(length)), list(range(length))[::-1], order[: max(1, length // 2)]]


def max_difference(frames: torch.Tensor, expected: np.ndarray) -> int:
    assert tuple(frames.shape) == expected.shape, f"shape {tuple(frames.shape)} vs ffmpeg's {expected.shape}"
    return int((frames.numpy().astype(np.int16) - expected.astype(np.int16)).__abs__().max())


def backend_installed(backend):
    if backend not in available_backends():
        reason = {"decord": "decord is not installed",
                  "torchcodec": "torchcodec cannot load (it needs FFmpeg's shared libraries: apt-get install ffmpeg)"}
        pytest.skip(reason[backend])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_ffmpeg_or_refuses(codec_matrix, name, backend):
    backend_installed(backend)
    path, expected, bits = case(codec_matrix, name)
    probe = probe_video(path)
    assert probe.num_frames == len(expected)
    reason = probe.inexact_reason(backend)
    if reason is not None:
        with pytest.raises(VideoError, match=rf"{re.escape(path.name)}: {backend} cannot read it exactly: "):
            open_video(path, backend=backend)
        return
    video = open_video(path, backend=backend)
    assert len(video) == len(expected)
    for indices in requested_indices(len(expected)):
        assert max_difference(video.get(indices), expected[indices]) <= TOLERANCE[bits], (backend, name, indices[:5])


@pytest.mark.parametrize("name", sorted(CASES))
def test_auto_reads_every_case_exactly(codec_matrix, name):
    path, expected, bits = case(codec_matrix, name)
    video = open_video(path)
    assert len(video) == len(expected)
    for indices in requested_indices(len(expected)):
        assert max_difference(video.get(indices), expected[indices]) <= TOLERANCE[bits], (video.backend, name)


def test_refusals_are_the_known_decoder_faults(codec_matrix):
    """Decord is refused exactly where it was measured wrong, so ``auto`` does not lose speed elsewhere."""
    refused = {name for name in CASES if not isinstance(codec_matrix[name], str)
               and probe_video(codec_matrix[name][0]).inexact_reason("decord")}
    assert refused == {"hevc.mp4", "h264_10bit.mp4", "hevc_10bit.mp4", "mpeg4_bframes.avi", "mpeg4_bframes.mkv",
                       "mpeg4_bframes.mp4", "trimmed.mp4", "rotated_90.mp4", "rotated_90_mirrored.mp4"} & set(codec_matrix)


def test_trimmed_file_counts_the_frames_that_decode_not_the_header(codec_matrix):
    path, expected, _ = case(codec_matrix, "trimmed.mp4")
    probe = probe_video(path)
    assert probe.declared_frames > probe.num_frames == len(expected)


def test_auto_logs_the_fallback_once_per_file(codec_matrix, caplog):
    if available_backends() == ["pyav"]:
        pytest.skip("only PyAV is installed: nothing is refused, nothing to log")
    path, _, _ = case(codec_matrix, "mpeg4_bframes.avi")
    video_module._LOGGED.clear()
    with caplog.at_level(logging.INFO, logger="clipadapt.data.video"):
        for _ in range(3):
            assert open_video(path).backend == "pyav"
    messages = [r.getMessage() for r in caplog.records if "cannot read it exactly" in r.getMessage()]
    assert len(messages) == 1 and "mpeg4_bframes.avi" in messages[0] and "B-frames" in messages[0]


def test_auto_moves_to_the_next_backend_on_a_decode_failure(codec_matrix, monkeypatch):
    path, expected, _ = case(codec_matrix, "h264.mp4")
    first = available_backends()[0]
    if first == "pyav":
        pytest.skip("only PyAV is installed: nothing to fall back to")

    def broken(self, indices):
        raise VideoError(self.path, f"{first} cannot decode it (simulated)")

    monkeypatch.setattr(video_module.READERS[first], "get", broken)
    video = open_video(path)
    assert max_difference(video.get([3, 1]), expected[[3, 1]]) <= 3 and video.backend != first
