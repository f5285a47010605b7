"""The one training loop. Each objective (CLIP alignment, masked-autoencoder pretraining, ...)
is a :class:`Task`: its model, its step, its validation and any state of its own. :func:`train`
does the rest for all of them: device, AdamW groups, warm-up + cosine, clipping, mixed
precision, ``torch.compile``, the data loader, checkpoints and exact resume, progress, logs
and history, in one process or in several with DDP (``training.distributed``,
:mod:`mriclip.training.distributed`).

A pipeline's ``training`` parameters are one flat mapping in the YAML, the one place their
values live; :func:`configs_from_params` splits it into :class:`TrainingConfig` (the loop's
fields) and the task's own config.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import TypeVar

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mriclip.training import distributed
from mriclip.training.batching import BatchStream, batch_loader
from mriclip.training.checkpointing import BestModel, Checkpointer, TrainedState
from mriclip.training.distributed import DistributedConfig
from mriclip.training.rng import restore_rng_state, rng_state
from mriclip.training.runtime import (
    autocast_dtype,
    compile_in_place,
    pick_device,
    seed_everything,
    uncompile,
)
from mriclip.training.schedule import adamw, param_groups, warmup_cosine

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the step."""


def check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"loss is {loss} at step {step}; lower the learning rate or the initial logit "
            "scale, enable gradient clipping, or check the input volumes for extreme values"
        )


@dataclass(frozen=True)
class TrainingConfig:
    """The loop's settings, shared by every task; ``seed`` comes from ``params:seed``."""

    steps: int
    weight_decay: float
    warmup_steps: int
    grad_clip_norm: float | None
    val_every: int
    checkpoint_dir: str | None
    checkpoint_every: int
    resume: bool
    device: str
    mixed_precision: bool  # bf16 autocast on CUDA
    mixed_precision_cpu: bool  # bf16 autocast on CPUs that compute in bf16 natively
    compile: bool  # torch.compile the task's compiled_parts
    channels_last: bool  # 3D convolutions in channels-last memory (CPU and CUDA)
    num_workers: int  # data-loading processes; 0 loads in the training process
    distributed: DistributedConfig
    seed: int

    def __post_init__(self) -> None:
        for name in ("steps", "val_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        # Checked here, not only by the schedule, so that a short run (steps lowered alone)
        # fails before any data is read, naming the parameter to lower with it.
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(
                f"warmup_steps must be in [0, steps = {self.steps}], got {self.warmup_steps}"
            )


TaskConfig = TypeVar("TaskConfig")


def configs_from_params(
    params: Mapping, task_config: type[TaskConfig], seed: int, where: str
) -> tuple[TrainingConfig, TaskConfig]:
    """Split a pipeline's flat ``training`` parameters (``where`` names them in messages, e.g.
    ``alignment.training``) into the loop's config and the task's; every key belongs to one."""
    shared = {field.name for field in fields(TrainingConfig)} - {"seed"}
    own = {field.name for field in fields(task_config)}
    unknown, missing = set(params) - shared - own, (shared | own) - set(params)
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown key(s) {sorted(unknown)}, missing key(s) {sorted(missing)}; "
            "conf/base lists every key with its default"
        )
    try:
        parallel = DistributedConfig.from_params(params["distributed"])
    except ValueError as error:
        raise ValueError(f"{where}.distributed: {error}") from None
    try:
        return (
            TrainingConfig(
                **{key: params[key] for key in shared - {"distributed"}},
                distributed=parallel,
                seed=seed,
            ),
            task_config(**{key: params[key] for key in own}),
        )
    except ValueError as error:
        raise ValueError(f"{where}.{error}") from None


