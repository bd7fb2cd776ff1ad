"""Keep freed host memory for reuse during CPU training.

A training step on the CPU allocates its activations afresh each time: a ViT-B/16 MLP output of
16 frames is 39 MB. glibc's ``malloc`` serves blocks above 32 MB (and, by default, many smaller
ones) with a new ``mmap`` and returns them to the system when freed, so every step touches
gigabytes of new pages and pays a page fault per 4 KiB (about 10 ms per such tensor here).
`retain_freed_memory` tells glibc to serve all blocks from its heap and to keep the freed part,
so a step re-uses the pages of the one before. This is what a caching allocator (jemalloc,
tcmalloc) does, without preloading a library; resident memory then stays at the run's peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_KEEP = 2**31 - 1  # bytes of free heap top kept before trimming (mallopt takes an int)


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def retain_freed_memory() -> bool:
    """Have glibc ``malloc`` keep freed memory for reuse, for the rest of the process.

    Returns whether the setting applied (``False`` off Linux/glibc). The CPU training loop of
    ``clipadapt run`` (`Trainer.fit`) turns it on. There is no way back: setting these options
    also ends glibc's own adjustment of its mmap threshold.

    Example:
        >>> from clipadapt.engine import retain_freed_memory
        >>> retain_freed_memory()     # before a CPU training loop
        True
    """
    libc = _libc()
    if libc is None:
        return False
    return all(libc.mallopt(option, value) == 1 for option, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _KEEP)))
