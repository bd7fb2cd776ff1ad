"""Frame stores: ``prepare`` writes one JPEG-frame file per video, ``VideoDataset`` reads it.

The reference for pixels and frame order is an in-order PyAV decode of the video (independent
of the store's writer and reader); JPEG is lossy, so a stored frame may differ from it by what
an independent encoder (Pillow, same quality, 4:2:0 chroma as libjpeg's default) loses, and a
neighbouring frame differs by more.
"""

import io
import os

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clipadapt.data import Annotations, Entry, FrameStoreReader, VideoDataset, prepare, synthetic
from clipadapt.data.frame_store import MAGIC, is_complete, read_header, set_decode_device, write_frame_store
from clipadapt.data.transforms import Compose, RandomCrop
from clipadapt.data.video import VideoError

def pillow_jpeg_error(frames, quality=95):
    """Largest per-frame mean |Pillow JPEG round trip - frame| (0..255)."""
    from PIL import Image

    errors = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame.astype(np.uint8)).save(buffer, "JPEG", quality=quality, subsampling=2)
        errors.append(np.abs(np.asarray(Image.open(buffer)).astype(np.float64) - frame).mean())
    return max(errors)


def in_order_frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)]).astype(np.float64), fps


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """2 classes × 2 videos of 24 frames, 40×56, whose content moves every frame."""
    return synthetic.generate(tmp_path_factory.mktemp("videos"), num_classes=2, train_per_class=2, test_per_class=1,
                              num_frames=24, size=(40, 56), seed=3)


@pytest.fixture(scope="module")
def jpeg_error(videos):
    """What an independent JPEG encoder loses on these (noisy, textured) frames, plus a margin."""
    return pillow_jpeg_error(in_order_frames(videos.root / "videos" / "00000.mp4")[0]) + 0.5


@pytest.fixture(scope="module")
def store(videos, tmp_path_factory):
    return prepare(videos.train_list, tmp_path_factory.mktemp("store"), root=videos.root, quality=95,
                   label_map=videos.label_file, workers=2, progress=False)


def test_store_holds_every_frame_of_the_video_in_order(videos, store, jpeg_error):
    reference, fps = in_order_frames(videos.root / "videos" / "00000.mp4")
    reader = FrameStoreReader(store.root / "videos" / "00000.frames")
    assert len(reader) == len(reference) == 24 and reader.fps == pytest.approx(fps)
    stored = reader.get(range(len(reader))).double().numpy()
    errors = np.abs(stored - reference).mean(axis=(1, 2, 3))
    assert errors.max() < jpeg_error
    shifted = np.abs(stored[1:] - reference[:-1]).mean(axis=(1, 2, 3))
    assert shifted.min() > errors.max() + 2  # a neighbouring frame would be caught


def test_reader_decodes_requested_frames_in_the_order_asked(store):
    reader = FrameStoreReader(store.root / "videos" / "00001.frames")
    every = reader.get(range(len(reader)))
    assert torch.equal(reader.get([5, 0, 5, 23]), every[[5, 0, 5, 23]])
    with pytest.raises(IndexError, match=r"\[24\] outside \[0, 24\)"):
        reader.get([24])


def test_prepare_writes_a_list_with_the_same_labels_and_a_label_map(videos, store):
    source = [line.split() for line in videos.train_list.read_text().splitlines()]
    written = [line.split() for line in store.list_file.read_text().splitlines()]
    assert [label for _, label in written] == [label for _, label in source]
    assert [path for path, _ in written] == [path.replace(".mp4", ".frames") for path, _ in source]
    assert store.label_map.read_text() == videos.label_file.read_text()
    assert store.written == 4 and store.skipped == 0 and not store.bad


def test_video_dataset_reads_the_store_with_the_same_sampling_and_transform(videos, store, jpeg_error):
    options = dict(num_frames=4, stride=3, train=True, transform=Compose([RandomCrop(24)]), on_error="raise", seed=5)
    from_video = VideoDataset(videos.train_list, root=videos.root, label_map=videos.label_file, **options)
    from_store = VideoDataset(store.list_file, root=store.root, label_map=store.label_map, **options)
    for key in [(0, 0, 5), (3, 2, 5)]:
        a, b = from_video[key], from_store[key]
        assert a["label"] == b["label"] and a["video"].shape == b["video"].shape == (4, 3, 24, 24)
        assert b["video"].dtype == torch.uint8
        assert (a["video"].double() - b["video"].double()).abs().mean() < jpeg_error
    assert from_store.classnames == from_video.classnames


def test_prepare_is_resumable_and_skips_finished_videos(videos, store):
    first = store.root / "videos" / "00000.frames"
    stamp = first.stat().st_mtime_ns
    again = prepare(videos.train_list, store.root, root=videos.root, quality=95, workers=1, progress=False)
    assert again.skipped == 4 and again.written == 0 and first.stat().st_mtime_ns == stamp
    assert not [name for name in os.listdir(store.root / "videos") if name.endswith(".tmp")]


def test_an_incomplete_store_is_rewritten(videos, tmp_path):
    done = prepare(videos.train_list, tmp_path, root=videos.root, workers=1, progress=False)
    target = tmp_path / done.list_file.read_text().splitlines()[-1].split()[0]
    target.write_bytes(target.read_bytes()[:-100])  # as if the machine stopped mid-write without the rename
    assert not is_complete(target)
    again = prepare(videos.train_list, tmp_path, root=videos.root, workers=1, progress=False)
    assert again.written == 1 and again.skipped == 3 and is_complete(target)
    assert done.store_bytes == again.store_bytes


