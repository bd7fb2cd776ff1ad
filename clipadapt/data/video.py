"""Video readers that return the frames a full in-order decode by FFmpeg yields, or refuse.

Three backends read video files: decord (bundles FFmpeg, fast random access), torchcodec
(PyTorch's decoder, exact seeks; needs FFmpeg's shared libraries) and PyAV (FFmpeg through a
filter graph, decoding forward from the start). Every reader has the same small surface:
``len(reader)`` is the number of frames that decode, ``reader.fps`` the frame rate, and
``reader.get(indices)`` returns the frames at those indices as a uint8 tensor (T, H, W, 3), with
the container's rotation applied as the ``ffmpeg`` command line applies it.

Whether a backend is exact depends on the file, so :func:`probe_video` (`clipadapt.data.probe`)
reads its container once
(codec, pixel format, B-frames, rotation, and the frame count from the packet index with the edit
list applied: no decoding) and :meth:`VideoProbe.inexact_reason` says, per backend, why it would
return a wrong frame. ``backend="auto"`` takes the fastest exact backend installed; a named
backend that cannot be exact for a file refuses it with a :class:`VideoError`.
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

from clipadapt.data.frame_store import SUFFIX, FrameStoreReader
from clipadapt.data.probe import (
    AUTO_ORDER,
    DEFAULT_FOLDER_FPS,
    VideoError,
    VideoProbe,
    _first_line,
    probe_video,
)

__all__ = [
    "VideoError",
    "VideoProbe",
    "probe_video",
    "open_video",
    "DecordReader",
    "TorchCodecReader",
    "PyAVReader",
    "FrameFolderReader",
    "decord_available",
    "torchcodec_available",
    "available_backends",
    "BACKENDS",
    "AUTO_ORDER",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", *AUTO_ORDER)
FRAME_PATTERN = re.compile(r"^(?:img|frame|image)?_?(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def _import_optional(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # torchcodec raises RuntimeError/OSError when FFmpeg's libraries are missing
        return None


_MODULES: dict[str, object] = {}


def _module(name: str):
    if name not in _MODULES:
        if name == "decord":
            # decord's bundled FFmpeg exports its own zlib; loaded before torchvision's image library,
            # libpng binds to it and every PNG frame then fails ("bad parameters to zlib")
            import torchvision.io.image  # noqa: F401
        _MODULES[name] = _import_optional(name) or False
    return _MODULES[name] or None


def decord_available() -> bool:
    """True where the optional decord package can be imported (it ships wheels for Linux x86-64)."""
    return _module("decord") is not None


def torchcodec_available() -> bool:
    """True where torchcodec imports and finds FFmpeg's shared libraries (``libavcodec``)."""
    return _module("torchcodec.decoders") is not None


def available_backends() -> list[str]:
    """The installed backends, fastest first (PyAV is always there)."""
    present = {"decord": decord_available(), "torchcodec": torchcodec_available(), "pyav": True}
    return [name for name in AUTO_ORDER if present[name]]


def _as_index_list(indices: Sequence[int] | torch.Tensor, length: int, path) -> list[int]:
    index_list = [int(i) for i in (indices.tolist() if torch.is_tensor(indices) else indices)]
    if not index_list:
        raise ValueError(f"{path}: no frame indices requested")
    out_of_range = [i for i in index_list if not 0 <= i < length]
    if out_of_range:
        raise IndexError(f"{path}: frame indices {out_of_range[:5]} outside [0, {length})")
    return index_list


# ----------------------------------------------------------------------------- readers

