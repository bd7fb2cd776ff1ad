"""Training engine: optimiser, schedule, checkpoints, distributed helpers, metrics, the trainer.

Example:
    >>> from clipadapt.engine import Trainer, evaluate, build_optimizer, build_scheduler
"""

from .checkpoint import (
    CheckpointMismatchError,
    find_resume,
    get_rng_state,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .distributed import all_gather_with_grad, all_reduce_mean, barrier, cleanup, init_distributed, is_main, rank, world_size
from .evaluate import evaluate
from .host_memory import retain_freed_memory
from .metrics import MetricLogger, topk_correct
from .optim import build_optimizer
from .schedule import WarmupCosine, build_scheduler
from .train import NonFiniteLossError, Trainer, per_rank_batch_size

__all__ = [
    "CheckpointMismatchError", "find_resume", "get_rng_state", "load_checkpoint", "restore_training_state",
    "save_checkpoint", "seed_everything", "set_rng_state",
    "all_gather_with_grad", "all_reduce_mean", "barrier", "cleanup", "init_distributed", "is_main", "rank", "world_size",
    "evaluate", "retain_freed_memory", "MetricLogger", "topk_correct", "build_optimizer", "WarmupCosine", "build_scheduler",
    "NonFiniteLossError", "Trainer", "per_rank_batch_size",
]
