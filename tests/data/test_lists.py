import json

import pytest

from clipadapt.data import (
    ListFileError, prompt_name, read_hmdb51, read_kinetics400, read_label_map, read_list_file,
    read_ssv2, read_ucf101,
)
from clipadapt.data.datasets import kinetics400_classes

BOM = "\ufeff"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_list_file_reads_the_mmaction2_formats(tmp_path):
    file = write(tmp_path / "list.txt", "# comment\nclass a/v 1.mp4 3\n\nb.mp4,4\nframes/c 150 5\nframes/e 7\n")
    entries = read_list_file(file)
    assert [(e.path, e.label, e.num_frames, e.offset) for e in entries] == [
        ("class a/v 1.mp4", 3, None, 0), ("b.mp4", 4, None, 0), ("frames/c", 5, 150, 0), ("frames/e", 7, None, 0),
    ]
    offsets = write(tmp_path / "offsets.txt", "frames/d 2 5 127\nframes/f 0 9 3\nclip.mp4 1\n")
    assert [(e.path, e.label, e.num_frames, e.offset) for e in read_list_file(offsets)] == [
        ("frames/d", 127, 5, 2), ("frames/f", 3, 9, 0), ("clip.mp4", 1, None, 0)]


def test_a_three_number_line_in_a_list_of_two_number_lines_is_refused_not_read_as_an_offset(tmp_path):
    # mmaction2's multi-label rawframe lists write 'frames_dir num_frames label label ...': beside
    # 'imgs 5 3', the line 'imgs 5 3 5' is five frames of classes 3 and 5, not offset 5
    file = write(tmp_path / "multi.txt", "frames/a 5 3\n# two labels\nimgs 5 3 5\n")
    with pytest.raises(ListFileError, match=r"multi.txt:3: three numbers after the frames folder while line 1 has two: "
                                            r"'imgs 5 3 5' reads either as 'offset num_frames label' or as "
                                            r"'num_frames label label'"):
        read_list_file(file)


@pytest.mark.parametrize("line", ["x.mp4 0 2 4", "x.avi 3 1", "frames/x 10 1 2 3"])
def test_multi_label_lines_are_refused_naming_file_and_line(tmp_path, line):
    file = write(tmp_path / "multi.txt", f"ok.mp4 0\n{line}\n")
    with pytest.raises(ListFileError, match=r"multi.txt:2: .* numbers after .*a multi-label line"):
        read_list_file(file)


def test_bom_crlf_and_stray_whitespace_are_removed_from_lists_and_maps(tmp_path):
    file = tmp_path / "list.txt"
    file.write_bytes(f"{BOM}a.mp4 0  \r\n\r\n  b.mp4 1\r\n".encode())
    assert [(e.path, e.label) for e in read_list_file(file)] == [("a.mp4", 0), ("b.mp4", 1)]
    names = tmp_path / "labels.txt"
    names.write_bytes(f"{BOM}abseiling \r\nair drumming\r\n".encode())
    assert read_label_map(names) == ["abseiling", "air drumming"]
    csv_map = tmp_path / "map.csv"
    csv_map.write_bytes(f"{BOM}id,name\r\n0, a\r\n1,b \r\n".encode())
    assert read_label_map(csv_map) == ["a", "b"]


@pytest.mark.parametrize("bad_line", ["just_a_path.mp4", "a.mp4 label", "a.mp4,x", ",3"])
def test_malformed_line_names_file_and_line_number(tmp_path, bad_line):
    file = write(tmp_path / "bad.txt", f"ok.mp4 0\n{bad_line}\n")
    with pytest.raises(ListFileError, match=r"bad.txt:2: cannot parse .*expected 'video label'"):
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
    nested = read_kinetics400(csv_file, tmp_path / "nested", classnames=["abseiling", "air drumming"])
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


def test_shipped_kinetics400_classes_are_400_sorted_unique_names():
    names = kinetics400_classes()
    assert len(names) == len(set(names)) == 400 and names == sorted(names)
    assert names[:3] == ["abseiling", "air drumming", "answering questions"] and names[-1] == "zumba"


def test_kinetics_indices_do_not_depend_on_which_rows_a_csv_holds(tmp_path):
    header = "label,youtube_id,time_start,time_end,split\n"
    train = write(tmp_path / "train.csv", header + "abseiling,a,0,10,train\nzumba,b,0,10,train\n")
    val = write(tmp_path / "val.csv", header + '"zumba",c,0,10,val\n')
    train_labels = {e.path.rsplit("/", 1)[-1][0]: e.label for e in read_kinetics400(train, tmp_path).entries}
    val_labels = [e.label for e in read_kinetics400(val, tmp_path).entries]
    assert train_labels == {"a": 0, "b": 399} and val_labels == [399]
    assert read_kinetics400(val, tmp_path).classnames == kinetics400_classes()


def test_kinetics_csv_with_bom_and_crlf_reads(tmp_path):
    csv_file = tmp_path / "val.csv"
    csv_file.write_bytes(f"{BOM}label,youtube_id,time_start,time_end,split\r\nair drumming,abc,5,15,val\r\n".encode())
    write(tmp_path / "abc_000005_000015.mp4", "x")
    entries = read_kinetics400(csv_file, tmp_path).entries
    assert [(e.path, e.label) for e in entries] == [(str(tmp_path / "abc_000005_000015.mp4"), 1)]


def test_kinetics_label_outside_the_400_classes_is_refused(tmp_path):
    csv_file = write(tmp_path / "val.csv", "label,youtube_id,time_start,time_end,split\nmoonwalking,abc,5,15,val\n")
    with pytest.raises(ListFileError, match=r"val.csv: labels not among the 400 Kinetics-400 classes.*moonwalking"):
        read_kinetics400(csv_file, tmp_path)


def test_ssv2_reads_the_original_20bn_file_names(tmp_path):
    write(tmp_path / "something-something-v2-labels.json", BOM + json.dumps({"Holding something": "0"}))
    write(tmp_path / "something-something-v2-train.json", json.dumps([{"id": "3", "template": "Holding [something]"}]))
    annotations = read_ssv2(tmp_path, tmp_path / "videos", split="train")
    assert [(e.path, e.label) for e in annotations.entries] == [(str(tmp_path / "videos/3.webm"), 0)]
    with pytest.raises(ListFileError, match="no validation.json or something-something-v2-validation.json"):
        read_ssv2(tmp_path, tmp_path / "videos", split="validation")


def test_ucf101_and_hmdb51_read_files_with_bom_and_crlf(tmp_path):
    lists = tmp_path / "ucf"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(f"{BOM}1 ApplyEyeMakeup\r\n2 YoYo\r\n".encode())
    (lists / "testlist01.txt").write_bytes(f"{BOM}YoYo/v_YoYo_g01_c01.avi\r\n".encode())
    test = read_ucf101(lists, tmp_path / "UCF-101", split=1, subset="test")
    assert test.classnames == ["ApplyEyeMakeup", "YoYo"] and [e.label for e in test.entries] == [1]
    splits = tmp_path / "hmdb"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_bytes(f"{BOM}a.avi 2 \r\n".encode())
    assert [e.path for e in read_hmdb51(splits, tmp_path / "hmdb51", subset="test").entries] == [
        str(tmp_path / "hmdb51/brush_hair/a.avi")]


def test_ucf101_malformed_class_index_names_file_and_line(tmp_path):
    write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\nx YoYo\n")
    write(tmp_path / "trainlist01.txt", "")
    with pytest.raises(ListFileError, match=r"classInd.txt:2: expected '2 ClassName', got 'x YoYo'"):
        read_ucf101(tmp_path, tmp_path)
