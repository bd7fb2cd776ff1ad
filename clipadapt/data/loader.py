"""``build_loader``: a DataLoader whose clips depend on (seed, epoch, index) only.

The sampler hands each worker ``(index, epoch, seed)`` keys, and the dataset derives every random
choice of a sample from that key. The same seed therefore gives the same clips with 0, 1 or 8
workers, and persistent workers still see the current epoch.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = ["build_loader", "VideoLoader", "EpochSampler"]


class EpochSampler(Sampler):
    """Yields ``(index, epoch, seed)`` keys in the order of a (possibly sharded) shuffle.

    Shuffling uses ``seed + epoch`` as ``DistributedSampler`` does; with ``num_replicas=1`` it
    is the plain single-process order.

    Example:
        >>> sampler = EpochSampler(range(4), shuffle=False, seed=7)
        >>> list(sampler)[:2]
        [(0, 0, 7), (1, 0, 7)]
    """

    def __init__(self, dataset, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0, drop_last: bool = False):
        self.order = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return ((index, self.epoch, self.seed) for index in self.order)

    def __len__(self) -> int:
        return len(self.order)


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding and transforms are per sample; threads only oversubscribe


class VideoLoader:
    """Iterates batches of a :class:`DataLoader` and counts the bad samples replaced this epoch.

    ``loader.bad_samples`` is the sum of the samples' ``"bad"`` fields over the batches seen
    since the current pass began, i.e. the epoch's count once the pass is over, with any number of
    workers. ``loader.set_epoch(e)`` selects the shuffle and the random clips of epoch ``e``.
    """

    def __init__(self, loader: DataLoader, sampler: EpochSampler):
        self.loader, self.sampler = loader, sampler
        self.dataset = loader.dataset
        self.bad_samples = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __iter__(self):
        self.bad_samples = 0
        for batch in self.loader:
            if isinstance(batch, dict) and "bad" in batch:
                self.bad_samples += int(torch.as_tensor(batch["bad"]).sum())
            yield batch

    def __len__(self) -> int:
        return len(self.loader)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    *,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
    collate_fn: Callable | None = None,
) -> VideoLoader:
    """A loader over a :class:`~clipadapt.data.VideoDataset` (or any dataset indexed by
    ``(index, epoch, seed)`` keys) that gives the same clips for a seed with any ``num_workers``.

    ``distributed=True`` shards the data over the ``torch.distributed`` process group. Memory is
    pinned when CUDA is available and workers persist between epochs, unless told otherwise.
    Call ``loader.set_epoch(epoch)`` before each epoch; read ``loader.bad_samples`` after it.

    Example:
        >>> from clipadapt.data import VideoDataset, build_loader, synthetic
        >>> data = synthetic.generate("/tmp/clipadapt-synthetic-doc", num_classes=2, train_per_class=2,
        ...                           test_per_class=1, num_frames=8, size=32)
        >>> dataset = VideoDataset(data.train_list, root=data.root, num_frames=4, stride=2, size=32, train=True)
        >>> loader = build_loader(dataset, batch_size=2, shuffle=True, seed=0)
        >>> loader.set_epoch(0)
        >>> next(iter(loader))["video"].shape
        torch.Size([2, 4, 3, 32, 32])
    """
    num_replicas, rank = 1, 0
    if distributed:
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            raise RuntimeError("build_loader(distributed=True) needs an initialised torch.distributed process group")
        num_replicas, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
    extra = {}
    if num_workers > 0:
        extra = dict(
            persistent_workers=True if persistent_workers is None else persistent_workers,
            prefetch_factor=prefetch_factor or 2,
            worker_init_fn=_worker_init,
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        collate_fn=collate_fn,
        **extra,
    )
    return VideoLoader(loader, sampler)
