"""The official annotation layouts of Kinetics-400, Something-Something v2, UCF101 and HMDB51,
read into `Annotations` (video paths under the layout the files on disk follow, labels and class
names)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .datasets import Annotations, Entry, ListFileError, _names_or_file, kinetics400_classes, read_text_lines

SSV2_FILES = {  # what a split is called: (our name, the original 20BN release's name)
    "labels": ("labels.json", "something-something-v2-labels.json"),
    "train": ("train.json", "something-something-v2-train.json"),
    "validation": ("validation.json", "something-something-v2-validation.json"),
}

__all__ = ["read_kinetics400", "read_ssv2", "read_ucf101", "read_hmdb51"]


def _choose_layout(video_root: Path, candidates: list[list[str]]) -> int:
    """Index of the layout whose paths exist most often among the first rows (first on a tie).

    ``candidates[i]`` holds, for each of the first rows, the path under layout ``i``.
    """
    scores = [sum((video_root / path).exists() for path in paths) for paths in candidates]
    return int(np.argmax(scores))


def _layout_paths(video_root: Path, rows: list, layouts: list[Callable]) -> list[str]:
    probe = rows[:20]
    chosen = layouts[_choose_layout(video_root, [[layout(row) for row in probe] for layout in layouts])]
    return [str(video_root / chosen(row)) for row in rows]


def read_kinetics400(
    csv_file: str | os.PathLike,
    video_root: str | os.PathLike,
    classnames: Sequence[str] | str | os.PathLike | None = None,
    extension: str = ".mp4",
) -> Annotations:
    """Kinetics-400 from its official CSV (``label,youtube_id,time_start,time_end,split``).

    Files are ``{youtube_id}_{start:06d}_{end:06d}{extension}``, either in one folder per class
    (named as the label, or with spaces as underscores) or all in ``video_root``; the layout is
    detected from the files present. Classes are the 400 shipped Kinetics-400 names
    (:func:`kinetics400_classes`) unless ``classnames`` (a list or a label file) gives others, so
    a class has the same index whatever subset of rows a CSV holds. A BOM, stray whitespace and
    quotes around names are removed.

    Example:
        >>> annotations = read_kinetics400("kinetics400/val.csv", "kinetics400/val")  # doctest: +SKIP
    """
    video_root = Path(video_root)
    lines = read_text_lines(csv_file)
    header = [name.strip() for name in next(csv.reader([lines[0][1]]))] if lines else []
    missing = {"label", "youtube_id", "time_start", "time_end"} - set(header)
    if missing:
        raise ListFileError(
            f"{csv_file}: missing columns {sorted(missing)}; expected label,youtube_id,time_start,time_end,split"
        )
    rows = []
    for number, line in lines[1:]:
        row = dict(zip(header, (value.strip() for value in next(csv.reader([line], skipinitialspace=True)))))
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except (KeyError, TypeError, ValueError):
            raise ListFileError(f"{csv_file}:{number}: time_start/time_end must be numbers, got {line!r}") from None
        rows.append((row["label"], f"{row['youtube_id']}_{start:06d}_{end:06d}{extension}"))
    names = _names_or_file(classnames) or kinetics400_classes()
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({label for label, _ in rows} - index.keys())
    if unknown:
        source = "the label map" if classnames is not None else "the 400 Kinetics-400 classes (give data.label_map for others)"
        raise ListFileError(f"{csv_file}: labels not among {source}: {unknown[:5]}")
    layouts = [
        lambda row: f"{row[0]}/{row[1]}",
        lambda row: f"{row[0].replace(' ', '_')}/{row[1]}",
        lambda row: row[1],
    ]
    paths = _layout_paths(video_root, rows, layouts)
    return Annotations([Entry(path, index[label]) for path, (label, _) in zip(paths, rows)], names)


def read_ssv2(
    annotation_dir: str | os.PathLike, video_root: str | os.PathLike, split: str = "train"
) -> Annotations:
    """Something-Something v2 from its JSON files: ``labels.json`` (``{"Putting something on a
    surface": "0", ...}``) and ``train.json`` / ``validation.json`` (items with ``id`` and a
    ``template`` whose ``[something]`` placeholders name the class), or the same files under the
    original 20BN names (``something-something-v2-labels.json``, ``-train.json``,
    ``-validation.json``); videos are ``{id}.webm``.

    Example:
        >>> annotations = read_ssv2("ssv2/labels", "ssv2/videos", split="validation")  # doctest: +SKIP
    """
    if split not in ("train", "validation"):
        raise ValueError(f"unknown SSv2 split {split!r}; accepted: train, validation (test has no labels)")
    annotation_dir, video_root = Path(annotation_dir), Path(video_root)
    labels_file, split_file = _ssv2_file(annotation_dir, "labels"), _ssv2_file(annotation_dir, split)
    labels = {name.strip(): value for name, value in _read_json(labels_file).items()}
    names = [name for name, _ in sorted(labels.items(), key=lambda item: int(item[1]))]
    index = {name: int(i) for name, i in labels.items()}
    entries = []
    for position, item in enumerate(_read_json(split_file)):
        template = item.get("template")
        if template is None or "id" not in item:
            raise ListFileError(f"{split_file}: item {position} has no 'id' or 'template': {item}")
        name = template.replace("[", "").replace("]", "").strip()
        if name not in index:
            raise ListFileError(f"{split_file}: item {position} (id {item['id']}): template {template!r} not in {labels_file}")
        entries.append(Entry(str(video_root / f"{item['id']}.webm"), index[name]))
    return Annotations(entries, names)


def _ssv2_file(annotation_dir: Path, kind: str) -> Path:
    for name in SSV2_FILES[kind]:
        if (annotation_dir / name).is_file():
            return annotation_dir / name
    raise ListFileError(f"{annotation_dir}: no {' or '.join(SSV2_FILES[kind])}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ListFileError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def _check_split(split: int, subset: str, dataset: str) -> None:
    if split not in (1, 2, 3) or subset not in ("train", "test"):
        raise ValueError(f"{dataset}: split must be 1, 2 or 3 and subset train or test, got {split}, {subset!r}")


def read_ucf101(
    annotation_dir: str | os.PathLike, video_root: str | os.PathLike, split: int = 1, subset: str = "train"
) -> Annotations:
    """UCF101 from ``ucfTrainTestlist``: ``classInd.txt`` (``1 ApplyEyeMakeup``) and
    ``trainlist0N.txt`` / ``testlist0N.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi``).
    Videos sit in one folder per class under ``video_root`` (as the official archive unpacks)
    or all in ``video_root``.

    Example:
        >>> annotations = read_ucf101("ucfTrainTestlist", "UCF-101", split=1, subset="test")  # doctest: +SKIP
    """
    _check_split(split, subset, "UCF101")
    annotation_dir, video_root = Path(annotation_dir), Path(video_root)
    class_file = annotation_dir / "classInd.txt"
    names = []
    for number, line in read_text_lines(class_file):
        tokens = line.split()
        if len(tokens) != 2 or tokens[0] != str(len(names) + 1):
            raise ListFileError(f"{class_file}:{number}: expected '{len(names) + 1} ClassName', got {line!r}")
        names.append(tokens[1])
    index = {name: i for i, name in enumerate(names)}
    list_file = annotation_dir / f"{subset}list0{split}.txt"
    rows = []
    for number, line in read_text_lines(list_file):
        relative = line.split()[0].replace("\\", "/")
        folder = relative.split("/")[0]
        if folder not in index:
            raise ListFileError(f"{list_file}:{number}: class folder {folder!r} is not in {class_file}")
        rows.append((relative, index[folder]))
    paths = _layout_paths(video_root, rows, [lambda row: row[0], lambda row: row[0].rsplit("/", 1)[-1]])
    return Annotations([Entry(path, label) for path, (_, label) in zip(paths, rows)], names)


def read_hmdb51(
    splits_dir: str | os.PathLike, video_root: str | os.PathLike, split: int = 1, subset: str = "train"
) -> Annotations:
    """HMDB51 from ``testTrainMulti_7030_splits``: ``<class>_test_split<N>.txt`` with lines
    ``video.avi 0|1|2`` (1 = train, 2 = test, 0 = unused). Classes are the sorted class names;
    videos sit in one folder per class under ``video_root`` or all in ``video_root``.

    Example:
        >>> annotations = read_hmdb51("testTrainMulti_7030_splits", "hmdb51", split=1)  # doctest: +SKIP
    """
    _check_split(split, subset, "HMDB51")
    splits_dir, video_root = Path(splits_dir), Path(video_root)
    suffix = f"_test_split{split}.txt"
    files = sorted(path for path in splits_dir.iterdir() if path.name.endswith(suffix))
    if not files:
        raise ListFileError(f"{splits_dir}: no '<class>{suffix}' files")
    names = [path.name[: -len(suffix)] for path in files]
    wanted = "1" if subset == "train" else "2"
    rows = []
    for label, split_file in enumerate(files):
        for number, line in read_text_lines(split_file):
            tokens = line.split()
            if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
                raise ListFileError(f"{split_file}:{number}: expected 'video.avi 0|1|2', got {line!r}")
            if tokens[1] == wanted:
                rows.append((names[label], tokens[0], label))
    paths = _layout_paths(video_root, rows, [lambda row: f"{row[0]}/{row[1]}", lambda row: row[1]])
    return Annotations([Entry(path, label) for path, (_, _, label) in zip(paths, rows)], names)
