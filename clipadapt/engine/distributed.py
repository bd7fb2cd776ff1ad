"""Thin wrappers over ``torch.distributed`` for runs started with ``torchrun``.

Every helper also works without a process group (a plain single-process run): ranks are 0,
world size is 1, reductions return their input.

Example:
    >>> from clipadapt.engine import distributed
    >>> distributed.init_distributed()  # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    False
    >>> distributed.rank(), distributed.world_size(), distributed.is_main()
    (0, 1, True)
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "init_distributed", "is_distributed", "rank", "local_rank", "world_size", "is_main", "device",
    "barrier", "all_reduce_mean", "all_reduce_sum", "all_gather_with_grad", "all_gather_object", "cleanup",
    "CollectiveTimeoutError", "timeout_seconds", "explain_timeout",
]


def is_distributed() -> bool:
    """Whether a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's env vars; False (and nothing done) without them.

    The backend is ``nccl`` when CUDA is available and ``gloo`` otherwise; each process uses the GPU
    ``LOCAL_RANK``. Collectives time out after :func:`timeout_seconds` (``CLIPADAPT_DIST_TIMEOUT``,
    default 300 s); :func:`explain_timeout` then names the ranks that hung.

    Example:
        >>> init_distributed()
        False
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    from datetime import timedelta

    global _MONITOR
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    timeout = timedelta(seconds=timeout_seconds())
    dist.init_process_group(backend=backend, timeout=timeout)
    _MONITOR = dist.new_group(backend="gloo", timeout=timeout)
    return True


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, 0 by default)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this is rank 0, the only process that writes files and prints."""
    return rank() == 0


def device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.

    Example:
        >>> device().type in ("cpu", "cuda")
        True
    """
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def barrier() -> None:
    """Wait for every process (no-op alone)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over processes (a new tensor; the input is left alone).

    Example:
        >>> all_reduce_sum(torch.tensor(2.0))
        tensor(2.)
    """
    tensor = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over processes (a new tensor).

    Example:
        >>> all_reduce_mean(torch.tensor([1.0, 3.0]))
        tensor([1., 3.])
    """
    return all_reduce_sum(tensor) / world_size()


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (B, ...) of every process along dim 0 -> (world·B, ...), keeping the
    gradient path to each process's own part (``torch.distributed.nn.functional.all_gather``).

    Example:
        >>> all_gather_with_grad(torch.ones(2, 3)).shape
        torch.Size([2, 3])
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` alone)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def cleanup() -> None:
    """Leave the process group (no-op alone)."""
    global _MONITOR
    if is_distributed():
        _MONITOR = None
        dist.destroy_process_group()


class CollectiveTimeoutError(RuntimeError):
    """A collective operation waited longer than the process-group timeout; names the ranks that hung."""


def timeout_seconds() -> float:
    """The process-group timeout: ``CLIPADAPT_DIST_TIMEOUT`` seconds, 300 by default (PyTorch's is 30 minutes).

    Example:
        >>> timeout_seconds() > 0
        True
    """
    text = os.environ.get("CLIPADAPT_DIST_TIMEOUT", "300")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"CLIPADAPT_DIST_TIMEOUT={text!r}: expected a positive number of seconds")
    return value


_MONITOR = None  # a gloo group for finding the ranks that hang


def _is_timeout(error: BaseException) -> bool:
    text = str(error).lower()
    return "timed out" in text or "timeout" in text or type(error).__name__ in ("DistBackendError", "DistStoreError")


def explain_timeout(error: BaseException) -> BaseException:
    """For a collective that timed out, a :class:`CollectiveTimeoutError` naming the ranks that do
    not respond (found with a short ``monitored_barrier``); any other error unchanged.

    Example:
        >>> explain_timeout(ValueError("x"))
        ValueError('x')
    """
    if not is_distributed() or not _is_timeout(error):
        return error
    from datetime import timedelta

    limit = timeout_seconds()
    hung = "unknown"
    if _MONITOR is not None:
        try:
            dist.monitored_barrier(group=_MONITOR, timeout=timedelta(seconds=min(limit, 10.0)), wait_all_ranks=True)
            hung = "none now (the wait ended)"
        except RuntimeError as barrier_error:
            import re

            found = re.search(r"[Rr]anks? ([\d, ]+) failed", str(barrier_error))
            hung = found.group(1).strip() if found else "unknown"
    return CollectiveTimeoutError(
        f"rank {rank()}: a collective waited more than {limit:g} s (CLIPADAPT_DIST_TIMEOUT); rank(s) that did not "
        f"respond: {hung}; check that rank's log (a stuck data loader, a dead GPU) or raise the timeout"
    )