class DecordReader:
    """Reads a video file with decord (random access, fast on Linux x86-64).

    Refuses, with a :class:`VideoError`, a file decord cannot read exactly (see
    :meth:`VideoProbe.inexact_reason`).

    Example:
        >>> reader = DecordReader("clip.mp4")  # doctest: +SKIP
        >>> reader.get([0, 4, 8]).shape  # doctest: +SKIP
        torch.Size([3, 240, 320, 3])
    """

    backend = "decord"

    def __init__(self, path: str | os.PathLike, probe: VideoProbe | None = None):
        self.path = Path(path)
        decord = _module("decord")
        if decord is None:
            raise VideoError(self.path, "decord is not installed (it has wheels for Linux x86-64 only)")
        self.probe = probe or probe_video(self.path)
        _refuse_if_inexact(self.probe, self.backend)
        try:
            self._reader = decord.VideoReader(str(self.path), num_threads=1)
            decoded_length = len(self._reader)
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoError(self.path, f"decord cannot open it ({_first_line(error)})") from error
        if decoded_length != self.probe.num_frames:
            raise VideoError(self.path, f"decord counts {decoded_length} frames, the packet index {self.probe.num_frames}")
        self._length, self.fps = self.probe.num_frames, self.probe.fps

    def __len__(self) -> int:
        return self._length

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` as uint8 (T, H, W, 3)."""
        index_list = _as_index_list(indices, self._length, self.path)
        decord = _module("decord")
        try:
            frames = self._reader.get_batch(index_list).asnumpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoError(self.path, f"decord cannot decode it ({_first_line(error)})") from error
        return torch.from_numpy(np.ascontiguousarray(frames))


class TorchCodecReader:
    """Reads a video file with torchcodec's ``VideoDecoder`` (exact seek mode, rotation applied).

    ``device="cuda"`` decodes on the GPU (NVDEC) where torchcodec was built with it.

    Example:
        >>> reader = TorchCodecReader("clip.mp4")  # doctest: +SKIP
        >>> reader.get([0, 4, 8]).shape  # doctest: +SKIP
        torch.Size([3, 240, 320, 3])
    """

    backend = "torchcodec"

    def __init__(self, path: str | os.PathLike, probe: VideoProbe | None = None, device: str = "cpu"):
        self.path = Path(path)
        decoders = _module("torchcodec.decoders")
        if decoders is None:
            raise VideoError(self.path, "torchcodec cannot be loaded (it needs FFmpeg's shared libraries, e.g. apt-get install ffmpeg)")
        self.probe = probe or probe_video(self.path)
        _refuse_if_inexact(self.probe, self.backend)
        try:
            self._decoder = decoders.VideoDecoder(
                str(self.path), dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=1, device=device
            )
            decoded_length = int(self._decoder.metadata.num_frames)
        except (RuntimeError, ValueError) as error:
            raise VideoError(self.path, f"torchcodec cannot open it ({_first_line(error)})") from error
        if decoded_length != self.probe.num_frames:
            raise VideoError(self.path, f"torchcodec counts {decoded_length} frames, the packet index {self.probe.num_frames}")
        self._length, self.fps = self.probe.num_frames, self.probe.fps

    def __len__(self) -> int:
        return self._length

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` as uint8 (T, H, W, 3)."""
        index_list = _as_index_list(indices, self._length, self.path)
        try:
            frames = self._decoder.get_frames_at(index_list).data
        except (RuntimeError, ValueError, IndexError) as error:
            raise VideoError(self.path, f"torchcodec cannot decode it ({_first_line(error)})") from error
        return frames.cpu().contiguous()


class PyAVReader:
    """Reads a video file with PyAV, decoding forward from the start through the filter graph the
    ``ffmpeg`` command line builds (RGB conversion and rotation as it does them): the reference
    path, exact for every format FFmpeg decodes.

    The frame count is :attr:`VideoProbe.num_frames` (the packet index with the edit list
    applied). A file that decodes to fewer frames than that raises :class:`VideoError`.

    Example:
        >>> reader = PyAVReader("clip.webm")  # doctest: +SKIP
        >>> len(reader), reader.fps  # doctest: +SKIP
        (48, 12.0)
    """

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, probe: VideoProbe | None = None):
        self.path = Path(path)
        self.probe = probe or probe_video(self.path)
        _refuse_if_inexact(self.probe, self.backend)
        self._length, self.fps = self.probe.num_frames, self.probe.fps

    def __len__(self) -> int:
        return self._length

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` as uint8 (T, H, W, 3)."""
        import av

        index_list = _as_index_list(indices, self._length, self.path)
        wanted, last = set(index_list), max(index_list)
        found: dict[int, np.ndarray] = {}
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                graph = None
                for position, frame in enumerate(container.decode(stream)):
                    if position in wanted:
                        if graph is None or (frame.width, frame.height, frame.format.name) != graph[1]:
                            graph = (self._graph(stream, frame), (frame.width, frame.height, frame.format.name))
                        graph[0].push(frame)
                        found[position] = graph[0].pull().to_ndarray()
                    if position >= last:
                        break
        except (av.FFmpegError, ValueError) as error:
            if len(found) < len(wanted):
                raise VideoError(self.path, f"PyAV cannot decode it ({_first_line(error)})") from error
        missing = wanted - found.keys()
        if missing:
            raise VideoError(self.path, f"truncated: frame {min(missing)} of {self._length} could not be decoded")
        shapes = {array.shape for array in found.values()}
        if len(shapes) != 1:
            raise VideoError(self.path, f"frames change size mid-stream: {sorted(shapes)}")
        return torch.from_numpy(np.stack([found[i] for i in index_list]))

    def _graph(self, stream, frame):
        import av

        graph = av.filter.Graph()
        node = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format.name, time_base=stream.time_base
        )
        for name, args in self.probe.orientation:
            step = graph.add(name, args) if args else graph.add(name)
            node.link_to(step)
            node = step
        for step in (graph.add("format", "rgb24"), graph.add("buffersink")):
            node.link_to(step)
            node = step
        graph.configure()
        return graph


