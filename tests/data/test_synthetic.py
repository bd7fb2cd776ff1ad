import numpy as np
import pytest

from clipadapt.data import open_video, read_list_file, synthetic


def test_same_seed_gives_the_same_pixels(tmp_path):
    options = dict(num_classes=2, train_per_class=1, test_per_class=1, num_frames=6, size=(32, 48), seed=4)
    first = synthetic.generate(tmp_path / "a", **options)
    second = synthetic.generate(tmp_path / "b", **options)
    for name in ("videos/00000.mp4", "videos/00003.mp4"):
        assert (first.root / name).read_bytes() == (second.root / name).read_bytes()
    assert open_video(first.root / "videos/00000.mp4").get([0]).shape == (1, 32, 48, 3)


def test_a_quickstart_sized_dataset_is_byte_identical_when_written_twice(tmp_path):
    # With x264's default macroblock tree a few files in a hundred came out different each time.
    options = dict(num_classes=4, train_per_class=24, test_per_class=8, num_frames=8, size=32)
    first = synthetic.generate(tmp_path / "a", **options)
    second = synthetic.generate(tmp_path / "b", **options)
    names = sorted(path.name for path in (first.root / "videos").glob("*.mp4"))
    assert len(names) == 128
    differ = [name for name in names if (first.root / "videos" / name).read_bytes() != (second.root / "videos" / name).read_bytes()]
    assert differ == []


def test_regeneration_skips_when_parameters_match(tmp_path):
    options = dict(num_classes=2, train_per_class=1, test_per_class=1, num_frames=4, size=32)
    data = synthetic.generate(tmp_path, **options)
    video = data.root / "videos/00000.mp4"
    stamp, content = video.stat().st_mtime_ns, video.read_bytes()
    synthetic.generate(tmp_path, **options)
    assert video.stat().st_mtime_ns == stamp
    synthetic.generate(tmp_path, **dict(options, seed=1))
    assert video.read_bytes() != content  # not the mtime: a rewrite within one clock tick can keep it


def test_lists_and_labels_describe_the_split(tmp_path):
    data = synthetic.generate(tmp_path, num_classes=4, train_per_class=3, test_per_class=2, num_frames=4, size=32)
    train, test = read_list_file(data.train_list), read_list_file(data.test_list)
    assert len(train) == 12 and len(test) == 8
    assert data.label_file.read_text().splitlines() == data.classnames
    assert {entry.label for entry in test} == {0, 1, 2, 3}


def test_second_class_of_a_pair_is_the_first_played_backwards():
    forward = synthetic.render_video(4, 8, 32, 32, np.random.default_rng(9))
    backward = synthetic.render_video(5, 8, 32, 32, np.random.default_rng(9))
    assert np.array_equal(forward[::-1], backward)


def test_class_names_are_unique_phrases_up_to_the_maximum():
    names = synthetic.class_names(synthetic.MAX_CLASSES)
    assert len(set(names)) == len(names) and names[4] == "a triangle rotating clockwise"
    with pytest.raises(ValueError, match="even"):
        synthetic.class_names(3)
