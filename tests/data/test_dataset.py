import logging

import pytest
import torch

from clipadapt.data import BadSampleError, TooManyBadSamples, VideoDataset, build_loader, synthetic
from clipadapt.data.video import decord_available
from hang_guard import HANG_GUARD_S


def small_dataset(tiny_data, list_file=None, **kwargs):
    options = dict(root=tiny_data.root, label_map=tiny_data.label_file, num_frames=4, stride=2, size=32)
    options.update(kwargs)
    return VideoDataset(list_file or tiny_data.train_list, **options)


def with_bad_lines(tiny_data, tmp_path, bad_lines):
    (tmp_path / "empty.mp4").write_bytes(b"")
    good = tiny_data.train_list.read_text().replace("videos/", f"{tiny_data.root}/videos/")
    list_file = tmp_path / "list.txt"
    list_file.write_text(good + "".join(f"{line}\n" for line in bad_lines))
    return list_file


def test_defaults_need_only_the_list_file(tiny_data):
    dataset = VideoDataset(tiny_data.test_list, root=tiny_data.root)
    sample = dataset[0]
    assert sample["video"].shape == (8, 3, 224, 224) and sample["video"].dtype == torch.uint8  # normalised on the device
    assert sample["label"] == 0 and sample["bad"] == 0
    assert dataset.classnames is None and dataset.num_classes == 4


def test_classnames_come_from_the_label_map(tiny_data):
    assert small_dataset(tiny_data).classnames == synthetic.class_names(4)


def test_multi_view_dataset_yields_all_views_together(tiny_data):
    dataset = small_dataset(tiny_data, tiny_data.test_list, num_clips=3, num_crops=3)
    assert dataset[1]["video"].shape == (9, 4, 3, 32, 32)


def test_segment_sampling_and_training_clips_depend_only_on_seed_epoch_index(tiny_data):
    dataset = small_dataset(tiny_data, sampling="segment", train=True)
    assert torch.equal(dataset[(2, 1, 5)]["video"], dataset[(2, 1, 5)]["video"])
    assert not torch.equal(dataset[(2, 1, 5)]["video"], dataset[(2, 2, 5)]["video"])


def test_bad_videos_are_replaced_counted_and_logged_once(tiny_data, tmp_path, caplog):
    (tmp_path / "short.mp4").write_bytes(tiny_data.root.joinpath("videos/00000.mp4").read_bytes())
    list_file = with_bad_lines(tiny_data, tmp_path, [f"{tmp_path}/missing.mp4 0", f"{tmp_path}/empty.mp4 1",
                                                     f"{tmp_path}/short 5 20 2"])
    (tmp_path / "short").mkdir()
    for number in range(1, 13):
        (tmp_path / "short" / f"img_{number:05d}.jpg").write_bytes(b"")
    dataset = small_dataset(tiny_data, list_file, root=None)
    bad = range(len(dataset) - 3, len(dataset))
    with caplog.at_level(logging.WARNING, logger="clipadapt.data.datasets"):
        samples = [dataset[i] for i in bad] + [dataset[i] for i in bad]
    assert all(sample["bad"] >= 1 and sample["index"] not in bad for sample in samples)
    assert dataset.bad_samples == sum(sample["bad"] for sample in samples) >= 6
    assert set(dataset.bad_files.values()) == {"file not found", "empty file", "the list gives frames 5..24, it has 12"}
    assert len(caplog.records) == 3


def test_on_error_raise_makes_a_bad_video_fatal(tiny_data, tmp_path):
    dataset = small_dataset(tiny_data, with_bad_lines(tiny_data, tmp_path, [f"{tmp_path}/empty.mp4 0"]),
                            root=None, on_error="raise")
    with pytest.raises(BadSampleError, match="empty.mp4"):
        dataset[len(dataset) - 1]


def test_a_wrong_root_stops_with_a_message_instead_of_searching_forever(tiny_data, tmp_path):
    dataset = small_dataset(tiny_data, root=tmp_path / "nowhere", max_bad_in_row=5)
    with pytest.raises(TooManyBadSamples, match=r"5 samples in a row could not be loaded .*Check the root") as raised:
        dataset[0]
    assert f"(root={tmp_path / 'nowhere'})" in str(raised.value)


def test_a_list_whose_paths_are_already_whole_names_no_root_in_the_message(tiny_data, tmp_path):
    dataset = small_dataset(tiny_data, with_bad_lines(tiny_data, tmp_path, [f"{tmp_path}/gone.mp4 0"]), root=None,
                            max_bad_in_row=1)
    with pytest.raises(TooManyBadSamples, match="gone.mp4: file not found") as raised:
        dataset[len(dataset) - 1]
    assert "root=" not in str(raised.value)