def _refuse_if_inexact(probe: VideoProbe, backend: str) -> None:
    reason = probe.inexact_reason(backend)
    if reason is not None:
        raise VideoError(probe.path, f"{backend} cannot read it exactly: {reason}; backend='auto' picks an exact one")


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


READERS = {"decord": DecordReader, "torchcodec": TorchCodecReader, "pyav": PyAVReader}
_LOGGED: set[tuple[str, str]] = set()


def _log_once(path: Path, message: str) -> None:
    key = (str(path), message)
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("%s: %s", path, message)


class _FallbackReader:
    """The first exact backend while it works; the next exact one from a decode failure on."""

    def __init__(self, path: Path, probe: VideoProbe, names: list[str]):
        self.path, self.probe, self._names = path, probe, list(names)
        self._reader = self._open_next()
        self.fps, self._length = self._reader.fps, len(self._reader)

    def _open_next(self):
        while self._names:
            name = self._names.pop(0)
            try:
                return READERS[name](self.path, self.probe)
            except VideoError as error:
                if not self._names:
                    raise
                _log_once(self.path, f"{error.reason}; trying {self._names[0]}")
        raise VideoError(self.path, "no backend left to read it")

    @property
    def backend(self) -> str:
        return self._reader.backend

    def __len__(self) -> int:
        return self._length

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        while True:
            try:
                return self._reader.get(indices)
            except VideoError as error:
                if not self._names:
                    raise
                _log_once(self.path, f"{error.reason}; reading it with {self._names[0]}")
                self._reader = self._open_next()


def open_video(path: str | os.PathLike, backend: str = "auto"):
    """Open a video file or a folder of extracted frames for random access.

    ``backend="auto"`` (the default) takes the fastest installed backend that is exact for the
    file (torchcodec, then decord, then PyAV) and moves on to the next one on a decode failure,
    logging the reason once per file. ``"decord"``, ``"torchcodec"`` or ``"pyav"`` use that
    backend only and raise :class:`VideoError` naming the file and the reason when it cannot be
    exact for it. A directory is read as a folder of frames and a ``.frames`` file as a frame
    store (written by ``clipadapt prepare``), whatever the backend.

    Example:
        >>> video = open_video("clip.mp4")  # doctest: +SKIP
        >>> len(video), video.fps, video.get([0, 8, 16]).shape  # doctest: +SKIP
        (300, 30.0, torch.Size([3, 240, 320, 3]))
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    # The one place that chooses a reader: a frame folder, or a video file by backend.
    if path.is_dir():
        return FrameFolderReader(path)
    if path.suffix == SUFFIX:  # a frame store written by `clipadapt prepare`, whatever the backend
        return FrameStoreReader(path)
    probe = probe_video(path)
    if backend != "auto":
        return READERS[backend](path, probe)
    installed = available_backends()
    exact = [name for name in installed if probe.inexact_reason(name) is None]
    if not exact:
        raise VideoError(path, probe.inexact_reason("pyav") or "no installed backend reads it exactly")
    if exact[0] != installed[0]:
        _log_once(path, f"{installed[0]} cannot read it exactly ({probe.inexact_reason(installed[0])}); using {exact[0]}")
    return _FallbackReader(path, probe, exact)
