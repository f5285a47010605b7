"""Checkpoints of a training run: ``last.pt`` to resume from (only with the settings it was
saved with), ``best.pt`` of the best validation, written atomically and loaded with
``weights_only=True``."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

# How data is read and where processes meet, not what is learnt: a run may resume with other
# values. (The number of processes is a setting: "world_size".)
RESUMABLE_CHANGES = ("resume", "num_workers", "distributed")


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

    def check_resumable(self, snapshot: dict, current: dict) -> None:
        """Resume only a checkpoint of this engine saved with the same settings."""
        saved = snapshot.get("settings")
        if saved is None:  # the loops before this engine saved "config"
            raise ValueError(
                f"{self.directory}/last.pt is no checkpoint of this training engine (it "
                "has no 'settings'); it cannot be resumed: set resume: false or use another "
                "checkpoint_dir"
            )
        saved, current = (
            {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}
            for settings in (saved, current)
        )
        if saved != current:
            keys = saved.keys() | current.keys()
            changed = sorted(k for k in keys if saved.get(k) != current.get(k))
            raise ValueError(
                f"the checkpoint to resume was saved with other settings ({changed}); resume "
                "with the same parameters, or use another checkpoint_dir / resume: false"
            )


class BestModel:
    """The model with the lowest validation ``metric`` so far, in memory and in ``best.pt``."""

    def __init__(self, metric: str | None, checkpoints: Checkpointer) -> None:
        self.metric, self.checkpoints = metric, checkpoints
        self.value, self.step, self.state = float("inf"), 0, None

    def resume(self) -> None:
        saved = self.checkpoints.load("best") if self.metric else None
        if saved is not None:
            self.value, self.step, self.state = saved[self.metric], saved["step"], saved["model"]

    def update(self, row: dict, model: nn.Module) -> None:
        if self.metric is None or not row[self.metric] < self.value:
            return
        self.value, self.step = row[self.metric], row["step"]
        self.state = copy.deepcopy(model.state_dict())
        self.checkpoints.save(
            "best", {"model": self.state, "step": self.step, self.metric: self.value}
        )

    def restore(self, model: nn.Module) -> None:
        if self.state is None:
            return
        logger.info("keeping the best model: step %d, %s %.4f", self.step, self.metric, self.value)
        model.load_state_dict(self.state)
