"""The one training loop of the course (chapters 06 Monodepth, 07 SfMLearner, 09 TrianFlow, 11).

A *method* supplies the model and the loss; the :class:`Trainer` does the rest, the same way
for every chapter:

- data: a fresh ``DataLoader`` per epoch whose order depends only on ``(seed, epoch)`` (a
  seeded :class:`~torch.utils.data.DistributedSampler`, also in a single process), so a run
  resumed in the middle of an epoch skips the batches already done and sees the same batches
  as an uninterrupted run;
- optimisation: Adam (AdamW with ``weight_decay > 0``), step decay of the learning rate at
  fractions of the run, optional gradient clipping; on CUDA mixed precision (bf16, or fp16 with
  a ``GradScaler``) and channels-last memory (the *fast path*); on the CPU float32 (the fast
  path runs there too with ``fast_path_on_cpu``, in bf16, to test it without a GPU). Geometry
  stays in float32 under mixed precision (:mod:`lesson_lib.camera`, :mod:`lesson_lib.warping`),
  and value checks that would make the GPU wait for the host are skipped in the training step
  (:func:`lesson_lib._validate.value_checks`);
- bookkeeping in ``out_dir``: ``log.csv`` (step, epoch, lr, loss, the method's log values,
  time), ``val.csv`` (the method's validation metrics averaged over the validation set),
  TensorBoard events when ``torch.utils.tensorboard`` imports, and checkpoints written
  atomically (``latest.pt``, optionally ``step_N.pt``) that hold everything needed to resume
  bit for bit (model, optimizer, scheduler, scaler, step, configuration, random states);
- several processes under ``torchrun``: DistributedDataParallel, one shard of every epoch per
  process, only rank 0 logs, shows progress and saves.

Configuration is typed: :class:`~lesson_lib.training.config.TrainConfig` (and a method's own
dataclass) become command-line options with
:func:`~lesson_lib.training.config.config_to_argparse` / ``config_from_args``. The method
contract is in :mod:`lesson_lib.training.method`.

A minimal method::

    class Regression(Method):
        name = "regression"

        def build_model(self):
            return nn.Linear(4, 1)

        def loss(self, model, batch, ctx):
            err = (model(batch["x"]) - batch["y"]).square().mean()
            return err, {"mse": err.detach()}

    Trainer(Regression(), TrainConfig(epochs=5, out_dir="runs/reg"), dataset).fit()

``loss`` must call the model through ``model(...)`` (its ``forward``): under torchrun ``model``
is the DistributedDataParallel wrapper, whose forward arms the gradient averaging. A method with
several networks (depth and pose) puts them in one module whose forward returns what the loss
needs. ``validate`` receives the unwrapped model in eval mode, without gradients.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._validate import value_checks
from ..keyed_random import KEY_LIMIT
from .checkpoints import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from .config import TRAJECTORY_FIELDS, TrainConfig
from .data import EpochSampler, ShardSampler, batch_len, move_to
from .distributed import distributed_env, resolve_device
from .logs import RESERVED_LOG_KEYS, CsvLog, tensorboard_writer
from .method import Method, StepContext, has_validate, method_config_dict, step_generator
from .randomness import rng_state, seed_everything, seed_worker, set_rng_state

__all__ = ["Trainer", "train_worker"]



def _param_groups(model: nn.Module, method: Any, lr: float) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: every trainable parameter at ``lr``, except those of the
    modules a method names in ``lr_scales(model)`` (``[(module, factor), ...]``), at ``lr · factor``.
    The default group comes first (its learning rate is the one logged)."""
    scaled = list(method.lr_scales(model)) if hasattr(method, "lr_scales") else []
    own: dict[int, float] = {}
    for module, factor in scaled:
        if not any(module is m for m in model.modules()):
            raise ValueError(f"{type(method).__name__}.lr_scales() named a module that is not part of the model")
        if not factor > 0:
            raise ValueError(f"{type(method).__name__}.lr_scales(): a factor must be > 0, got {factor}")
        for p in module.parameters():
            own[id(p)] = float(factor)
    groups: dict[float, list[nn.Parameter]] = {1.0: []}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(own.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr": lr * f} for f, ps in groups.items() if ps or f == 1.0]

GRAPH_WARMUP = 3
"""Eager steps before a step is captured as a CUDA graph (``TrainConfig.cuda_graph``)."""


def _lr_value(lr: Any) -> float:
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(step_generator(seed, step, rank).initial_seed())


def _clone_tree(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, Mapping):
        return {k: _clone_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_clone_tree(v) for v in x)
    return x


def _copy_into(static: Any, x: Any) -> None:
    """Copy a batch into the captured step's tensors (same structure, shapes and dtypes)."""
    if isinstance(static, torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.shape != static.shape:
            raise ValueError(f"a CUDA-graph step needs batches of one shape: captured {tuple(static.shape)}, "
                             f"got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__} "
                             "(drop_last keeps every batch full)")
        static.copy_(x, non_blocking=True)
    elif isinstance(static, Mapping):
        for k in static:
            _copy_into(static[k], x[k])
    elif isinstance(static, (list, tuple)):
        for a, b in zip(static, x):
            _copy_into(a, b)


class Trainer:
    """Train ``method``'s model on ``train_dataset`` as ``config`` says; see the module doc.

    Construction seeds everything, builds the model, optimizer (Adam/AdamW), learning-rate
    schedule (``MultiStepLR`` at ``milestones`` x total steps) and ``GradScaler``, and, under
    torchrun (``WORLD_SIZE > 1``), joins the process group (NCCL on CUDA, Gloo on the CPU) and
    wraps the model in DistributedDataParallel. :meth:`fit` then trains (resuming from
    ``out_dir/latest.pt`` with ``config.resume``) and ends the process group it joined.

    Attributes:
        model: the trained module itself (unwrapped), on ``device``.
        train_model: what ``method.loss`` receives: ``model`` or its DDP wrapper.
        step: optimizer steps done; ``total_steps``, ``steps_per_epoch``: the run's length.
        rank, world_size, is_main: the process's place (``is_main``: rank 0, which writes).
    """

    def __init__(
        self, method: Method, config: TrainConfig, train_dataset: Dataset, val_dataset: Dataset | None = None
    ) -> None:
        for attr in ("name", "build_model", "loss"):
            if not hasattr(method, attr):
                raise TypeError(f"method {method!r} lacks {attr!r} (see lesson_lib.training.Method)")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.method, self.config = method, config
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.out_dir = Path(config.out_dir)

        self.rank, self.local_rank, self.world_size = distributed_env()
        self.distributed = self.world_size > 1
        self.is_main = self.rank == 0
        self.device = resolve_device(config.device, self.local_rank, self.distributed)
        self._owns_group = False
        if self.distributed and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self._owns_group = True
        if self.distributed:
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            self.is_main = self.rank == 0

        cuda = self.device.type == "cuda"
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif cuda:
            torch.backends.cudnn.benchmark = True
        self.amp_dtype: torch.dtype | None = None
        fast = cuda or config.fast_path_on_cpu  # the CPU takes the fast path only when asked
        if fast and config.amp:
            if cuda:
                bf16 = config.amp_dtype == "bf16" or (config.amp_dtype == "auto" and torch.cuda.is_bf16_supported())
            else:
                if config.amp_dtype == "fp16":
                    raise ValueError("TrainConfig.amp_dtype 'fp16' is not supported on the CPU; use 'bf16' or 'auto'")
                bf16 = True
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.channels_last = fast and config.channels_last

        n = len(train_dataset)
        self.steps_per_epoch = math.ceil(n / self.world_size) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train_dataset has {n} samples: too few for one batch of {config.batch_size} "
                f"per process ({self.world_size} processes)"
            )
        self.total_steps = config.steps or config.epochs * self.steps_per_epoch
        if val_dataset is not None and not has_validate(method):
            warnings.warn(f"method {method.name!r} has no validate(): val_dataset is ignored", stacklevel=2)

        seed_everything(config.seed)  # the same initial weights in every process
        model = method.build_model()
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{type(method).__name__}.build_model() must return an nn.Module, got {type(model).__name__}"
            )
        memory = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory)
        self.frozen = list(method.frozen_modules(self.model)) if hasattr(method, "frozen_modules") else []
        for module in self.frozen:
            if not any(module is m for m in self.model.modules()):
                raise ValueError(f"{type(method).__name__}.frozen_modules() returned a module that is not part of the model")
            module.requires_grad_(False)
        seed_everything(config.seed + self.rank)  # dropout and augmentation differ between processes
        if self.distributed:
            ids = [self.device.index] if cuda else None
            unused = bool(getattr(method, "find_unused_parameters", False))
            self.train_model: nn.Module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=unused
            )
        else:
            self.train_model = self.model

        if config.cuda_graph and not cuda:
            raise ValueError(f"TrainConfig.cuda_graph needs CUDA; this run is on {self.device}")
        if config.cuda_graph and (self.distributed or self.amp_dtype == torch.float16):
            raise ValueError("TrainConfig.cuda_graph: not with several processes or fp16's GradScaler (use bf16)")
        blocker = method.graph_blocker
        if config.cuda_graph and blocker:
            raise ValueError(f"TrainConfig.cuda_graph: {method.name}'s step cannot be captured: {blocker}")
        if config.compile and blocker:
            warnings.warn(f"--compile: {method.name}'s step compiles in pieces (graph breaks): {blocker}", stacklevel=2)
        params = _param_groups(self.model, method, config.lr)
        # On CUDA the fused kernel updates every parameter in one launch; a captured step needs the
        # "capturable" form, whose learning rate is a tensor on the device (the schedule fills it in)
        adam: dict[str, Any] = {"fused": True} if cuda and config.fused_adam else {}
        if config.cuda_graph:
            adam["capturable"] = True
            for group in params:
                group["lr"] = torch.tensor(group["lr"], device=self.device)
        if config.weight_decay > 0:
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                params, lr=config.lr, weight_decay=config.weight_decay, **adam
            )
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, **adam)
        milestones = sorted({max(1, round(m * self.total_steps)) for m in config.milestones})
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=config.gamma)
        self._milestones = milestones
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self._loss_fn = method.loss
        if config.compile:  # CUDA: CUDA graphs where safe ("reduce-overhead"); the CPU: the default mode
            # with cuda_graph the trainer captures the whole step itself: the compiled loss must not capture too
            self._loss_fn = torch.compile(method.loss, mode="reduce-overhead" if cuda and not config.cuda_graph else None)
        self._graph: Any = None  # the captured step (cuda_graph) and its static tensors
        self._graph_warmup = 0
        self.step = 0
        self._elapsed = 0.0  # seconds of training before this fit() (resumed runs)
        self._t0 = time.perf_counter()
        self._snapshot: tuple[int, dict[str, Any]] | None = None  # (step, random states) at a step's start
        self._updating = False
        self._log: CsvLog | None = None
        self._val_log: CsvLog | None = None
        self._tb: Any = None
        self._bar: Any = None

    # -- public helpers ----------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds spent training, over all resumptions of the run."""
        return self._elapsed + (time.perf_counter() - self._t0)

    def checkpoint_state(self, rng: Any = None) -> dict[str, Any]:
        """Everything :meth:`fit` needs to continue from the current step (see CHECKPOINT_KEYS).

        ``rng``: the random states of every process (a list); by default this process's now.
        """
        return {
            "format_version": CHECKPOINT_VERSION,
            "method": self.method.name,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": asdict(self.config),
            "rng": rng if rng is not None else [rng_state()],
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world_size,
            "elapsed": self.elapsed,
            "torch_version": str(torch.__version__),
            "method_config": method_config_dict(self.method),
        }

    def save(self, rng: dict[str, Any] | None = None) -> None:
        """Write ``out_dir/latest.pt`` (and ``step_N.pt`` with ``keep_checkpoints``).

        Every process must call it (it gathers their random states); only rank 0 writes,
        between two barriers.
        """
        mine = rng if rng is not None else rng_state()
        states = [mine]
        if self.distributed:
            states = [None] * self.world_size
            dist.all_gather_object(states, mine)
        if self.is_main:
            state = self.checkpoint_state(states)
            save_checkpoint(self.out_dir / "latest.pt", state)
            if self.config.keep_checkpoints:
                save_checkpoint(self.out_dir / f"step_{self.step}.pt", state)
        if self.distributed:
            dist.barrier()

    def validate(self) -> dict[str, float]:
        """The method's validation metrics averaged over ``val_dataset`` (every process
        computes a shard; the averages are over all samples). Float32, no gradients."""
        if self.val_dataset is None or not has_validate(self.method):
            return {}
        loader = DataLoader(
            self.val_dataset,
            batch_size=self.config.batch_size,
            sampler=ShardSampler(len(self.val_dataset), self.rank, self.world_size),
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config.seed),
            worker_init_fn=seed_worker,
        )
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    n = batch_len(batch) or 1
                    batch = move_to(batch, self.device, channels_last=self.channels_last)
                    for k, v in self.method.validate(self.model, batch).items():
                        sums[k] = sums.get(k, 0.0) + float(v) * n
                        counts[k] = counts.get(k, 0) + n
        finally:
            self.set_mode(was_training)
        if self.distributed:
            parts: list[Any] = [None] * self.world_size
            dist.all_gather_object(parts, (sums, counts))
            sums, counts = {}, {}
            for s, c in parts:
                for k in s:
                    sums[k] = sums.get(k, 0.0) + s[k]
                    counts[k] = counts.get(k, 0) + c[k]
        return {k: sums[k] / counts[k] for k in sums}

    # -- fit -----------------------------------------------------------------------------------

    def fit(self) -> nn.Module:
        """Train to ``total_steps`` (or ``stop_at_step``); returns the (unwrapped) model.

        With ``config.resume`` it continues from ``out_dir/latest.pt`` if that exists: weights,
        optimizer, schedule, scaler, random states and the position in the data, so the rest of
        the run is the one an uninterrupted run would have had; the rows of ``log.csv`` and
        ``val.csv`` written after that checkpoint are dropped. Without ``resume`` (or
        ``overwrite``) an ``out_dir`` that already holds a checkpoint is refused. On Ctrl-C
        (KeyboardInterrupt, single process) the state of the last completed step is saved.
        """
        try:
            self._start()
            self._loop()
        except KeyboardInterrupt:
            self._save_on_interrupt()
            raise
        finally:
            self._close()
        return self.model

    def _start(self) -> None:
        cfg, latest = self.config, self.out_dir / "latest.pt"
        if latest.is_file() and not (cfg.resume or cfg.overwrite):
            raise FileExistsError(
                f"{self.out_dir} already holds a run ({latest}): set resume=True (--resume) to continue it, "
                "overwrite=True (--overwrite) to start afresh, or choose another out_dir"
            )
        if self.distributed:
            dist.barrier()  # every process has looked before rank 0 writes anything
        resumed = cfg.resume and latest.is_file()
        if resumed:
            self._restore(latest)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            log_path, val_path = self.out_dir / "log.csv", self.out_dir / "val.csv"
            if not resumed:  # a fresh run (or overwrite): nothing of an earlier run may remain
                for p in [self.out_dir / "latest.pt", log_path, val_path, *self.out_dir.glob("step_*.pt")]:
                    p.unlink(missing_ok=True)
            self._log = CsvLog(log_path, ("step", "epoch", "lr", "loss"))
            self._val_log = CsvLog(val_path, ("step", "epoch"))
            if resumed:
                self._log.truncate_after(self.step)
                self._val_log.truncate_after(self.step)
            if cfg.tensorboard:
                self._tb = tensorboard_writer(self.out_dir)
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total_steps,
                initial=self.step,
                desc=str(self.method.name),
                unit="step",
                dynamic_ncols=True,
                disable=None if cfg.progress else True,  # None: off when stderr is not a terminal
            )
        if self.distributed:
            dist.barrier()
        self._t0 = time.perf_counter()

    def _restore(self, latest: Path) -> None:
        state = load_checkpoint(latest, self.model, method=self.method.name, map_location="cpu")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self._elapsed = float(state.get("elapsed", 0.0))
        rng = state["rng"]
        if isinstance(rng, list) and len(rng) == self.world_size:
            set_rng_state(rng[self.rank])
        else:
            warnings.warn(
                f"{latest}: saved by {len(rng)} processes, resumed by {self.world_size}: "
                "the random states are not restored",
                stacklevel=3,
            )
        changed = [k for k in TRAJECTORY_FIELDS if state["config"].get(k) != getattr(self.config, k)]
        if state.get("steps_per_epoch", self.steps_per_epoch) != self.steps_per_epoch:
            changed.append("steps_per_epoch")
        if changed and self.is_main:
            warnings.warn(
                f"resuming {latest} with changed settings {changed}: the run will differ from an uninterrupted one",
                stacklevel=3,
            )
        if self.is_main:
            self._say(f"resumed {latest} at step {self.step} of {self.total_steps}")

    def _loop(self) -> None:
        cfg = self.config
        stop = min(self.total_steps, cfg.stop_at_step) if cfg.stop_at_step else self.total_steps
        self.set_mode(True)
        while self.step < stop:
            epoch, first = divmod(self.step, self.steps_per_epoch)
            batches, begun = iter(self.train_loader(epoch, first)), self.step
            while self.step < stop:
                if not self.distributed:  # the dataset may draw random numbers: snapshot first
                    self._snapshot = (self.step, rng_state())
                batch = next(batches, None)
                if batch is None:
                    if self.step == begun:
                        raise RuntimeError(f"epoch {epoch} gave no batch: did the training set shrink?")
                    break
                loss, logs, lr = self.train_step(batch)
                self._after_step(epoch, loss, logs, lr, stop)

    def train_loader(self, epoch: int, first_batch: int = 0) -> DataLoader:
        """The training batches of ``epoch`` from batch ``first_batch`` on, as :meth:`fit` takes
        them: an order that depends only on ``(seed, epoch)``, ``num_workers`` worker processes,
        pinned memory with CUDA."""
        cfg = self.config
        sampler = EpochSampler(
            self.train_dataset, self.world_size, self.rank, seed=cfg.seed, start=first_batch * cfg.batch_size
        )
        sampler.set_epoch(epoch)
        set_epoch = getattr(self.train_dataset, "set_epoch", None)
        if callable(set_epoch):  # augmentation that depends on the epoch (StereoDataset, VideoDataset)
            set_epoch(epoch)
        return DataLoader(
            self.train_dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
            # seeds the workers' generators per (seed, epoch) and leaves the global generator alone
            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
        )

    def set_mode(self, training: bool) -> None:
        """Train (or eval) mode for the model, with the frozen sub-networks always in eval mode."""
        self.train_model.train(training)
        for module in self.frozen:
            module.eval()

    def step_context(self) -> StepContext:
        """The :class:`StepContext` the loss of the next step receives."""
        gen = step_generator(self.config.seed, self.step, self.rank, self.device)
        return StepContext(step=self.step, generator=gen, device=self.device, autocast_dtype=self.amp_dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed precision the loss runs under (a no-op in float32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any], float]:
        """One optimizer step on ``batch`` (a collated batch, on any device): the loss under
        :meth:`autocast` with value checks off, backward, clipping, Adam, the schedule.
        Returns ``(loss, logs, lr)``: the detached loss and the method's log values (tensors on
        the device: reading them waits for the GPU) and the learning rate the step used.
        With ``cuda_graph`` the step is captured once (after warm-up steps) and replayed."""
        if self.config.cuda_graph:
            return self._graph_step(batch)
        batch = move_to(batch, self.device, channels_last=self.channels_last)
        lr = _lr_value(self.optimizer.param_groups[0]["lr"])
        loss, logs = self._forward_backward(batch, self.step_context())
        self._updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self._updating = False
        return loss.detach(), logs, lr

    def _forward_backward(self, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, Mapping[str, Any]]:
        self.optimizer.zero_grad(set_to_none=not self.config.cuda_graph)  # a graph keeps its gradient tensors
        with self.autocast(), value_checks(False):  # no host syncs in the hot path
            out = self._loss_fn(self.train_model, batch, ctx)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
            raise TypeError(
                f"{type(self.method).__name__}.loss must return (loss, logs dict), got {type(out).__name__}"
            )
        loss, logs = out
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad):
            raise ValueError(
                f"{type(self.method).__name__}.loss must return a one-element tensor that requires grad as the loss"
            )
        self.scaler.scale(loss.reshape(())).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        return loss, logs

    def _graph_step(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any], float]:
        """``train_step`` with CUDA-graph replay: the first :data:`GRAPH_WARMUP` steps run eagerly
        on a side stream (as capture requires), the next one is captured: its forward, loss,
        backward and capturable Adam, reading the batch from static tensors and drawing from a
        generator registered with the graph and from the context's key, both reseeded from
        ``(seed, step, rank)`` before every replay. Later steps copy their batch in and replay."""
        batch = move_to(batch, self.device, channels_last=self.channels_last)
        # the learning rate from the schedule's milestones (reading the device's tensor would wait for the GPU)
        lr = self.config.lr * self.config.gamma ** bisect.bisect_right(self._milestones, self.step)
        if self._graph is None and self._graph_warmup < GRAPH_WARMUP:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                loss, logs = self._forward_backward(batch, self.step_context())
                self.optimizer.step()
            torch.cuda.current_stream().wait_stream(stream)
            self._graph_warmup += 1
        else:
            if self._graph is None:
                self._capture(batch)
            self._updating = True
            g = self._graph
            _copy_into(g["batch"], batch)
            seed = _step_seed(self.config.seed, self.step, self.rank)
            g["generator"].manual_seed(seed)
            g["key"].fill_(seed % KEY_LIMIT)  # the step's key, as StepContext derives it
            g["graph"].replay()
            loss, logs = g["loss"], g["logs"]
        self._updating = True
        self.scheduler.step()  # fills the learning-rate tensors the graph reads
        self.step += 1
        self._updating = False
        return loss.detach().clone(), {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}, lr

    def _capture(self, batch: Any) -> None:
        static = _clone_tree(batch)
        generator = torch.Generator(device=self.device)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(generator)
        ctx = StepContext(step=self.step, generator=generator, device=self.device, autocast_dtype=self.amp_dtype)
        torch.cuda.synchronize()  # ctx.key (filled before every replay) is the graph's static key
        with torch.cuda.graph(graph):
            loss, logs = self._forward_backward(static, ctx)
            self.optimizer.step()
        self._graph = {"graph": graph, "batch": static, "generator": generator, "key": ctx.key, "loss": loss,
                       "logs": dict(logs)}

    def _after_step(self, epoch: int, loss: torch.Tensor, logs: Mapping[str, Any], lr: float, stop: int) -> None:
        cfg, step = self.config, self.step
        if self._bar is not None:
            self._bar.update(1)
        if step % cfg.log_every == 0 or step == self.total_steps:
            self._write_log(epoch, loss, logs, lr)
        if self.val_dataset is not None and has_validate(self.method):
            if (cfg.validate_every and step % cfg.validate_every == 0) or step == self.total_steps:
                metrics = self.validate()
                if self.is_main and metrics:
                    self._val_log.write({"step": step, "epoch": epoch, **metrics, "time": round(self.elapsed, 3)})
                    if self._tb is not None:
                        for k, v in metrics.items():
                            self._tb.add_scalar(f"val/{k}", v, step)
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == stop:
            self.save()

    def _write_log(self, epoch: int, loss: torch.Tensor, logs: Mapping[str, Any], lr: float) -> None:
        bad = [k for k in logs if k in RESERVED_LOG_KEYS]
        if bad:
            raise ValueError(f"{type(self.method).__name__}.loss logs use reserved names {bad}")
        keys = sorted(logs)
        if self.distributed:  # average the loss and the log values over the processes
            parts = [torch.as_tensor(logs[k], dtype=torch.float32, device=self.device).reshape(()) for k in keys]
            t = torch.stack([loss.float().reshape(()), *parts])
            dist.all_reduce(t)
            values = (t / self.world_size).tolist()
            loss_value, logged = values[0], dict(zip(keys, values[1:]))
        else:
            loss_value, logged = float(loss), {k: float(logs[k]) for k in keys}
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"{self.method.name}: the loss is {loss_value} at step {self.step}; logs {logged}")
        if not self.is_main:
            return
        row = {"step": self.step, "epoch": epoch, "lr": lr, "loss": loss_value}
        self._log.write({**row, **{k: logged[k] for k in logs}, "time": round(self.elapsed, 3)})
        if self._tb is not None:
            self._tb.add_scalar("train/loss", loss_value, self.step)
            self._tb.add_scalar("train/lr", lr, self.step)
            for k, v in logged.items():
                self._tb.add_scalar(f"train/{k}", v, self.step)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr:.3g}", refresh=False)

    def _save_on_interrupt(self) -> None:
        """Ctrl-C: keep the last consistent state (single process only)."""
        if self.distributed or not self.is_main or self._log is None:
            return
        if self._updating:
            self._say("interrupted while updating the weights: nothing saved; resume from the last checkpoint")
            return
        if self._snapshot is not None and self._snapshot[0] == self.step:
            rng = self._snapshot[1]  # interrupted within the step: the state of its start
        else:
            rng = rng_state()  # interrupted after the update (logging, validation, saving)
        self.save(rng)
        self._say(f"interrupted: saved step {self.step} to {self.out_dir / 'latest.pt'} (resume=True continues)")

    def _say(self, message: str) -> None:
        if self.is_main:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stderr)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


def train_worker(
    method: Method, config: TrainConfig, train_dataset: Dataset, val_dataset: Dataset | None = None
) -> Trainer:
    """Train in this process, alone or as one process of a ``torchrun`` launch; returns the trainer.

    A training script calls it the same way in both cases::

        torchrun --nproc_per_node=2 train.py --batch-size 8 ...   # or: python train.py ...

    Under torchrun (``WORLD_SIZE > 1``) it joins the process group, trains with
    DistributedDataParallel (``batch_size`` per process) and leaves the group at the end.
    """
    trainer = Trainer(method, config, train_dataset, val_dataset)
    trainer.fit()
    return trainer
