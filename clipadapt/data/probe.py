"""What a video file's container says, read once per file without decoding (codec, pixel format,
B-frames, rotation, and the frame count from the packet index with the edit list applied), and
per backend why that backend would return a wrong frame for it (`VideoProbe.inexact_reason`).
`VideoError` is the one error of a file that cannot be opened or decoded."""

from __future__ import annotations

import math
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VideoError", "VideoProbe", "probe_video", "AUTO_ORDER"]

# Fastest first, as measured by benchmarks/bench_readers.py (see docs/datasets.md).
AUTO_ORDER = ("torchcodec", "decord", "pyav")
DEFAULT_FOLDER_FPS = 30.0
# What decord reads exactly (tests/data/test_codec_matrix.py): 8-bit 4:2:0 H.264, VP9 and
# MPEG-4 Part 2 without B-frames, unrotated or turned by 180 degrees. HEVC random access, 10-bit
# colour, MPEG-4 B-frames, 90-degree rotation and edit lists give wrong frames (or fail), so
# anything else is refused rather than trusted.
DECORD_EXACT_CODECS = ("h264", "vp9", "mpeg4")
DECORD_EXACT_PIXEL_FORMATS = ("yuv420p",)
PROBE_CACHE_SIZE = 4096
HALF_TURN = (("hflip", ""), ("vflip", ""))  # the filters of a 180-degree rotation, which decord applies


class VideoError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(path, "file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(path, "empty file")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _orientation_filters(matrix: tuple[int, ...] | None) -> tuple[tuple[str, str], ...] | None:
    """The filters the ffmpeg CLI inserts for a display matrix (fftools ``get_rotation`` and its
    autorotate), or ``None`` for an angle that is not a multiple of 90 degrees."""
    if matrix is None:
        return ()
    m = [value / 65536.0 for value in matrix]
    scale_x, scale_y = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale_x == 0 or scale_y == 0:
        return ()
    theta = -round(-math.degrees(math.atan2(m[1] / scale_y, m[0] / scale_x)))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return (("transpose", "cclock_flip" if matrix[3] > 0 else "clock"),)
    if abs(theta - 180) < 1:
        return (("hflip", ""),) * (matrix[0] < 0) + (("vflip", ""),) * (matrix[4] < 0)
    if abs(theta - 270) < 1:
        return (("transpose", "clock_flip" if matrix[3] < 0 else "cclock"),)
    if abs(theta) > 1:
        return None
    return (("vflip", ""),) if matrix[4] < 0 else ()


@dataclass(frozen=True)
class VideoProbe:
    """What one video file's container says, read once without decoding more than one frame.

    ``num_frames`` counts the packets that decode to a shown frame (size > 0, not marked discard
    by the edit list); ``declared_frames`` is what the container header claims (0: none).

    Example:
        >>> probe = probe_video("clip.mp4")  # doctest: +SKIP
        >>> probe.codec, probe.num_frames, probe.inexact_reason("decord")  # doctest: +SKIP
        ('hevc', 48, 'HEVC: decord returns frames from the wrong time on random access')
    """

    path: str
    container: str
    codec: str
    pixel_format: str
    bits: int
    has_b_frames: bool
    display_matrix: tuple[int, ...] | None
    declared_frames: int
    num_frames: int
    fps: float

    @property
    def orientation(self) -> tuple[tuple[str, str], ...] | None:
        """The ffmpeg filters that orient the frames (``()``: none; ``None``: an odd angle)."""
        return _orientation_filters(self.display_matrix)

    @property
    def mirrored(self) -> bool:
        """True when the display matrix flips the picture (negative determinant)."""
        m = self.display_matrix
        return m is not None and m[0] * m[4] - m[1] * m[3] < 0

    def inexact_reason(self, backend: str) -> str | None:
        """Why `backend` would not return ffmpeg's frames for this file; ``None`` when it does."""
        if self.orientation is None:
            return "rotation by an angle that is not a multiple of 90 degrees is not supported"
        if backend == "pyav":
            return None
        if backend == "torchcodec":
            if self.codec == "mpeg4" and self.has_b_frames and self.container == "avi":
                return "MPEG-4 Part 2 with B-frames in AVI: torchcodec's exact seek cannot decode it"
            if self.mirrored:
                return "a mirrored display matrix: torchcodec's orientation of it is not verified"
            return None
        if backend == "decord":
            if self.orientation and self.orientation != HALF_TURN:
                return "rotation by 90 or 270 degrees or a mirrored display matrix: decord cannot apply it"
            if self.codec not in DECORD_EXACT_CODECS:
                return f"{self.codec}: decord's random access is not exact for it (verified: {', '.join(DECORD_EXACT_CODECS)})"
            if self.pixel_format not in DECORD_EXACT_PIXEL_FORMATS:
                return f"pixel format {self.pixel_format}: decord's RGB conversion differs from FFmpeg's"
            if self.codec == "mpeg4" and self.has_b_frames:
                return "MPEG-4 Part 2 with B-frames: decord returns frames from the wrong time"
            if self.declared_frames and self.declared_frames != self.num_frames:
                return (f"the container declares {self.declared_frames} frames but {self.num_frames} decode "
                        "(edit list): decord returns frames out of order")
            return None
        raise ValueError(f"unknown video backend {backend!r}; accepted: {', '.join(AUTO_ORDER)}")


_PROBES: OrderedDict[tuple, VideoProbe] = OrderedDict()


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Read a video file's container once (cached per file, size and mtime) with PyAV.

    Raises :class:`VideoError` for a missing, empty or unreadable file or one without video.

    Example:
        >>> probe_video("clip.avi").num_frames  # doctest: +SKIP
        164
    """
    import av

    path = Path(path)
    _check_file(path)
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if key in _PROBES:
        _PROBES.move_to_end(key)
        return _PROBES[key]
    matrix, count = None, 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream")
            stream = container.streams.video[0]
            context = stream.codec_context
            if context is None or context.format is None:
                raise VideoError(path, "the video stream has no known codec or pixel format")
            pixel_format = context.format.name
            bits = max((component.bits for component in context.format.components), default=8)
            rate = stream.average_rate or stream.guessed_rate
            first_frame = None
            for packet in container.demux(stream):
                if packet.size > 0 and not packet.is_discard:
                    count += 1
                if first_frame is None and packet.size > 0:
                    first_frame = next(iter(stream.decode(packet)), None)
            if first_frame is None and count:
                first_frame = next(iter(stream.decode(None)), None)
            if first_frame is not None:
                for side_data in first_frame.side_data:
                    if side_data.type.name == "DISPLAYMATRIX":
                        matrix = struct.unpack("<9i", bytes(side_data)[:36])
            probe = VideoProbe(
                path=str(path), container=container.format.name.split(",")[0], codec=context.name,
                pixel_format=pixel_format, bits=int(bits), has_b_frames=bool(context.has_b_frames),
                display_matrix=matrix, declared_frames=int(stream.frames or 0), num_frames=count,
                fps=float(rate) if rate else DEFAULT_FOLDER_FPS,
            )
    except (av.FFmpegError, ValueError) as error:
        raise VideoError(path, f"cannot open it ({_first_line(error)})") from error
    if probe.num_frames <= 0:
        raise VideoError(path, "no frames")
    _PROBES[key] = probe
    if len(_PROBES) > PROBE_CACHE_SIZE:
        _PROBES.popitem(last=False)
    return probe
