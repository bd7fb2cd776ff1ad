"""Files written atomically: a crash at any moment leaves the old file or the new one, never a
torn one, and the temporary files a killed writer left behind are found and removed. Training
checkpoints (`atomic_save`) and adapter files (`atomic_write_bytes`) are written this one way; a
failed write (a full disk) is an ``OSError`` naming the file and its cause."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_save", "atomic_write_bytes", "remove_orphan_tmp_files"]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows) cannot fsync a folder
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _RecordingWriter:
    """The temporary file as ``torch.save`` sees it, keeping the ``OSError`` of a failed write:
    torch reports a write that failed inside its archive writer as a ``RuntimeError`` about
    positions (``unexpected pos 2042752 vs 2042640``), which names neither the file nor the cause."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str):  # tell, seek, truncate, fileno: the file's own
        return getattr(self.handle, name)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside `path`, flush, fsync, rename over `path`, fsync
    the folder: a crash at any moment leaves either the old file or the new one, never a torn one.
    The file gets the permissions ``open`` would give (0666 less the umask). A failed write (a
    full disk) raises ``OSError`` naming `path` and the cause ("No space left on device"), and the
    old file stays.

    Example:
        >>> atomic_save({"step": 3}, "/tmp/clipadapt-doc/state.pt").name
        'state.pt'
    """
    return _atomic_write(path, lambda writer: torch.save(obj, writer))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """`data` written to `path` as :func:`atomic_save` writes a checkpoint (temporary file, fsync,
    rename; the umask's permissions; a full disk is an ``OSError`` naming `path`).

    Example:
        >>> atomic_write_bytes(b"{}", "/tmp/clipadapt-doc/spec.json").name
        'spec.json'
    """
    return _atomic_write(path, lambda writer: writer.write(data))


def _atomic_write(path: str | os.PathLike, write: Callable[[_RecordingWriter], Any]) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    except OSError as error:
        raise OSError(error.errno, f"cannot write {path}: {error.strerror or error}") from None
    writer = _RecordingWriter(handle)
    try:
        with handle:
            os.chmod(handle.name, 0o666 & ~_umask())
            write(writer)
            writer.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException as error:
        Path(handle.name).unlink(missing_ok=True)
        error = writer.error or error  # the OSError (ENOSPC: "No space left on device") behind torch's message
        if isinstance(error, OSError) or (isinstance(error, RuntimeError) and "write" in str(error).lower()):
            errno = getattr(error, "errno", None)
            reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
            raise OSError(errno, f"cannot write {path}: {reason}; the previous {path.name} is kept") from None
        raise
    _fsync_dir(path.parent)
    return path


def remove_orphan_tmp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed :func:`atomic_save` left in `folder`.

    Call it only while holding :func:`output_dir_lock` (no live writer in the folder).

    Example:
        >>> remove_orphan_tmp_files("/tmp/no-such-folder")
        []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    orphans = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans
