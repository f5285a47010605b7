"""Pieces every training loop shares: a resumable batch stream, checkpoints, guards."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the step."""


def check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"loss is {loss} at step {step}; lower the learning rate or the initial logit "
            "scale, enable gradient clipping, or check the input volumes for extreme values"
        )


class BatchStream:
    """Endless shuffled batches of dataset indices, epoch by epoch, with a saveable state.

    Resuming from ``state_dict()`` continues with exactly the batches that would have come."""

    def __init__(self, n_items: int, batch_size: int, seed: int) -> None:
        if n_items < batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the {n_items} training items")
        self.n_items, self.batch_size = n_items, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(n_items)
        self.position = 0

    def next_batch(self) -> list[int]:
        if self.position + self.batch_size > self.n_items:  # drop the ragged tail, reshuffle
            self.order, self.position = self.rng.permutation(self.n_items), 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch.tolist()

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "order": torch.from_numpy(self.order.copy()),
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = state["order"].numpy(), int(state["position"])


def collate(items: list[dict]) -> dict:
    """Stack tensors; keep everything else (sentences, keys, ids) as lists."""
    return {
        key: torch.stack([item[key] for item in items])
        if isinstance(items[0][key], torch.Tensor)
        else [item[key] for item in items]
        for key in items[0]
    }


def load_batch(dataset: Dataset, indices: list[int]) -> dict:
    return collate([dataset[i] for i in indices])


def rng_state() -> dict:
    """Every global RNG's state, as tensors and plain values so ``weights_only`` loads it."""
    kind, key, position, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """``last.pt`` (everything needed to resume) and ``best.pt`` (weights of the best
    validation), in ``directory``; loaded with ``weights_only=True``."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, state: dict) -> None:
        if self.directory is None:
            return
        path = self.directory / f"{name}.pt"
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(path)  # a crash mid-write never leaves a half checkpoint

    def load(self, name: str) -> dict | None:
        if self.directory is None or not (self.directory / f"{name}.pt").exists():
            return None
        path = self.directory / f"{name}.pt"
        logger.info("resuming from %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)


def freeze_stages(stages: list[nn.Module], n_frozen: int | str, what: str) -> int:
    """Freeze the first ``n_frozen`` stages (seed 002's partial freezing; ``"all"``: every
    one). Returns how many were frozen."""
    if n_frozen == "all":
        n_frozen = len(stages)
    if not isinstance(n_frozen, int) or not 0 <= n_frozen <= len(stages):
        raise ValueError(f"cannot freeze {n_frozen} {what} stages: it has {len(stages)}")
    for stage in stages[:n_frozen]:
        for parameter in stage.parameters():
            parameter.requires_grad_(False)
    return n_frozen


def training_snapshot(
    step: int,
    history: list[dict],
    model: nn.Module,
    optimizer,
    scheduler,
    stream: BatchStream,
    dataset,
    **extra,
) -> dict:
    """Everything a crashed run needs to continue exactly where it stopped."""
    return {
        "step": step,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "stream": stream.state_dict(),
        "rng": rng_state(),
        "dataset_rng": dataset.rng.bit_generator.state,
        **extra,
    }


def restore_snapshot(
    snapshot: dict,
    model: nn.Module,
    optimizer,
    scheduler,
    stream: BatchStream,
    dataset,
    config: dict,
) -> tuple[list[dict], int]:
    """Load a ``training_snapshot`` saved under the same ``config`` (``resume`` aside);
    returns (history so far, step reached)."""
    saved = {k: v for k, v in snapshot["config"].items() if k != "resume"}
    current = {k: v for k, v in config.items() if k != "resume"}
    if saved != current:
        changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
        raise ValueError(
            f"the checkpoint to resume was saved with other settings ({changed}); resume with "
            "the same parameters, or use another checkpoint_dir / resume: false"
        )
    model.load_state_dict(snapshot["model"])
    optimizer.load_state_dict(snapshot["optimizer"])
    scheduler.load_state_dict(snapshot["scheduler"])
    stream.load_state_dict(snapshot["stream"])
    restore_rng_state(snapshot["rng"])
    dataset.rng.bit_generator.state = snapshot["dataset_rng"]
    return list(snapshot["history"]), int(snapshot["step"])
