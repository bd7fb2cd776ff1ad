"""The frame store: a video decoded once into JPEG frames, one file per video, read at random.

Decoding a dense 8×16 clip from a video file means decoding every frame from the keyframe
before it (130–250 frames for 8 kept); reading it from a frame store means decoding 8 JPEGs.
``clipadapt prepare`` (:func:`clipadapt.data.prepare`) writes the stores; :func:`open_video`
reads a ``.frames`` file with :class:`FrameStoreReader`, so a list file that names them works
with :class:`~clipadapt.data.VideoDataset` unchanged.

File layout (little-endian)::

    b"CLIPFRM1"                          8 bytes, magic and version
    header_bytes                         uint32, length of the JSON header
    header                               JSON: num_frames, fps, height, width, quality, every,
                                         source_frames, source_fps, source
    offsets                              int64[num_frames + 1], frame i is data[offsets[i]:offsets[i+1]]
    data                                 the JPEG frames back to back

A file is written to a temporary name and renamed into place, so a file with the final name is
complete; :func:`is_complete` checks the magic, the header and the length.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from einops import rearrange

from .probe import VideoError  # not from .video, which imports this module

__all__ = [
    "SUFFIX",
    "FrameStoreReader",
    "FrameStoreHeader",
    "write_frame_store",
    "encode_frames",
    "write_encoded",
    "read_header",
    "is_complete",
    "decode_frames",
    "set_decode_device",
]

SUFFIX = ".frames"
MAGIC = b"CLIPFRM1"
_PREFIX = struct.Struct("<8sI")
_MAX_HEADER_BYTES = 1 << 20
_DECODE_DEVICE = "cpu"


def set_decode_device(device: str | torch.device) -> None:
    """Where :class:`FrameStoreReader` decodes by default: ``"cpu"`` (libjpeg) or ``"cuda"``
    (nvjpeg, in batches). CUDA cannot run in forked loader workers: decode on the GPU with
    ``num_workers=0`` (the transforms then run on the GPU too) and ``pin_memory=False``.

    Example:
        >>> set_decode_device("cpu")
    """
    global _DECODE_DEVICE
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"frame store decode device {device} is not supported; accepted: cpu, cuda")
    _DECODE_DEVICE = str(device)


class FrameStoreHeader(dict):
    """The JSON header of a frame store plus ``offsets`` (int64 array) and ``data_start``."""


def _read_prefix(handle, path) -> FrameStoreHeader:
    prefix = handle.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise VideoError(path, "not a frame store: shorter than its header")
    magic, header_bytes = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise VideoError(path, f"not a frame store: magic {magic!r}, expected {MAGIC!r}")
    if header_bytes > _MAX_HEADER_BYTES:
        raise VideoError(path, f"frame store header of {header_bytes} bytes (at most {_MAX_HEADER_BYTES})")
    try:
        header = FrameStoreHeader(json.loads(handle.read(header_bytes).decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VideoError(path, f"frame store header does not parse ({error})") from error
    count = int(header.get("num_frames", 0))
    if count <= 0:
        raise VideoError(path, "frame store holds no frames")
    raw = handle.read(8 * (count + 1))
    if len(raw) != 8 * (count + 1):
        raise VideoError(path, "truncated frame store: the frame index is incomplete")
    header["offsets"] = np.frombuffer(raw, dtype="<i8")
    header["data_start"] = _PREFIX.size + header_bytes + len(raw)
    return header


def read_header(path: str | os.PathLike) -> FrameStoreHeader:
    """The header of a frame store file (raises :class:`VideoError` if it is not one).

    Example:
        >>> header = read_header("store/videos/00000.frames")  # doctest: +SKIP
        >>> header["num_frames"], header["fps"], header["height"], header["width"]  # doctest: +SKIP
        (300, 30.0, 240, 320)
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _read_prefix(handle, path)
    except FileNotFoundError:
        raise VideoError(path, "file not found") from None


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` is a whole frame store: magic, header, index and all frame bytes."""
    try:
        header = read_header(path)
    except (VideoError, OSError):
        return False
    return os.path.getsize(path) == header["data_start"] + int(header["offsets"][-1])


def decode_frames(encoded: Sequence[torch.Tensor], device: str | torch.device = "cpu") -> torch.Tensor:
    """JPEG frames (1-D uint8 CPU tensors) decoded in one batched call: uint8 (T, 3, H, W) on `device`.

    Example:
        >>> from torchvision.io import encode_jpeg
        >>> jpeg = encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8))
        >>> decode_frames([jpeg, jpeg]).shape
        torch.Size([2, 3, 8, 8])
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    images = decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=device)
    return torch.stack(images)


def encode_frames(frames: Iterable[torch.Tensor], quality: int = 90, source: str = "") -> tuple[list[bytes], tuple[int, int]]:
    """JPEG bytes of uint8 (3, H, W) frames of one size, and that (H, W).

    Example:
        >>> jpegs, size = encode_frames([torch.zeros(3, 16, 24, dtype=torch.uint8)])
        >>> len(jpegs), size
        (1, (16, 24))
    """
    from torchvision.io import encode_jpeg

    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality {quality} outside [1, 100]")
    encoded, size = [], None
    for frame in frames:
        if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"{source}: frames must be uint8 (3, H, W), got {frame.dtype} {tuple(frame.shape)}")
        if size is None:
            size = (int(frame.shape[1]), int(frame.shape[2]))
        elif tuple(frame.shape[1:]) != size:
            raise VideoError(source, f"frames change size mid-stream: {size} then {tuple(frame.shape[1:])}")
        encoded.append(encode_jpeg(frame.contiguous(), quality=quality).numpy().tobytes())
    if not encoded:
        raise VideoError(source, "no frames to store")
    return encoded, size


def write_encoded(
    path: str | os.PathLike,
    encoded: Sequence[bytes],
    size: tuple[int, int],
    *,
    fps: float,
    quality: int,
    every: int = 1,
    source_frames: int | None = None,
    source_fps: float | None = None,
    source: str = "",
) -> FrameStoreHeader:
    """Write JPEG frames (bytes) of size (H, W) as one frame store file, atomically: the file
    appears under its final name only once complete."""
    path = Path(path)
    offsets = np.zeros(len(encoded) + 1, dtype="<i8")
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    header = {
        "num_frames": len(encoded), "fps": float(fps), "height": size[0], "width": size[1], "quality": quality,
        "every": every, "source_frames": source_frames if source_frames is not None else len(encoded) * every,
        "source_fps": float(source_fps if source_fps is not None else fps * every), "source": source,
    }
    header_bytes = json.dumps(header).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(_PREFIX.pack(MAGIC, len(header_bytes)))
            handle.write(header_bytes)
            handle.write(offsets.tobytes())
            for jpeg in encoded:
                handle.write(jpeg)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return FrameStoreHeader(header, offsets=offsets, data_start=_PREFIX.size + len(header_bytes) + offsets.nbytes)


def write_frame_store(path: str | os.PathLike, frames: Iterable[torch.Tensor], *, fps: float, quality: int = 90,
                      every: int = 1, source: str = "") -> FrameStoreHeader:
    """Encode uint8 (3, H, W) frames (the ones to keep, already resized) at `fps` as JPEG into
    one frame store file, atomically.

    Example:
        >>> import tempfile
        >>> frames = [torch.full((3, 16, 24), i, dtype=torch.uint8) for i in range(4)]
        >>> header = write_frame_store(tempfile.mkdtemp() + "/a.frames", frames, fps=30.0)
        >>> header["num_frames"], header["height"], header["width"]
        (4, 16, 24)
    """
    encoded, size = encode_frames(frames, quality, source or str(path))
    return write_encoded(path, encoded, size, fps=fps, quality=quality, every=every, source=source)


class FrameStoreReader:
    """Random access to the frames of a ``.frames`` file, decoding only the frames asked for.

    Same surface as the video readers: ``len(reader)``, ``reader.fps``, ``reader.get(indices)``
    -> uint8 (T, H, W, 3). The requested JPEGs are read by offset and decoded in one batched
    ``torchvision.io.decode_jpeg`` call, on ``device`` (default: :func:`set_decode_device`'s);
    ``reader.get_clip(indices)`` gives (T, 3, H, W) without the channel move.

    Example:
        >>> reader = FrameStoreReader("store/videos/00000.frames")  # doctest: +SKIP
        >>> len(reader), reader.get([0, 16, 32]).shape  # doctest: +SKIP
        (300, torch.Size([3, 240, 320, 3]))
    """

    backend = "frame_store"

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None):
        self.path = Path(path)
        self.device = torch.device(device or _DECODE_DEVICE)
        self.header = read_header(self.path)
        self.offsets = self.header["offsets"]
        self.fps = float(self.header["fps"])
        self.size = (int(self.header["height"]), int(self.header["width"]))
        self._length = int(self.header["num_frames"])
        if os.path.getsize(self.path) < self.header["data_start"] + int(self.offsets[-1]):
            raise VideoError(self.path, f"truncated frame store: {self._length} frames indexed, fewer bytes present")

    def __len__(self) -> int:
        return self._length

    def encoded(self, indices: Sequence[int] | torch.Tensor) -> list[torch.Tensor]:
        """The JPEG bytes of the frames at `indices` as 1-D uint8 tensors (each distinct frame read once)."""
        index_list = [int(i) for i in (indices.tolist() if torch.is_tensor(indices) else indices)]
        if not index_list:
            raise ValueError(f"{self.path}: no frame indices requested")
        outside = [i for i in index_list if not 0 <= i < self._length]
        if outside:
            raise IndexError(f"{self.path}: frame indices {outside[:5]} outside [0, {self._length})")
        start = self.header["data_start"]
        found: dict[int, torch.Tensor] = {}
        with open(self.path, "rb") as handle:
            for i in sorted(set(index_list)):
                handle.seek(start + int(self.offsets[i]))
                raw = handle.read(int(self.offsets[i + 1] - self.offsets[i]))
                found[i] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        return [found[i] for i in index_list]

    def get_clip(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames at `indices` as uint8 (T, 3, H, W) on the reader's device."""
        try:
            return decode_frames(self.encoded(indices), self.device)
        except RuntimeError as error:
            raise VideoError(self.path, f"cannot decode a stored JPEG ({str(error).strip()[:200]})") from error

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames at `indices` as uint8 (T, H, W, 3)."""
        return rearrange(self.get_clip(indices), "t c h w -> t h w c")
