"""Video classification datasets: list files, label maps, official annotation layouts, and a
``VideoDataset`` that survives bad videos.

A sample is a dict ``{"video", "label", "index", "bad"}``: ``video`` is uint8 (T, 3, H, W), or
(V, T, 3, H, W) when several temporal clips or spatial crops are asked for (the training step
normalises it on the device, :func:`~clipadapt.data.normalize_video`); ``bad`` is how many
unreadable samples were skipped to produce this one, so summing it over a loader's batches
counts the bad samples of an epoch whatever the number of workers.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from einops import rearrange

from .sampling import FrameSampler
from .transforms import eval_transform
from .video import VideoError, open_video

__all__ = [
    "Entry",
    "Annotations",
    "ListFileError",
    "BadSampleError",
    "TooManyBadSamples",
    "VideoDataset",
    "read_list_file",
    "read_label_map",
    "kinetics400_classes",
    "prompt_name",
    "read_kinetics400",
    "read_ssv2",
    "read_ucf101",
    "read_hmdb51",
    "ON_ERROR",
]

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "raise")
LIST_FORMATS = ("'video label', 'video,label', 'frames_dir label', 'frames_dir num_frames label' or "
                "'frames_dir offset num_frames label'")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp", ".ogv")
_INTEGER = re.compile(r"^-?\d+$")
SSV2_FILES = {  # what a split is called: (our name, the original 20BN release's name)
    "labels": ("labels.json", "something-something-v2-labels.json"),
    "train": ("train.json", "something-something-v2-train.json"),
    "validation": ("validation.json", "something-something-v2-validation.json"),
}


class ListFileError(ValueError):
    """A list, label or annotation file that does not parse; names the file and line."""


class BadSampleError(RuntimeError):
    """A sample that cannot be loaded while ``on_error="raise"``."""


class TooManyBadSamples(RuntimeError):
    """Too many samples in a row could not be loaded: the data (or its root) is wrong."""


@dataclass(frozen=True)
class Entry:
    """One video of a dataset: where it is, its class, and, when a list gives them, its frame
    count and the index of its first frame (mmaction2's ``offset`` column)."""

    path: str
    label: int
    num_frames: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Annotations:
    """Entries of one split with the class names they index (what the ``read_*`` functions return)."""

    entries: list[Entry]
    classnames: list[str] | None = None


# ----------------------------------------------------------------------------- list files

def read_text_lines(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line, with a UTF-8 BOM, CR/LF and surrounding
    whitespace removed: how every list, map and split file is read.

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "classInd.txt"
        >>> _ = file.write_bytes(b"\\xef\\xbb\\xbf1 ApplyEyeMakeup\\r\\n\\r\\n2 YoYo \\r\\n")
        >>> read_text_lines(file)
        [(1, '1 ApplyEyeMakeup'), (3, '2 YoYo')]
    """
    with open(path, encoding="utf-8-sig", newline="") as handle:
        text = handle.read()
    lines = (line.strip().lstrip("\ufeff").strip() for line in text.splitlines())
    return [(number, line) for number, line in enumerate(lines, start=1) if line]


def _parse_list_line(line: str, where: str) -> Entry:
    if "," in line:
        path, _, label = line.rpartition(",")
        if _INTEGER.match(label.strip()) and path.strip():
            return Entry(path.strip(), int(label))
        raise ListFileError(f"{where}: cannot parse {line!r}; expected {LIST_FORMATS}")
    tokens = line.split()
    numbers = 0
    while numbers < len(tokens) - 1 and _INTEGER.match(tokens[-1 - numbers]):
        numbers += 1
    if numbers == 0:
        raise ListFileError(f"{where}: cannot parse {line!r}; expected {LIST_FORMATS}")
    path = line.rsplit(None, numbers)[0]
    values = [int(token) for token in tokens[-numbers:]]
    is_video = path.lower().endswith(VIDEO_EXTENSIONS)
    if numbers > (1 if is_video else 3):
        raise ListFileError(
            f"{where}: {len(values)} numbers after {path!r} ({' '.join(tokens[-numbers:])}): a multi-label line, "
            f"which clipadapt does not read (one class per video); accepted: {LIST_FORMATS}"
        )
    if numbers == 1:
        return Entry(path, values[0])
    if numbers == 2:
        return Entry(path, values[1], num_frames=values[0])
    if values[0] < 0 or values[1] < 1:
        raise ListFileError(f"{where}: offset must be >= 0 and num_frames >= 1, got {values[0]} and {values[1]}")
    return Entry(path, values[2], num_frames=values[1], offset=values[0])


def read_list_file(path: str | os.PathLike) -> list[Entry]:
    """Read a list file in mmaction2's formats, one video per line: ``video label`` (or
    ``video,label``) for a video file, and ``frames_dir label``, ``frames_dir num_frames label``
    or ``frames_dir offset num_frames label`` for a folder of extracted frames (the clip is
    frames ``offset .. offset + num_frames - 1`` of the folder). A line with several labels is
    refused with its file and line number. Blank lines and lines starting with ``#`` are
    skipped; a BOM and CRLF endings are removed; paths stay as written (relative to the root).

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "train.txt"
        >>> _ = file.write_text("a.mp4 0\\nb.mp4,1\\nframes/c 120 2\\nframes/d 8 100 3\\n")
        >>> [(e.path, e.label, e.num_frames, e.offset) for e in read_list_file(file)]
        [('a.mp4', 0, None, 0), ('b.mp4', 1, None, 0), ('frames/c', 2, 120, 0), ('frames/d', 3, 100, 8)]
    """
    return [
        _parse_list_line(line, f"{path}:{number}")
        for number, line in read_text_lines(path)
        if not line.startswith("#")
    ]


def read_label_map(path: str | os.PathLike) -> list[str]:
    """Class names in label order from one name per line, or an ``id,name`` CSV (ids 0..C-1 in
    any order, an ``id,name`` header allowed).

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
        >>> _ = file.write_text("id,name\\n1,brush_hair\\n0,ApplyEyeMakeup\\n")
        >>> read_label_map(file)
        ['ApplyEyeMakeup', 'brush_hair']
    """
    rows = read_text_lines(path)
    if rows and rows[0][1].replace(" ", "").lower() in ("id,name", "id,label", "label_id,name"):
        rows = rows[1:]
    if not rows or not all(re.match(r"^\d+\s*,", line) for _, line in rows):
        return [line for _, line in rows]
    names: dict[int, str] = {}
    for number, line in rows:
        class_id, _, name = line.partition(",")
        class_id = int(class_id)
        if class_id in names:
            raise ListFileError(f"{path}:{number}: class id {class_id} appears twice")
        names[class_id] = name.strip().strip('"')
    missing = sorted(set(range(len(names))) - names.keys())
    if missing:
        raise ListFileError(f"{path}: class ids must be 0..{len(names) - 1}; missing {missing[:5]}")
    return [names[i] for i in range(len(names))]


def kinetics400_classes() -> list[str]:
    """The 400 Kinetics-400 class names in label order (sorted; the order of mmaction2's
    ``label_map_k400.txt`` and of the authors' ``kinetics_400_labels.csv``), shipped with clipadapt.

    Example:
        >>> names = kinetics400_classes()
        >>> len(names), names[0], names[-1]
        (400, 'abseiling', 'zumba')
    """
    return read_label_map(Path(__file__).with_name("labels") / "kinetics400.txt")


def prompt_name(name: str) -> str:
    """A class name as prompt words: CamelCase and snake_case split, lower case.

    Example:
        >>> prompt_name("ApplyEyeMakeup"), prompt_name("brush_hair"), prompt_name("YoYo")
        ('apply eye makeup', 'brush hair', 'yo yo')
    """
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    words = re.sub(r"[_\-\s]+", " ", words)
    return words.strip().lower()


# ----------------------------------------------------------------------------- official layouts

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


def _names_or_file(classnames) -> list[str] | None:
    if classnames is None or isinstance(classnames, (list, tuple)):
        return list(classnames) if classnames is not None else None
    return read_label_map(classnames)


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


# ----------------------------------------------------------------------------- the dataset

def _check_classes(source, label_map, names, num_classes, entries) -> int:
    """The number of classes, after checking the label map, ``num_classes`` and the labels agree."""
    if num_classes is not None and names is not None and len(names) != num_classes:
        raise ValueError(f"num_classes={num_classes} but the label map ({label_map if label_map is not None else source}) "
                         f"has {len(names)} classes")
    count = num_classes if num_classes is not None else len(names) if names is not None else None
    if count is None:
        return max(entry.label for entry in entries) + 1
    outside = next((entry for entry in entries if not 0 <= entry.label < count), None)
    if outside is not None:
        raise ValueError(f"{source}: {outside.path} has label {outside.label}, outside [0, {count}) "
                         f"({'num_classes' if num_classes is not None else 'the label map'} gives {count} classes)")
    return count


def sample_seed(*key: int) -> int:
    """A 63-bit seed mixed from integers such as (seed, epoch, index, attempt)."""
    return int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class VideoDataset(torch.utils.data.Dataset):
    """Clips of the videos named by a list file (or by :class:`Annotations` from a ``read_*``).

    Defaults need only the list file: 8 frames, dense sampling (stride so 8 frames span 128),
    evaluation transforms (short side ``size``, centre crop; uint8). ``train=True``
    draws random clips; give ``transform=train_transform(...)`` for augmentation.
    ``num_clips`` temporal clips × ``num_crops`` spatial crops > 1 yield all views together as
    (V, T, 3, H, W), V = clips × crops, clip-major.

    ``num_classes`` (when given) must equal the label map's length, and every label must lie in
    [0, num_classes): a disagreement raises ``ValueError`` at construction naming both. Frames are
    read with ``backend`` (``"auto"``: the fastest exact reader, see :func:`open_video`); a list's
    ``num_frames``/``offset`` columns choose the frames of a clip, and a video with fewer frames
    than the list says is a bad sample.

    A missing, empty, truncated or undecodable video is replaced by another sample
    (``on_error="skip"``, the default) and logged once per file and process;
    ``on_error="raise"`` raises :class:`BadSampleError` instead. ``max_bad_in_row`` failures in
    a row raise :class:`TooManyBadSamples` (a wrong ``root`` looks like that).

    Randomness comes from (seed, epoch, index) only, so a seed gives the same clips whatever the
    number of loader workers; :func:`~clipadapt.data.build_loader` passes the epoch along.

    Example:
        >>> from clipadapt.data.synthetic import generate
        >>> data = generate("/tmp/clipadapt-synthetic-doc", num_classes=2, train_per_class=2,
        ...                 test_per_class=1, num_frames=8, size=32)
        >>> dataset = VideoDataset(data.train_list, root=data.root, label_map=data.label_file,
        ...                        num_frames=4, stride=2, size=32)
        >>> dataset[0]["video"].shape, dataset.classnames[1]
        (torch.Size([4, 3, 32, 32]), 'a circle moving right')
    """

    def __init__(
        self,
        list_file: str | os.PathLike | Annotations,
        root: str | os.PathLike | None = None,
        label_map: str | os.PathLike | Sequence[str] | None = None,
        *,
        num_classes: int | None = None,
        num_frames: int = 8,
        sampling: str = "dense",
        stride: int | None = None,
        num_clips: int = 1,
        num_crops: int = 1,
        size: int = 224,
        train: bool = False,
        transform: Callable | None = None,
        backend: str = "auto",
        on_error: str = "skip",
        max_bad_in_row: int = 20,
        seed: int = 0,
    ):
        if on_error not in ON_ERROR:
            raise ValueError(f"unknown on_error {on_error!r}; accepted: {', '.join(ON_ERROR)}")
        if isinstance(list_file, Annotations):
            self.entries, names = list(list_file.entries), list_file.classnames
            self.source = "annotations"
        else:
            self.entries, names = read_list_file(list_file), None
            self.source = str(list_file)
        if label_map is not None:
            names = _names_or_file(label_map)
        if not self.entries:
            raise ValueError(f"{self.source}: no videos listed")
        self.root = Path(root) if root is not None else None
        self.label_names = names
        self.classnames = [prompt_name(name) for name in names] if names is not None else None
        self.num_classes = _check_classes(self.source, label_map, names, num_classes, self.entries)
        self.sampler = FrameSampler(num_frames=num_frames, mode=sampling, stride=stride, num_clips=num_clips)
        self.train = train
        self.transform = transform if transform is not None else eval_transform(size, num_crops)
        self.num_views = (1 if train else num_clips) * (1 if transform is not None else num_crops)
        self.backend, self.on_error, self.max_bad_in_row = backend, on_error, max_bad_in_row
        self.seed, self.epoch = seed, 0
        self.bad_samples = 0  # replaced samples seen by this process (the main one when num_workers=0)
        self.bad_files: dict[str, str] = {}
        self._bad_in_row = 0

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the random clips of plain indexing (loaders pass it per sample)."""
        self.epoch = epoch

    def path(self, index: int) -> Path:
        """The file or frame folder of sample ``index``, with the root applied."""
        path = Path(self.entries[index].path)
        return self.root / path if self.root is not None and not path.is_absolute() else path

    def load(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The transformed clip(s) of sample ``index``; raises on bad data whatever ``on_error``."""
        entry = self.entries[index]
        video = open_video(self.path(index), backend=self.backend)
        num_frames = len(video) if entry.num_frames is None else entry.num_frames
        if entry.offset + num_frames > len(video):
            raise VideoError(self.path(index), f"the list gives frames {entry.offset}..{entry.offset + num_frames - 1}, "
                             f"it has {len(video)}")
        indices = self.sampler(num_frames, train=self.train, generator=generator)  # (K, T)
        frames = video.get(indices.flatten() + entry.offset)
        clips = rearrange(frames, "(k t) h w c -> k t c h w", k=indices.shape[0])
        views = [self.transform(clip, generator) for clip in clips]
        views = torch.cat([view if view.dim() == 5 else view[None] for view in views])  # (V, T, 3, H, W)
        return views[0] if views.shape[0] == 1 else views

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict:
        index, epoch, seed = (key, self.epoch, self.seed) if isinstance(key, int) else key
        current, replaced = index, 0
        while True:
            generator = torch.Generator().manual_seed(sample_seed(seed, epoch, index, replaced))
            try:
                video = self.load(current, generator)
            except (VideoError, OSError, ValueError, IndexError, RuntimeError) as error:
                if self.on_error == "raise":
                    raise BadSampleError(f"{self.path(current)}: {error}") from error
                self._report(current, error)
                replaced += 1
                current = self._replacement(index, generator)
                continue
            self._bad_in_row = 0
            return {"video": video, "label": self.entries[current].label, "index": current, "bad": replaced}

    def _report(self, index: int, error: BaseException) -> None:
        path = str(self.path(index))
        reason = error.reason if isinstance(error, VideoError) else str(error)
        self.bad_samples += 1
        self._bad_in_row += 1
        if path not in self.bad_files:
            self.bad_files[path] = reason
            log.warning("skipping %s: %s (replaced by another sample)", path, reason)
        if self._bad_in_row >= self.max_bad_in_row or len(self.entries) == 1:
            raise TooManyBadSamples(
                f"{self._bad_in_row} samples in a row could not be loaded from {self.source} "
                f"(root={self.root}); last: {path}: {reason}. Check the root and the list file."
            )

    def _replacement(self, index: int, generator: torch.Generator) -> int:
        other = int(torch.randint(len(self.entries) - 1, (), generator=generator))
        return other + (other >= index)

    def __repr__(self) -> str:
        return (
            f"VideoDataset({self.source!r}, videos={len(self)}, classes={self.num_classes}, "
            f"sampler={self.sampler}, train={self.train})"
        )
