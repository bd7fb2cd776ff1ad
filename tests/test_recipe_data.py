"""Recipes read the official dataset layouts (built here in miniature from synthetic videos)."""

import shutil

import pytest

from clipadapt.recipes import RecipeError, load_recipe, require_data
from clipadapt.data import kinetics400_classes
from clipadapt.data.recipe import build_dataset
from clipadapt.data.synthetic import generate


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    data = generate(tmp_path_factory.mktemp("synthetic"), num_classes=2, train_per_class=2, test_per_class=1, num_frames=8, size=32)
    return sorted((data.root / "videos").glob("*.mp4"))


def small(dataset, **paths):
    overrides = [f"data.dataset={dataset}", "data.frames=4", "data.stride=1", "data.size=32", "eval.clips=2", "eval.crops=1"]
    return load_recipe("m2clip_k400", overrides + [f"data.{key}={value}" for key, value in paths.items()])


def test_kinetics_csv_with_a_folder_per_class(tmp_path, videos):
    rows = ["label,youtube_id,time_start,time_end,split"]
    for i, video in enumerate(videos):
        label = ["abseiling", "brushing hair"][i % 2]
        name = f"vid{i:03d}_{0:06d}_{10:06d}.mp4"
        (tmp_path / "k400" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(video, tmp_path / "k400" / label / name)
        rows.append(f"{label},vid{i:03d},0,10,train")
    (tmp_path / "train.csv").write_text("\n".join(rows))
    recipe = small("k400", root=tmp_path / "k400", train_list=tmp_path / "train.csv", val_list=tmp_path / "train.csv")
    require_data(recipe)
    train, val = build_dataset(recipe, "train"), build_dataset(recipe, "val")
    names = kinetics400_classes()  # the shipped K400 classes: indices do not depend on the CSV's rows
    assert len(train.classnames) == 400 and len(train) == len(videos)
    assert {entry.label for entry in train.entries} == {names.index("abseiling"), names.index("brushing hair")}
    assert train[0]["video"].shape == (4, 3, 32, 32)
    assert val[0]["video"].shape == (2, 4, 3, 32, 32)  # 2 clips × 1 crop, all views together


def test_ucf101_splits_and_zero_shot_views(tmp_path, videos):
    classes = ["ApplyEyeMakeup", "BrushHair"]
    annotations = tmp_path / "ucfTrainTestlist"
    annotations.mkdir()
    (annotations / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 BrushHair\n")
    lines = []
    for i, video in enumerate(videos):
        cls = classes[i % 2]
        (tmp_path / "UCF-101" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(video, tmp_path / "UCF-101" / cls / f"v_{cls}_g{i:02d}_c01.avi")
        lines.append(f"{cls}/v_{cls}_g{i:02d}_c01.avi")
    for split in (1, 2, 3):
        (annotations / f"trainlist0{split}.txt").write_text("\n".join(f"{line} {1 + i % 2}" for i, line in enumerate(lines)))
        (annotations / f"testlist0{split}.txt").write_text("\n".join(lines))
    recipe = load_recipe("m2clip_zeroshot_ucf101", [f"data.root={tmp_path / 'UCF-101'}", f"data.annotations={annotations}",
                                                    "data.frames=4", "data.size=32", "data.num_classes=2"])
    test = build_dataset(recipe, "test", zero_shot=True)
    assert test.classnames == ["apply eye makeup", "brush hair"]
    assert test[0]["video"].shape == (4, 3, 32, 32)  # one segment-centre clip, one centre crop


def test_an_official_dataset_without_its_annotation_folder_is_named():
    with pytest.raises(RecipeError, match="data.annotations"):
        require_data(load_recipe("m2clip_ssv2"))


def test_a_list_with_a_label_map_is_checked_against_data_num_classes(tmp_path, videos):
    (tmp_path / "train.txt").write_text("".join(f"{video.name} {i % 2}\n" for i, video in enumerate(videos)))
    (tmp_path / "labels.txt").write_text("abseiling\nbrushing hair\n")
    paths = dict(root=videos[0].parent, train_list=tmp_path / "train.txt", val_list=tmp_path / "train.txt",
                 label_map=tmp_path / "labels.txt")
    with pytest.raises(ValueError, match=r"num_classes=400 but the label map .*labels.txt"):
        build_dataset(small("list", **paths), "train")  # m2clip_k400 declares 400 classes; the map has 2
    assert build_dataset(small("list", num_classes=2, **paths), "train").classnames == ["abseiling", "brushing hair"]
