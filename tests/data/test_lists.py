import json

import pytest

from clipadapt.data import (
    ListFileError, prompt_name, read_hmdb51, read_kinetics400, read_label_map, read_list_file,
    read_ssv2, read_ucf101,
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_list_file_reads_the_three_formats(tmp_path):
    file = write(tmp_path / "list.txt", "# comment\nclass a/v 1.mp4 3\n\nb.mp4,4\nframes/c 150 5\n")
    entries = read_list_file(file)
    assert [(e.path, e.label, e.num_frames) for e in entries] == [
        ("class a/v 1.mp4", 3, None), ("b.mp4", 4, None), ("frames/c", 5, 150),
    ]


@pytest.mark.parametrize("bad_line", ["just_a_path.mp4", "a.mp4 label", "a.mp4,x", ",3"])
def test_malformed_line_names_file_and_line_number(tmp_path, bad_line):
    file = write(tmp_path / "bad.txt", f"ok.mp4 0\n{bad_line}\n")
    with pytest.raises(ListFileError, match=r"bad.txt:2: cannot parse .*expected 'path label'"):
        read_list_file(file)


def test_label_map_reads_plain_names_and_id_name_csv(tmp_path):
    assert read_label_map(write(tmp_path / "plain.txt", "abseiling\nair drumming\n")) == ["abseiling", "air drumming"]
    csv_map = write(tmp_path / "map.csv", "id,name\n1,b\n0,a\n2,\"c\"\n")
    assert read_label_map(csv_map) == ["a", "b", "c"]


def test_label_map_with_a_gap_in_ids_is_refused(tmp_path):
    with pytest.raises(ListFileError, match=r"gap.csv: class ids must be 0..1; missing \[1\]"):
        read_label_map(write(tmp_path / "gap.csv", "0,a\n2,b\n"))


@pytest.mark.parametrize("name, words", [
    ("ApplyEyeMakeup", "apply eye makeup"), ("brush_hair", "brush hair"), ("air drumming", "air drumming"),
    ("PlayingDaf", "playing daf"), ("a circle moving left", "a circle moving left"),
    ("Putting something on a surface", "putting something on a surface"),
])
def test_class_names_become_prompt_words(name, words):
    assert prompt_name(name) == words


def test_kinetics_csv_finds_class_folders_and_flat_layouts(tmp_path):
    csv_file = write(tmp_path / "val.csv", "label,youtube_id,time_start,time_end,split\n"
                     "air drumming,abc,5,15,val\nabseiling,xyz,0,10,val\n")
    write(tmp_path / "nested" / "air_drumming" / "abc_000005_000015.mp4", "x")
    write(tmp_path / "nested" / "abseiling" / "xyz_000000_000010.mp4", "x")
    nested = read_kinetics400(csv_file, tmp_path / "nested")
    assert nested.classnames == ["abseiling", "air drumming"]
    assert [(e.path, e.label) for e in nested.entries] == [
        (str(tmp_path / "nested/air_drumming/abc_000005_000015.mp4"), 1),
        (str(tmp_path / "nested/abseiling/xyz_000000_000010.mp4"), 0),
    ]
    write(tmp_path / "flat" / "abc_000005_000015.mp4", "x")
    flat = read_kinetics400(csv_file, tmp_path / "flat")
    assert flat.entries[0].path == str(tmp_path / "flat/abc_000005_000015.mp4")


def test_kinetics_csv_without_labels_names_the_missing_column(tmp_path):
    csv_file = write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\nabc,5,15,test\n")
    with pytest.raises(ListFileError, match=r"test.csv: missing columns \['label'\]"):
        read_kinetics400(csv_file, tmp_path)


def test_ssv2_templates_name_the_class(tmp_path):
    write(tmp_path / "labels.json", json.dumps({"Pushing something from left to right": "1", "Holding something": "0"}))
    write(tmp_path / "validation.json", json.dumps([
        {"id": "42", "label": "pushing a cup from left to right", "template": "Pushing [something] from left to right",
         "placeholders": ["a cup"]},
        {"id": "7", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]},
    ]))
    annotations = read_ssv2(tmp_path, tmp_path / "videos", split="validation")
    assert annotations.classnames == ["Holding something", "Pushing something from left to right"]
    assert [(e.path, e.label) for e in annotations.entries] == [
        (str(tmp_path / "videos/42.webm"), 1), (str(tmp_path / "videos/7.webm"), 0),
    ]


def test_ucf101_reads_class_index_and_both_subsets(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    write(lists / "classInd.txt", "1 ApplyEyeMakeup\n2 YoYo\n")
    write(lists / "trainlist02.txt", "YoYo/v_YoYo_g08_c01.avi 2\n")
    write(lists / "testlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    train = read_ucf101(lists, tmp_path / "UCF-101", split=2, subset="train")
    test = read_ucf101(lists, tmp_path / "UCF-101", split=2, subset="test")
    assert [(e.path, e.label) for e in train.entries] == [(str(tmp_path / "UCF-101/YoYo/v_YoYo_g08_c01.avi"), 1)]
    assert test.entries[0].label == 0 and test.classnames == ["ApplyEyeMakeup", "YoYo"]


def test_hmdb51_reads_train_and_test_marks(tmp_path):
    splits = tmp_path / "splits"
    write(splits / "brush_hair_test_split1.txt", "a.avi 1\nb.avi 2\nc.avi 0\n")
    write(splits / "cartwheel_test_split1.txt", "d.avi 2\n")
    train = read_hmdb51(splits, tmp_path / "hmdb51", split=1, subset="train")
    test = read_hmdb51(splits, tmp_path / "hmdb51", split=1, subset="test")
    assert [(e.path, e.label) for e in train.entries] == [(str(tmp_path / "hmdb51/brush_hair/a.avi"), 0)]
    assert [e.label for e in test.entries] == [0, 1] and test.classnames == ["brush_hair", "cartwheel"]


def test_hmdb51_malformed_line_names_file_and_line(tmp_path):
    write(tmp_path / "brush_hair_test_split1.txt", "a.avi 1\na.avi 3\n")
    with pytest.raises(ListFileError, match=r"brush_hair_test_split1.txt:2: expected 'video.avi 0\|1\|2'"):
        read_hmdb51(tmp_path, tmp_path)