class Task(abc.ABC):
    """What one objective brings to :func:`train`.

    Attributes a task sets: ``name`` (progress bar and logs), ``model`` (the loop moves it to
    the device and back), ``batch_size`` (items per batch), ``batches_per_step`` (batches one
    optimiser step consumes), ``keep_best`` (a validation value, lower is better, whose best
    model is kept; None keeps the last). The loop sets ``replica``: the model as
    ``train_step`` runs it, ``model`` itself or, under DDP, its ``DistributedDataParallel``
    wrapper (whose backward all-reduces the gradients). Under DDP ``batch_size`` and
    ``batches_per_step`` are each rank's."""

    name: str
    model: nn.Module
    replica: nn.Module
    batch_size: int
    batches_per_step: int = 1
    keep_best: str | None = None

    @abc.abstractmethod
    def settings(self) -> dict:
        """The task's config: a run resumes only from a checkpoint saved with the same."""

    @abc.abstractmethod
    def param_groups(self) -> dict[str, tuple[nn.Module | list, float]]:
        """Named parts of the model with their learning rates (see ``schedule.param_groups``);
        history logs each rate as ``lr_<name>``."""

    @abc.abstractmethod
    def train_step(
        self, batches: list[dict], device: torch.device, cast: torch.dtype | None
    ) -> float:
        """Accumulate the gradient of one optimiser step into ``.grad``; returns the loss.
        ``cast`` is the autocast dtype (None: full precision)."""

    @abc.abstractmethod
    def validate(self, val_set: Dataset, device: torch.device) -> dict:
        """Validation values for the history row (the model is in eval mode)."""

    def compiled_parts(self) -> dict[str, nn.Module]:
        """The named modules ``compile: true`` compiles; by default the whole model."""
        return {"model": self.model}

    # Optional hooks: by default they do nothing.
    def on_rank(self, rank: int) -> None:  # noqa: B027
        """Called with the process's rank (0 in one process), before any resume: e.g. to seed
        a generator of the task's own per rank."""

    def after_step(self) -> dict:
        """Called after each optimiser step; returns values for the history row."""
        return {}

    def state_dict(self) -> dict:
        """State of the task's own that checkpoints save (e.g. a random generator)."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027
        """Restores what ``state_dict`` returned."""


def train(
    task: Task,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainingConfig,
    on_validation: Callable[[dict], None] | None = None,
) -> pd.DataFrame:
    """Train ``task.model`` in place (left on the CPU, the kept model: best or last); returns
    the history, one row a step. ``on_validation`` sees each validated row (an Optuna trial
    reports it, and prunes by raising).

    With ``config.distributed.world_size > 1`` this process launches DDP workers that each
    run the loop on their shard of the batches; rank 0 validates, writes the checkpoints and
    sends back its model and history."""
    parallel = config.distributed
    if parallel.world_size == 1:
        return _train(task, train_set, val_set, config, on_validation)
    backend = parallel.process_backend(pick_device(config.device))
    state, history = distributed.launch(
        parallel,
        backend,
        _train_worker,
        task=task,
        train_set=train_set,
        val_set=val_set,
        config=config,
        on_validation=on_validation,
    )
    task.model.load_state_dict(state)
    return history


def _train_worker(**arguments) -> tuple[dict, pd.DataFrame]:
    """One DDP worker: the loop, then what rank 0 sends back."""
    history = _train(**arguments)
    return arguments["task"].model.state_dict(), history


def _train(
    task: Task,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainingConfig,
    on_validation: Callable[[dict], None] | None,
) -> pd.DataFrame:
    rank, world_size = distributed.rank(), distributed.world_size()
    main = rank == 0
    device = distributed.local_device(pick_device(config.device))
    if world_size > 1:
        # A worker starts with fresh generators: seeded per rank, dropout differs across ranks
        # and repeats from run to run.
        seed_everything(config.seed + rank)
    # Channels-last 3D is oneDNN's and cuDNN's fast layout for small 3D convolutions (a CPU
    # step of the default encoder: 0.7x the time); it converts only 5D weights. MPS's 3D
    # convolutions are not known to gain from it, so they keep the layout.
    channels_last = config.channels_last and device.type in ("cpu", "cuda")
    memory_format = torch.channels_last_3d if channels_last else torch.preserve_format
    model = task.model.to(device, memory_format=memory_format)
    task.on_rank(rank)
    compiled = compile_in_place(task.compiled_parts(), task.name) if config.compile else {}
    task.replica = model
    if world_size > 1:
        # Buffers (e.g. BatchNorm statistics) stay each rank's own, as the accumulated step
        # restores them after its replays; rank 0's are saved.
        task.replica = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False
        )
    optimizer = adamw(param_groups(task.param_groups(), config.weight_decay))
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    checkpoints = Checkpointer(config.checkpoint_dir)
    trained = TrainedState(model)
    settings = {
        **asdict(config),
        **task.settings(),
        "world_size": world_size,
        "locked_state": trained.digest(),
    }
    if task.keep_best and val_set is None:
        logger.warning(
            "%s: no validation set to keep the best model by; keeping the last", task.name
        )
    best = BestModel(task.keep_best, checkpoints, trained)
    history: list[dict] = []
    start = 0
    snapshot = checkpoints.load("last") if config.resume else None
    if snapshot is not None:
        checkpoints.check_resumable(snapshot, settings)
        trained.load(snapshot["model"])
        optimizer.load_state_dict(snapshot["optimizer"])
        scheduler.load_state_dict(snapshot["scheduler"])
        own = snapshot["ranks"][rank]
        task.load_state_dict(own["task"])
        restore_rng_state(own["rng"])
        history, start = list(snapshot["history"]), int(snapshot["step"])
        best.resume()

    stream = BatchStream(
        len(train_set),
        task.batch_size,
        config.seed,
        start=start * task.batches_per_step,
        rank=rank,
        world_size=world_size,
    )
    if stream.draws > 1:
        logger.info(
            "%s: a batch of %d items%s exceeds the %d training scans: each epoch draws every "
            "scan %d times, another random patch each time, so a batch may hold several of one "
            "scan",
            task.name,
            task.batch_size * world_size,
            f" ({world_size} processes)" if world_size > 1 else "",
            len(train_set),
            stream.draws,
        )
    loader = batch_loader(
        train_set,
        stream,
        config.num_workers,
        device.type == "cuda",
        config.seed,
        in_flight=task.batches_per_step,
    )
    cast = autocast_dtype(device, config.mixed_precision, config.mixed_precision_cpu)
    logger.info(
        "%s: steps %d to %d on %s, %d data worker(s), %d process(es)",
        task.name,
        start + 1,
        config.steps,
        device,
        config.num_workers,
        world_size,
    )
    model.train()
    batches = iter(loader)
    progress = tqdm(
        range(start + 1, config.steps + 1),
        initial=start,
        total=config.steps,
        desc=task.name,
        unit="step",
        disable=None if main else True,
    )
    for step in progress:
        tick = time.perf_counter()
        step_batches = [next(batches) for _ in range(task.batches_per_step)]
        waited = time.perf_counter() - tick
        optimizer.zero_grad(set_to_none=True)
        loss = distributed.mean_over_ranks(task.train_step(step_batches, device, cast), device)
        check_finite(loss, step)
        if config.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        row = {"step": step, "loss": loss, **_learning_rates(optimizer)}
        optimizer.step()
        scheduler.step()
        row.update(task.after_step())
        samples = task.batch_size * task.batches_per_step * world_size
        elapsed = time.perf_counter() - tick
        row["samples_per_s"] = samples / elapsed
        row["data_wait_fraction"] = waited / elapsed
        last_step = step == config.steps
        # Only rank 0's model is kept and returned, so only it validates.
        if main and val_set is not None and (step % config.val_every == 0 or last_step):
            model.eval()
            row.update(task.validate(val_set, device))
            model.train()
            logger.info(
                "%s step %d: %s",
                task.name,
                step,
                {k: round(v, 4) for k, v in row.items() if k.startswith("val_")},
            )
            best.update(row)
            if on_validation is not None:
                on_validation(row)
        history.append(row)
        progress.set_postfix(loss=f"{loss:.4f}", sps=f"{row['samples_per_s']:.1f}")
        if step % config.checkpoint_every == 0 or last_step:
            # Every rank's generators, so that each resumes where it was.
            ranks = distributed.gather_objects({"task": task.state_dict(), "rng": rng_state()})
            if main:
                checkpoints.save(
                    "last",
                    {
                        "step": step,
                        "history": history,
                        "model": trained.state(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "ranks": ranks,
                        "settings": settings,
                    },
                )
    del batches  # stops the loader's workers
    _log_data_wait(task.name, history[start:])
    uncompile(compiled)
    best.restore()
    model.cpu()
    return pd.DataFrame(history)


def _log_data_wait(name: str, rows: list[dict]) -> None:
    """How much of its step time this run waited for batches: near 0 when the loader keeps
    up. The first step, which includes starting the workers, is given apart."""
    if not rows:
        return
    first, *later = rows
    steady = (
        f"{100 * sum(r['data_wait_fraction'] for r in later) / len(later):.1f}% of step time "
        f"(mean) over steps {later[0]['step']}-{later[-1]['step']}, "
        if later
        else ""
    )
    logger.info(
        "%s: waited for data %sfirst step %.1f%%",
        name,
        steady,
        100 * first["data_wait_fraction"],
    )


def _learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    # The no-decay group of a part shares its rate.
    return {
        f"lr_{group['name']}": group["lr"]
        for group in optimizer.param_groups
        if not group["name"].endswith("_no_decay")
    }
