"""Video readers: decord first, PyAV as the fallback, and folders of extracted frames.

Every reader has the same small surface: ``len(reader)`` is the number of frames, ``reader.fps``
the frame rate, and ``reader.get(indices)`` returns the frames at those indices as a uint8 tensor
of shape (T, H, W, 3).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from einops import rearrange

__all__ = [
    "VideoError",
    "open_video",
    "DecordReader",
    "PyAVReader",
    "FrameFolderReader",
    "decord_available",
    "BACKENDS",
]

log = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")
FRAME_PATTERN = re.compile(r"^(?:img|frame|image)?_?(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)
DEFAULT_FOLDER_FPS = 30.0


class VideoError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def decord_available() -> bool:
    """True where the optional decord package can be imported (it ships wheels for Linux x86-64)."""
    return _import_decord() is not None


_DECORD = None


def _import_decord():
    global _DECORD
    if _DECORD is None:
        try:
            _DECORD = importlib.import_module("decord")
        except ImportError:
            _DECORD = False
    return _DECORD or None


def _as_index_list(indices: Sequence[int] | torch.Tensor, length: int, path) -> list[int]:
    index_list = [int(i) for i in (indices.tolist() if torch.is_tensor(indices) else indices)]
    if not index_list:
        raise ValueError(f"{path}: no frame indices requested")
    out_of_range = [i for i in index_list if not 0 <= i < length]
    if out_of_range:
        raise IndexError(f"{path}: frame indices {out_of_range[:5]} outside [0, {length})")
    return index_list


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(path, "file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(path, "empty file")


class DecordReader:
    """Reads a video file with decord (random access, fast on Linux x86-64).

    Example:
        >>> reader = DecordReader("clip.mp4")  # doctest: +SKIP
        >>> reader.get([0, 4, 8]).shape  # doctest: +SKIP
        torch.Size([3, 240, 320, 3])
    """

    backend = "decord"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        decord = _import_decord()
        if decord is None:
            raise VideoError(self.path, "decord is not installed (it has wheels for Linux x86-64 only)")
        _check_file(self.path)
        try:
            self._reader = decord.VideoReader(str(self.path), num_threads=1)
            self._length = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoError(self.path, f"decord cannot open it ({_first_line(error)})") from error
        if self._length <= 0:
            raise VideoError(self.path, "no frames")

    def __len__(self) -> int:
        return self._length

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` as uint8 (T, H, W, 3)."""
        index_list = _as_index_list(indices, self._length, self.path)
        decord = _import_decord()
        try:
            frames = self._reader.get_batch(index_list).asnumpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoError(self.path, f"decord cannot decode it ({_first_line(error)})") from error
        return torch.from_numpy(np.ascontiguousarray(frames))


