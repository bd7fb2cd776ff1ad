"""The output folder lock: one live run per ``output_dir`` (``.clipadapt.lock`` holds its pid and
host); a lock whose process is gone is removed with a warning."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from pathlib import Path

__all__ = ["LOCK_NAME", "OutputDirLockedError", "output_dir_lock"]

LOCK_NAME = ".clipadapt.lock"


class OutputDirLockedError(RuntimeError):
    """Another live run holds the output folder."""


_HELD: set[Path] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _acquire(folder: Path) -> bool:
    """Take ``folder/.clipadapt.lock``; False when this process holds it already."""
    lock = folder / LOCK_NAME
    if lock.resolve() in _HELD:
        return False
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output_dir {folder} is a file, not a folder; choose another output_dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(error.errno, f"cannot create output_dir {folder}: {error.strerror or error}") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
                pid, host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                holder = None
            if holder is None or (host == me["host"] and not _alive(pid)):
                what = "unreadable" if holder is None else f"left by pid {pid}, which no longer runs"
                warnings.warn(f"removing the stale lock {lock} ({what})", stacklevel=3)
                lock.unlink(missing_ok=True)
                continue
            where = "" if host == me["host"] else " (another host: if that run is gone, delete the lock file)"
            raise OutputDirLockedError(f"output_dir {folder} is in use by pid {pid} on {host} since {holder.get('started')}"
                                       f"{where}; lock file {lock}; wait for that run or choose another output_dir")
        with os.fdopen(fd, "w") as file:
            json.dump(me, file)
        _HELD.add(lock.resolve())
        return True
    raise OutputDirLockedError(f"could not take the lock {lock}: other runs keep taking it")


def _release(folder: Path) -> None:
    lock = (folder / LOCK_NAME).resolve()
    _HELD.discard(lock)
    lock.unlink(missing_ok=True)


@contextlib.contextmanager
def output_dir_lock(output_dir: str | os.PathLike):
    """Hold ``output_dir/.clipadapt.lock`` (pid and host) for the block; a second run into the folder
    is refused with :class:`OutputDirLockedError`, a lock whose process is gone (same host) is
    removed with a warning. Re-entrant within a process. Under ``torchrun`` rank 0 takes it and
    every rank raises if it could not.

    Example:
        >>> with output_dir_lock("/tmp/clipadapt-doc-lock"):
        ...     pass
    """
    from . import distributed

    folder = Path(output_dir)
    taken, failure = False, None
    if distributed.is_main():
        try:
            taken = _acquire(folder)
        except (OSError, OutputDirLockedError) as error:
            failure = error
    if distributed.is_distributed():
        messages = distributed.all_gather_object(None if failure is None else str(failure))
        if failure is None and messages[0] is not None:
            raise OutputDirLockedError(messages[0])
    if failure is not None:
        raise failure
    try:
        yield
    finally:
        if taken:
            _release(folder)