def test_bad_videos_are_reported_counted_and_left_out(videos, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "empty.mp4").write_bytes(b"")
    listing = tmp_path / "with_bad.txt"
    listing.write_text(videos.train_list.read_text() + f"{tmp_path}/broken.mp4 1\n{tmp_path}/empty.mp4 0\nvideos/gone.mp4 1\n")
    done = prepare(listing, tmp_path / "store", root=videos.root, workers=2, progress=False)
    assert done.written == 4 and len(done.bad) == 3
    assert "empty file" in done.bad[f"{tmp_path}/empty.mp4"] and "file not found" in done.bad[str(videos.root / "videos/gone.mp4")]
    assert len(done.list_file.read_text().splitlines()) == 4
    assert len((tmp_path / "store" / "with_bad.txt.bad.txt").read_text().splitlines()) == 3


def test_every_kth_frame_and_the_short_side(videos, tmp_path):
    done = prepare(videos.train_list, tmp_path, root=videos.root, every=3, short_side=20, workers=1, progress=False)
    reference, fps = in_order_frames(videos.root / "videos" / "00000.mp4")
    reader = FrameStoreReader(tmp_path / "videos" / "00000.frames")
    assert len(reader) == 8 and reader.fps == pytest.approx(fps / 3) and reader.size == (20, 28)
    header = read_header(reader.path)
    assert header["every"] == 3 and header["source_frames"] == 24 and header["source_fps"] == pytest.approx(fps)
    resized = torch.nn.functional.interpolate(torch.from_numpy(reference).permute(0, 3, 1, 2), size=(20, 28),
                                              mode="bilinear", antialias=True)
    stored = reader.get_clip(range(8)).double()
    kept = (stored - resized[0::3]).abs().mean(dim=(1, 2, 3))
    next_ones = (stored - resized[1::3]).abs().mean(dim=(1, 2, 3))
    assert (kept < next_ones).all()  # frames 0, 3, 6, ... and not their neighbours
    assert done.video_seconds == pytest.approx(4 * 24 / fps)
    kept = prepare(videos.train_list, tmp_path / "large", root=videos.root, short_side=320, workers=1, progress=False)
    assert FrameStoreReader(kept.root / "videos" / "00000.frames").size == (40, 56)  # never enlarged


def test_annotations_with_absolute_paths_keep_their_folders(videos, tmp_path):
    entries = Annotations([Entry(str(videos.root / "videos" / "00000.mp4"), 1), Entry(str(videos.root / "videos" / "00003.mp4"), 0)],
                          ["left", "right"])
    done = prepare(entries, tmp_path, workers=1, progress=False)
    assert done.list_file.read_text() == "00000.frames 1\n00003.frames 0\n"
    assert done.label_map.read_text() == "left\nright\n"


def test_a_damaged_store_is_a_bad_sample_named_with_its_reason(store, tmp_path):
    wrong = tmp_path / "wrong.frames"
    wrong.write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(VideoError, match="not a frame store"):
        FrameStoreReader(wrong)
    cut = tmp_path / "cut.frames"
    cut.write_bytes((store.root / "videos" / "00000.frames").read_bytes()[:-50])
    with pytest.raises(VideoError, match="truncated"):
        FrameStoreReader(cut)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{cut} 0\n{store.root / 'videos' / '00001.frames'} 0\n")
    dataset = VideoDataset(listing, num_frames=2, stride=1, size=32)
    assert dataset[0]["bad"] == 1 and str(cut) in dataset.bad_files


def test_write_frame_store_refuses_frames_that_change_size(tmp_path):
    frames = [torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 10, dtype=torch.uint8)]
    with pytest.raises(VideoError, match="change size"):
        write_frame_store(tmp_path / "a.frames", frames, fps=30.0)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind
    header = write_frame_store(tmp_path / "b.frames", frames[:1], fps=30.0)
    assert (tmp_path / "b.frames").read_bytes()[:8] == MAGIC and header["num_frames"] == 1


def test_cli_prepare_writes_the_store(videos, tmp_path):
    from clipadapt.cli import app

    result = CliRunner().invoke(app, ["prepare", str(videos.test_list), str(tmp_path), "--root", str(videos.root),
                                      "--short-side", "32", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "2 written, 0 already done, 0 bad" in result.output and "GiB per hour" in result.output
    assert (tmp_path / "test.txt").read_text().count(".frames") == 2


def test_decode_device_accepts_cpu_and_cuda_only():
    with pytest.raises(ValueError, match="accepted: cpu, cuda"):
        set_decode_device("meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvjpeg decoding needs a CUDA device")
def test_gpu_decode_matches_cpu_decode(store):
    path = store.root / "videos" / "00000.frames"
    on_cpu = FrameStoreReader(path, device="cpu").get_clip([0, 7, 9])
    on_gpu = FrameStoreReader(path, device="cuda").get_clip([0, 7, 9])
    assert on_gpu.is_cuda and (on_gpu.cpu().double() - on_cpu.double()).abs().mean() < 1.0
