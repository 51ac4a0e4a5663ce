"""Training: the one loop every method of the course trains with, and what it needs.

- :mod:`~lesson_lib.training.method`      -- the method contract (:class:`Method`, :class:`StepContext`)
- :mod:`~lesson_lib.training.config`      -- :class:`TrainConfig`, :func:`option`, configs <-> command line
- :mod:`~lesson_lib.training.loop`        -- :class:`Trainer` and :func:`train_worker`
- :mod:`~lesson_lib.training.checkpoints` -- checkpoints and weights files, atomic writes, clear errors
- :mod:`~lesson_lib.training.randomness`  -- seeding, saving and restoring random states
- :mod:`~lesson_lib.training.data`        -- the epoch sampler (exact resumption), moving batches
- :mod:`~lesson_lib.training.datasets`    -- the synthetic world's datasets a method declares (:class:`SyntheticData`)
- :mod:`~lesson_lib.training.logs`        -- ``log.csv`` / ``val.csv``, TensorBoard
- :mod:`~lesson_lib.training.distributed` -- the device and ``torchrun`` set-up

The names most code needs are re-exported here: ``from lesson_lib.training import Trainer,
TrainConfig, Method``.
"""

from .checkpoints import (
    CHECKPOINT_KEYS,
    CHECKPOINT_VERSION,
    WEIGHTS_FORMAT,
    CheckpointError,
    CheckpointNotFoundError,
    export_weights,
    load_checkpoint,
    load_weights_into,
    save_checkpoint,
)
from .config import NetworkOptions, TrainConfig, check_choices, config_from_args, config_to_argparse, config_to_argv, option
from .data import EpochSampler, move_to
from .distributed import distributed_env, pick_device
from .logs import read_log
from .loop import Trainer, train_worker
from .method import Method, StepContext, step_generator
from .randomness import seed_everything

__all__ = [
    "CHECKPOINT_KEYS",
    "CHECKPOINT_VERSION",
    "WEIGHTS_FORMAT",
    "CheckpointError",
    "CheckpointNotFoundError",
    "EpochSampler",
    "Method",
    "NetworkOptions",
    "StepContext",
    "TrainConfig",
    "Trainer",
    "check_choices",
    "config_from_args",
    "config_to_argparse",
    "config_to_argv",
    "distributed_env",
    "export_weights",
    "load_checkpoint",
    "load_weights_into",
    "move_to",
    "option",
    "pick_device",
    "read_log",
    "save_checkpoint",
    "seed_everything",
    "step_generator",
    "train_worker",
]