def test_loader_gives_the_same_clips_for_any_number_of_workers(tiny_data):
    dataset = small_dataset(tiny_data, train=True, transform=None)

    def epoch_batches(num_workers):
        loader = build_loader(dataset, batch_size=4, shuffle=True, num_workers=num_workers, seed=3)
        loader.set_epoch(1)
        return [(batch["index"], batch["video"]) for batch in loader]

    single, workers = epoch_batches(0), epoch_batches(2)
    assert len(single) == len(workers) == 3
    for (index_a, video_a), (index_b, video_b) in zip(single, workers):
        assert torch.equal(index_a, index_b) and torch.equal(video_a, video_b)


def test_loader_counts_bad_samples_of_an_epoch_across_workers(tiny_data, tmp_path):
    list_file = with_bad_lines(tiny_data, tmp_path, [f"{tmp_path}/missing.mp4 0", f"{tmp_path}/empty.mp4 1"])
    loader = build_loader(small_dataset(tiny_data, list_file, root=None), batch_size=5, num_workers=2)
    assert sum(len(batch["label"]) for batch in loader) == 14
    assert loader.bad_samples == 2


def test_set_epoch_changes_the_shuffle(tiny_data):
    loader = build_loader(small_dataset(tiny_data), batch_size=12, shuffle=True, seed=0)
    orders = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        orders.append(next(iter(loader))["index"].tolist())
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(12)) and orders[0] != orders[1]


def test_frame_folder_list_entries_load(tiny_data, tmp_path):
    from torchvision.io import write_jpeg

    from clipadapt.data import open_video

    frames = open_video(tiny_data.root / "videos/00000.mp4").get(range(12))
    folder = tmp_path / "frames" / "v_0"
    folder.mkdir(parents=True)
    for number, frame in enumerate(frames, start=1):
        write_jpeg(frame.permute(2, 0, 1).contiguous(), str(folder / f"img_{number:05d}.jpg"))
    (tmp_path / "frames.txt").write_text("frames/v_0 12 0\n")
    dataset = VideoDataset(tmp_path / "frames.txt", root=tmp_path, num_frames=4, sampling="segment", size=32,
                           on_error="raise")
    assert dataset[0]["video"].shape == (4, 3, 32, 32)


def test_num_classes_that_disagrees_with_the_label_map_is_refused(tiny_data):
    with pytest.raises(ValueError, match=r"num_classes=5 but the label map .* has 4 classes"):
        small_dataset(tiny_data, num_classes=5)


def test_a_label_outside_num_classes_is_refused_at_construction(tiny_data, tmp_path):
    list_file = with_bad_lines(tiny_data, tmp_path, ["x.mp4 9"])
    with pytest.raises(ValueError, match=r"list.txt: x.mp4 has label 9, outside \[0, 4\)"):
        small_dataset(tiny_data, list_file, root=None)
    with pytest.raises(ValueError, match=r"label 9, outside \[0, 6\) \(num_classes gives 6"):
        VideoDataset(list_file, num_classes=6)


def write_frames(folder, frames):
    from torchvision.io import write_png

    folder.mkdir(parents=True)
    for number, frame in enumerate(frames, start=1):
        write_png(frame.permute(2, 0, 1).contiguous(), str(folder / f"img_{number:05d}.png"))


def test_offset_and_frame_count_columns_choose_the_frames(tiny_data, tmp_path):
    from clipadapt.data import open_video

    frames = open_video(tiny_data.root / "videos/00000.mp4").get(range(12))
    write_frames(tmp_path / "v", frames)
    (tmp_path / "list.txt").write_text("v 3 4 0\nv 0 6 0\n")  # every line with an offset (mixing is refused)
    dataset = VideoDataset(tmp_path / "list.txt", root=tmp_path, num_frames=4, stride=1, size=32,
                           transform=lambda clip, generator: clip, on_error="raise")
    # frames 3..6 of the folder (offset 3, 4 frames), and 1..4, the middle of the first 6 (offset 0, 6 frames)
    assert torch.equal(dataset[0]["video"], frames[3:7].permute(0, 3, 1, 2))
    assert torch.equal(dataset[1]["video"], frames[1:5].permute(0, 3, 1, 2))


@pytest.mark.skipif(not decord_available(), reason="decord is not installed (it ships wheels for Linux x86-64 only)")
def test_png_frames_decode_after_the_decord_backend_loads_first(tmp_path):
    """decord's bundled FFmpeg exports a zlib of its own: imported before torchvision's image
    library, libpng binds to it and every PNG fails. A fresh process, decord through clipadapt first."""
    import subprocess
    import sys

    frames = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    write_frames(tmp_path / "v", frames)
    (tmp_path / "list.txt").write_text("v 4 0\n")
    script = (
        "import sys, torch\n"
        "from clipadapt.data.video import decord_available\n"
        "assert decord_available()\n"
        "from clipadapt.data import VideoDataset\n"
        f"d = VideoDataset({str(tmp_path / 'list.txt')!r}, root={str(tmp_path)!r}, num_frames=4, stride=1, size=32,\n"
        "                 transform=lambda clip, generator: clip, on_error='raise')\n"
        "torch.save(d[0]['video'], sys.argv[1])\n"
    )
    out = tmp_path / "clip.pt"
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.equal(torch.load(out, weights_only=True), frames.permute(0, 3, 1, 2))
