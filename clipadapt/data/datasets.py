"""Video classification datasets: list files, label maps and a ``VideoDataset`` that survives
bad videos (the official annotation layouts are read in `clipadapt.data.layouts`).

A sample is a dict ``{"video", "label", "index", "bad"}``: ``video`` is uint8 (T, 3, H, W), or
(V, T, 3, H, W) when several temporal clips or spatial crops are asked for (the training step
normalises it on the device, :func:`~clipadapt.data.normalize_video`); ``bad`` is how many
unreadable samples were skipped to produce this one, so summing it over a loader's batches
counts the bad samples of an epoch whatever the number of workers.
"""

from __future__ import annotations

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
    "ON_ERROR",
]

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "raise")
LIST_FORMATS = ("'video label', 'video,label', 'frames_dir label', 'frames_dir num_frames label' or "
                "'frames_dir offset num_frames label'")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp", ".ogv")
_INTEGER = re.compile(r"^-?\d+$")


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


def _trailing_numbers(line: str) -> int:
    """How many whitespace-separated integers end `line` (the path keeps at least one token)."""
    tokens = line.split()
    numbers = 0
    while numbers < len(tokens) - 1 and _INTEGER.match(tokens[-1 - numbers]):
        numbers += 1
    return numbers


def _frames_dir_columns(line: str) -> int:
    """The number columns of a frames-folder line (0 for a comma line or a video file)."""
    if "," in line:
        return 0
    numbers = _trailing_numbers(line)
    path = line.rsplit(None, numbers)[0] if numbers else line
    return 0 if path.lower().endswith(VIDEO_EXTENSIONS) else numbers


def _check_offset_layout(path, lines: list[tuple[int, str]]) -> None:
    """Refuse a list whose frames-folder lines mix two and three numbers: a three-number line
    (``imgs 5 3 5``) is then either ``offset num_frames label`` or, as in mmaction2's multi-label
    lists, ``num_frames label label``, and the file does not say which."""
    columns = {number: _frames_dir_columns(line) for number, line in lines}
    two = next((number for number, count in columns.items() if count == 2), None)
    three = next((number for number, count in columns.items() if count == 3), None)
    if two is not None and three is not None:
        raise ListFileError(
            f"{path}:{three}: three numbers after the frames folder while line {two} has two: "
            f"{dict(lines)[three]!r} reads either as 'offset num_frames label' or as 'num_frames label label' "
            "(a multi-label line, which clipadapt does not read); write every line with an offset "
            "('frames_dir offset num_frames label') or none"
        )


def _parse_list_line(line: str, where: str) -> Entry:
    if "," in line:
        path, _, label = line.rpartition(",")
        if _INTEGER.match(label.strip()) and path.strip():
            return Entry(path.strip(), int(label))
        raise ListFileError(f"{where}: cannot parse {line!r}; expected {LIST_FORMATS}")
    tokens = line.split()
    numbers = _trailing_numbers(line)
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
    refused with its file and line number. Three numbers after a frames folder are read as
    ``offset num_frames label`` only when every frames-folder line of the file has three: a file
    that mixes two and three is refused, since its three-number lines may be multi-label lines
    (``num_frames label label``). Blank lines and lines starting with ``#`` are skipped; a BOM and
    CRLF endings are removed; paths stay as written (relative to the root).

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "train.txt"
        >>> _ = file.write_text("a.mp4 0\\nb.mp4,1\\nframes/c 120 2\\nframes/d 8 100 3\\n")
        >>> [(e.path, e.label, e.num_frames, e.offset) for e in read_list_file(file)]
        [('a.mp4', 0, None, 0), ('b.mp4', 1, None, 0), ('frames/c', 2, 120, 0), ('frames/d', 3, 100, 8)]
    """
    lines = [(number, line) for number, line in read_text_lines(path) if not line.startswith("#")]
    entries = [_parse_list_line(line, f"{path}:{number}") for number, line in lines]
    _check_offset_layout(path, lines)
    return entries


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


# ----------------------------------------------------------------------------- the dataset

def _names_or_file(classnames) -> list[str] | None:
    if classnames is None or isinstance(classnames, (list, tuple)):
        return list(classnames) if classnames is not None else None
    return read_label_map(classnames)


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
    evaluation transforms (short side ``size`` resized with ``interpolation``, centre crop; uint8). ``train=True``
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
        interpolation: str = "bilinear",
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
        self.transform = transform if transform is not None else eval_transform(size, num_crops, interpolation)
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
                f"{self._bad_in_row} samples in a row could not be loaded from {self.source}"
                f"{'' if self.root is None else f' (root={self.root})'}; last: {path}: {reason}. Check the root and the list file."
            )

    def _replacement(self, index: int, generator: torch.Generator) -> int:
        other = int(torch.randint(len(self.entries) - 1, (), generator=generator))
        return other + (other >= index)

    def __repr__(self) -> str:
        return (
            f"VideoDataset({self.source!r}, videos={len(self)}, classes={self.num_classes}, "
            f"sampler={self.sampler}, train={self.train})"
        )