class PyAVReader:
    """Reads a video file with PyAV (FFmpeg), decoding forward from the start.

    The frame count comes from the container when it records one, otherwise from counting the
    packets of the video stream (no decoding). A file that decodes to fewer frames than requested
    (truncated) raises :class:`VideoError`.

    Example:
        >>> reader = PyAVReader("clip.webm")  # doctest: +SKIP
        >>> len(reader), reader.fps  # doctest: +SKIP
        (48, 12.0)
    """

    backend = "pyav"

    def __init__(self, path: str | os.PathLike):
        import av

        self.path = Path(path)
        _check_file(self.path)
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoError(self.path, "no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else DEFAULT_FOLDER_FPS
                self._length = int(stream.frames or 0)
                if self._length <= 0:
                    self._length = sum(1 for packet in container.demux(stream) if packet.size > 0)
        except av.FFmpegError as error:
            raise VideoError(self.path, f"PyAV cannot open it ({_first_line(error)})") from error
        if self._length <= 0:
            raise VideoError(self.path, "no frames")

    def __len__(self) -> int:
        return self._length

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` as uint8 (T, H, W, 3)."""
        import av

        index_list = _as_index_list(indices, self._length, self.path)
        wanted = set(index_list)
        last = max(index_list)
        found: dict[int, np.ndarray] = {}
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for position, frame in enumerate(container.decode(stream)):
                    if position in wanted:
                        found[position] = frame.to_ndarray(format="rgb24")
                    if position >= last:
                        break
        except (av.FFmpegError, ValueError) as error:
            if len(found) < len(wanted):
                raise VideoError(self.path, f"PyAV cannot decode it ({_first_line(error)})") from error
        missing = wanted - found.keys()
        if missing:
            raise VideoError(
                self.path, f"truncated: frame {min(missing)} of {self._length} could not be decoded"
            )
        shapes = {array.shape for array in found.values()}
        if len(shapes) != 1:
            raise VideoError(self.path, f"frames change size mid-stream: {sorted(shapes)}")
        return torch.from_numpy(np.stack([found[i] for i in index_list]))


class FrameFolderReader:
    """A folder of extracted frames (``img_00001.jpg``, ``img_00002.jpg``, ...) read as a video.

    Files are ordered by the number in their names; jpg and png are accepted, with or without
    an ``img_``/``frame_``/``image_`` prefix. ``fps`` is unknown for frames and reported as 30.

    Example:
        >>> reader = FrameFolderReader("frames/v_ApplyEyeMakeup_g01_c01")  # doctest: +SKIP
        >>> reader.get([0, 1]).shape  # doctest: +SKIP
        torch.Size([2, 240, 320, 3])
    """

    backend = "frames"

    def __init__(self, path: str | os.PathLike, fps: float = DEFAULT_FOLDER_FPS):
        self.path = Path(path)
        if not self.path.is_dir():
            raise VideoError(self.path, "frame folder not found")
        numbered = []
        for name in os.listdir(self.path):
            match = FRAME_PATTERN.match(name)
            if match:
                numbered.append((int(match.group(1)), name))
        if not numbered:
            raise VideoError(self.path, "no frame images (expected names like img_00001.jpg)")
        self.files = [self.path / name for _, name in sorted(numbered)]
        self.fps = float(fps)

    def __len__(self) -> int:
        return len(self.files)

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` as uint8 (T, H, W, 3)."""
        from torchvision.io import ImageReadMode, decode_image, read_file

        index_list = _as_index_list(indices, len(self.files), self.path)
        images = {}
        for i in set(index_list):
            try:
                images[i] = decode_image(read_file(str(self.files[i])), mode=ImageReadMode.RGB)
            except RuntimeError as error:
                raise VideoError(self.files[i], f"cannot decode image ({_first_line(error)})") from error
        shapes = {tuple(image.shape) for image in images.values()}
        if len(shapes) != 1:
            raise VideoError(self.path, f"frames differ in size: {sorted(shapes)}")
        return rearrange(torch.stack([images[i] for i in index_list]), "t c h w -> t h w c")


class _FallbackReader:
    """decord while it works; PyAV from the first failure on (open or decode)."""

    def __init__(self, path: Path, primary: DecordReader):
        self.path = path
        self._reader = primary
        self.fps = primary.fps
        self._length = len(primary)

    @property
    def backend(self) -> str:
        return self._reader.backend

    def __len__(self) -> int:
        return self._length

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        try:
            return self._reader.get(indices)
        except VideoError as error:
            if self._reader.backend != "decord":
                raise
            log.debug("%s; retrying with PyAV", error)
            self._reader = PyAVReader(self.path)
            self._length = min(self._length, len(self._reader))
            return self._reader.get(indices)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def open_video(path: str | os.PathLike, backend: str = "decord"):
    """Open a video file or a folder of extracted frames for random access.

    ``backend="decord"`` (the default) uses decord and falls back to PyAV when decord is not
    installed or cannot open or decode the file; ``backend="pyav"`` uses PyAV only. A directory
    is read as a folder of frames and a ``.frames`` file as a frame store, whatever the backend. Raises :class:`VideoError` naming the
    file and the reason when no backend can read it.

    Example:
        >>> video = open_video("clip.mp4")  # doctest: +SKIP
        >>> len(video), video.fps, video.get([0, 8, 16]).shape  # doctest: +SKIP
        (300, 30.0, torch.Size([3, 240, 320, 3]))
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if path.is_dir():
        return FrameFolderReader(path)
    if path.suffix == ".frames":  # a frame store written by `clipadapt prepare`, whatever the backend
        from .frame_store import FrameStoreReader

        return FrameStoreReader(path)
    if backend == "pyav" or not decord_available():
        return PyAVReader(path)
    try:
        return _FallbackReader(path, DecordReader(path))
    except VideoError as error:
        log.debug("%s; opening with PyAV", error)
        return PyAVReader(path)
