import pytest
import torch
from torchvision.io import write_png

from clipadapt.data import FrameFolderReader, PyAVReader, VideoError, open_video
from clipadapt.data import video as video_module


needs_decord = pytest.mark.skipif(not video_module.decord_available(), reason="decord is not installed")


@pytest.mark.parametrize("backend", [pytest.param("decord", marks=needs_decord), "pyav"])
def test_readers_report_length_fps_and_uint8_frames(video_file, backend):
    video = open_video(video_file, backend=backend)
    frames = video.get([0, 5, 11])
    assert video.backend == backend  # the reader asked for, not a silent fallback
    assert len(video) == 12 and video.fps == pytest.approx(8.0)
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == torch.uint8


@needs_decord
def test_backends_agree_within_codec_tolerance(video_file):
    indices = list(range(12))
    decord_frames = video_module.DecordReader(video_file).get(indices).float()
    pyav_frames = PyAVReader(video_file).get(indices).float()
    difference = (decord_frames - pyav_frames).abs()
    assert difference.mean() < 2.0
    assert difference.max() <= 48


def test_pyav_is_used_where_neither_decord_nor_torchcodec_loads(video_file, monkeypatch):
    monkeypatch.setitem(video_module._MODULES, "decord", False)
    monkeypatch.setitem(video_module._MODULES, "torchcodec.decoders", False)
    assert video_module.available_backends() == ["pyav"]
    assert open_video(video_file).backend == "pyav"


def test_a_backend_that_cannot_load_says_why(video_file, monkeypatch):
    monkeypatch.setitem(video_module._MODULES, "torchcodec.decoders", False)
    with pytest.raises(VideoError, match="00000.mp4: torchcodec cannot be loaded .*FFmpeg's shared libraries"):
        open_video(video_file, backend="torchcodec")


def test_frame_folder_reads_as_a_video(tmp_path, video_file):
    frames = PyAVReader(video_file).get(range(4))
    for number, frame in enumerate(frames, start=1):
        write_png(frame.permute(2, 0, 1).contiguous(), str(tmp_path / f"img_{number:05d}.png"))
    video = open_video(tmp_path)
    assert isinstance(video, FrameFolderReader) and len(video) == 4
    restored = video.get([3, 0])
    assert torch.equal(restored, frames[[3, 0]])


@pytest.mark.parametrize("backend", ["auto", "decord", "torchcodec", "pyav"])
def test_missing_and_empty_files_raise_video_error_naming_the_file(tmp_path, backend):
    with pytest.raises(VideoError, match="missing.mp4: file not found"):
        open_video(tmp_path / "missing.mp4", backend=backend)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4: empty file"):
        open_video(tmp_path / "empty.mp4", backend=backend)


def test_truncated_file_is_reported_as_a_video_error(tmp_path, video_file):
    data = video_file.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated.mp4"):
        open_video(truncated).get(range(12))


def test_unknown_backend_names_the_accepted_ones(video_file):
    with pytest.raises(ValueError, match="auto, torchcodec, decord, pyav"):
        open_video(video_file, backend="opencv")
