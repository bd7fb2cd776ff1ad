"""``clipadapt prepare``: turn a dataset's videos into frame stores, once, in parallel.

Each video is decoded in order (PyAV; a folder of frames is read as it is), its frames resized
so the short side is ``short_side`` (never enlarged), optionally only every k-th kept, JPEG
encoded and written to one ``.frames`` file (see :mod:`clipadapt.data.frame_store`). A new list
file names the stores with the same labels; point ``data.train_list`` / ``data.val_list`` (and
``data.root``) at it and training reads the store.

The job is resumable (a video whose store is complete is skipped; files appear atomically) and
never stops on a bad video: it is reported, counted, listed in ``<list>.bad.txt`` and left out
of the new list.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .datasets import Annotations, Entry, read_label_map, read_list_file
from .frame_store import SUFFIX, encode_frames, is_complete, read_header, write_encoded
from .video import FrameFolderReader, VideoError

__all__ = ["prepare", "PrepareSummary", "store_video"]


@dataclass
class PrepareSummary:
    """What :func:`prepare` did: the new list file, counts, bytes written and video hours."""

    list_file: Path
    root: Path
    label_map: Path | None
    written: int = 0
    skipped: int = 0
    bad: dict[str, str] = field(default_factory=dict)
    store_bytes: int = 0
    video_seconds: float = 0.0

    @property
    def gib_per_hour(self) -> float:
        """Store size per hour of source video, in GiB."""
        return self.store_bytes / 2**30 / max(self.video_seconds / 3600, 1e-12)


def _resized(frame: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """(3, H, W) uint8 with its short side at most `short_side` (aspect kept, never enlarged)."""
    import torchvision.transforms.v2.functional as F

    height, width = frame.shape[-2:]
    if short_side is None or min(height, width) <= short_side:
        return frame
    scale = short_side / min(height, width)
    return F.resize(frame, [max(short_side, round(height * scale)), max(short_side, round(width * scale))], antialias=True)


def _source_frames(path: Path):
    """(fps, iterator of uint8 (3, H, W) frames in display order) of a video file or frame folder."""
    if path.is_dir():
        reader = FrameFolderReader(path)

        def folder_frames():
            for start in range(0, len(reader), 64):
                for frame in reader.get(range(start, min(start + 64, len(reader)))):
                    yield frame.permute(2, 0, 1)

        return reader.fps, folder_frames()
    import av

    if not path.exists():
        raise VideoError(path, "file not found")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise VideoError(path, f"PyAV cannot open it ({str(error).strip()[:200]})") from error
    if not container.streams.video:
        container.close()
        raise VideoError(path, "no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 30.0

    def video_frames():
        with container:
            try:
                for frame in container.decode(stream):
                    yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            except av.FFmpegError as error:
                raise VideoError(path, f"PyAV cannot decode it ({str(error).strip()[:200]})") from error

    return fps, video_frames()


def store_video(source: str | os.PathLike, target: str | os.PathLike, *, short_side: int | None = 320,
                quality: int = 90, every: int = 1) -> dict:
    """Write the frame store of one video (or frame folder); skip it when `target` is complete.

    Returns ``{"status": "written" | "skipped", "bytes", "seconds"}`` (seconds of source video).

    Example:
        >>> store_video("videos/a.mp4", "store/videos/a.frames", short_side=320)  # doctest: +SKIP
        {'status': 'written', 'bytes': 2211840, 'seconds': 10.0}
    """
    source, target = Path(source), Path(target)
    if is_complete(target):
        header = read_header(target)
        return {"status": "skipped", "bytes": target.stat().st_size,
                "seconds": header["source_frames"] / max(header["source_fps"], 1e-9)}
    fps, frames = _source_frames(source)
    counted = {"frames": 0}

    def kept():
        for position, frame in enumerate(frames):
            counted["frames"] = position + 1
            if position % every == 0:
                yield _resized(frame, short_side)

    encoded, size = encode_frames(kept(), quality=quality, source=str(source))
    write_encoded(target, encoded, size, fps=fps / every, quality=quality, every=every, source_fps=fps,
                  source_frames=counted["frames"], source=str(source))
    return {"status": "written", "bytes": target.stat().st_size, "seconds": counted["frames"] / max(fps, 1e-9)}


def _task(arguments) -> tuple[str, dict | str]:
    source, target, options = arguments
    try:
        return source, store_video(source, target, **options)
    except Exception as error:  # noqa: BLE001 (one bad video never stops the job)
        reason = error.reason if isinstance(error, VideoError) else f"{type(error).__name__}: {error}"
        return source, str(reason)[:300]


def _worker_init() -> None:
    torch.set_num_threads(1)


def _store_path(entry_path: Path, relative_to: Path | None) -> Path:
    relative = entry_path.relative_to(relative_to) if relative_to is not None else entry_path
    name = relative.name + SUFFIX if entry_path.is_dir() or not relative.suffix else relative.with_suffix(SUFFIX).name
    return relative.with_name(name)


def prepare(
    source: str | os.PathLike | Annotations,
    out_dir: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    label_map: str | os.PathLike | Sequence[str] | None = None,
    list_name: str | None = None,
    short_side: int | None = 320,
    quality: int = 90,
    every: int = 1,
    workers: int | None = None,
    progress: bool = True,
    console=None,
) -> PrepareSummary:
    """Write a frame store for every video of `source` (a list file, or :class:`Annotations`
    from ``read_kinetics400`` / ``read_ssv2`` / ``read_ucf101`` / ``read_hmdb51``) under
    `out_dir`, and a list file naming them (``out_dir/list_name``, the source list's name by
    default) with the same labels; with class names known, ``out_dir/labels.txt`` too.

    Args:
        root: the folder the list's relative paths start from (as ``VideoDataset(root=)``).
        short_side: frames are resized so their short side is this (never enlarged); ``None``
            keeps the size.
        quality: JPEG quality, 1–100.
        every: keep every k-th frame only (the store's fps is divided by k; divide a dense
            stride by k to span the same time).
        workers: processes (default: all CPUs).

    Example:
        >>> from clipadapt.data import prepare, synthetic, VideoDataset
        >>> data = synthetic.generate("/tmp/clipadapt-synthetic-doc", num_classes=2, train_per_class=2,
        ...                           test_per_class=1, num_frames=8, size=32)
        >>> done = prepare(data.train_list, "/tmp/clipadapt-store-doc", root=data.root, workers=1, progress=False)
        >>> done.written + done.skipped, len(done.bad)
        (4, 0)
        >>> VideoDataset(done.list_file, root=done.root, num_frames=4, stride=2, size=32)[0]["video"].shape
        torch.Size([4, 3, 32, 32])
    """
    if every < 1:
        raise ValueError(f"every={every}: keep every k-th frame with k >= 1")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality={quality} outside [1, 100]")
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side={short_side} must be positive (or None to keep the size)")
    out_dir = Path(out_dir)
    if isinstance(source, Annotations):
        entries, names = list(source.entries), source.classnames
        list_name = list_name or "list.txt"
    else:
        entries, names = read_list_file(source), None
        list_name = list_name or Path(source).name
    if label_map is not None:
        names = read_label_map(label_map) if isinstance(label_map, (str, os.PathLike)) else list(label_map)
    if not entries:
        raise ValueError(f"{source}: no videos listed")
    root_path = Path(root) if root is not None else None
    sources = [root_path / e.path if root_path is not None and not Path(e.path).is_absolute() else Path(e.path) for e in entries]
    relative_to = root_path if root_path is not None and all(s.is_relative_to(root_path) for s in sources) else None
    if relative_to is None and any(s.is_absolute() for s in sources):
        relative_to = Path(os.path.commonpath([str(s.parent) for s in sources]))
    targets = [out_dir / _store_path(s, relative_to) for s in sources]
    if len(set(targets)) != len(targets):
        duplicate = next(t for t in targets if targets.count(t) > 1)
        raise ValueError(f"two videos of {source} map to the same store file {duplicate}; give each a distinct name")

    summary = PrepareSummary(list_file=out_dir / list_name, root=out_dir, label_map=None)
    options = dict(short_side=short_side, quality=quality, every=every)
    results = _run_all([(str(s), str(t), options) for s, t in zip(sources, targets)], workers, progress, console)
    lines = []
    for entry, source_path, target in zip(entries, sources, targets):
        outcome = results[str(source_path)]
        if isinstance(outcome, str):
            summary.bad[str(source_path)] = outcome
            continue
        summary.written += outcome["status"] == "written"
        summary.skipped += outcome["status"] == "skipped"
        summary.store_bytes += outcome["bytes"]
        summary.video_seconds += outcome["seconds"]
        lines.append(f"{target.relative_to(out_dir).as_posix()} {entry.label}\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(summary.list_file, "".join(lines))
    bad_file = summary.list_file.with_name(summary.list_file.name + ".bad.txt")
    if summary.bad:
        _write_atomically(bad_file, "".join(f"{path}\t{reason}\n" for path, reason in summary.bad.items()))
    elif bad_file.exists():
        bad_file.unlink()
    if names is not None:
        summary.label_map = out_dir / "labels.txt"
        _write_atomically(summary.label_map, "".join(f"{name}\n" for name in names))
    if console is not None or progress:
        _report(summary, console)
    return summary


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _run_all(tasks: list, workers: int | None, progress: bool, console) -> dict[str, dict | str]:
    """Run the tasks over processes; a worker that dies takes only its own videos down (each is
    tried twice, then reported bad)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    workers = workers or os.cpu_count() or 1
    results: dict[str, dict | str] = {}
    attempts: dict[str, int] = {}
    counts = {"written": 0, "skipped": 0, "bad": 0}
    bar = Progress(TextColumn("prepare"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("written {task.fields[written]} skipped {task.fields[skipped]} bad {task.fields[bad]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not progress)

    def record(source: str, outcome) -> None:
        results[source] = outcome
        counts["bad" if isinstance(outcome, str) else outcome["status"]] += 1
        bar.update(task, advance=1, **counts)

    with bar:
        task = bar.add_task("prepare", total=len(tasks), **counts)
        if workers == 1:
            for arguments in tasks:
                record(*_task(arguments))
            return results
        pending = list(tasks)
        while pending:
            context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(pending)), mp_context=context,
                                                        initializer=_worker_init) as pool:
                futures = {pool.submit(_task, arguments): arguments for arguments in pending}
                pending = []
                for future in concurrent.futures.as_completed(futures):
                    arguments = futures[future]
                    try:
                        record(*future.result())
                    except concurrent.futures.process.BrokenProcessPool:
                        attempts[arguments[0]] = attempts.get(arguments[0], 0) + 1
                        if attempts[arguments[0]] >= 2:
                            record(arguments[0], "the decoding process died on it (twice)")
                        else:
                            pending.append(arguments)
    return results


def _report(summary: PrepareSummary, console) -> None:
    if console is None:
        from rich.console import Console

        console = Console()
    console.print(
        f"frame store: {summary.written} written, {summary.skipped} already done, {len(summary.bad)} bad; "
        f"{summary.store_bytes / 2**30:.3f} GiB for {summary.video_seconds / 3600:.3f} h of video "
        f"({summary.gib_per_hour:.2f} GiB per hour); list: {summary.list_file}", highlight=False)
    for path, reason in list(summary.bad.items())[:10]:
        console.print(f"  bad: {path}: {reason}", highlight=False)
    if len(summary.bad) > 10:
        console.print(f"  ... {len(summary.bad) - 10} more in {summary.list_file}.bad.txt", highlight=False)
