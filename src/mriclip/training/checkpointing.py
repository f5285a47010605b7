"""Checkpoints of a training run: ``last.pt`` to resume from (only with the settings it was
saved with), ``best.pt`` of the best validation, written atomically and loaded with
``weights_only=True``. Both hold the model's :class:`TrainedState`: its locked parts are left
out."""

from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

# How data is read and where processes meet, not what is learnt: a run may resume with other
# values. (The number of processes is a setting: "world_size".)
RESUMABLE_CHANGES = ("resume", "num_workers", "distributed")
# Settings added since checkpoints were first saved, at the value every run had before them.
SETTINGS_BEFORE = {"mixed_precision_cpu": False}


class TrainedState:
    """The part of a model's state that training changes: everything but its locked parts (a
    tower frozen in eval mode, such as the text tower under ``freeze_text_stages: all``),
    which stay as the model was built, so the model built for a resumed run holds them already.
    Checkpoints hold only this part: in the default alignment 3.6 MB instead of 94 MB (the
    text tower), written every ``checkpoint_every`` steps and at each better validation.
    :meth:`digest` of the locked parts is one of the run's settings, so a resume with other
    locked weights is refused."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.locked = tuple(
            f"{name}."
            for name, module in model.named_modules()
            if name and getattr(module, "locked", False)
        )

    def state(self) -> dict:
        return {
            key: value
            for key, value in self.model.state_dict().items()
            if not key.startswith(self.locked)
        }

    def load(self, state: dict) -> None:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        unfit = [key for key in missing if not key.startswith(self.locked)] + list(unexpected)
        if unfit:
            raise ValueError(
                f"the checkpoint's model state does not fit this model ({len(unfit)} keys, "
                f"e.g. {unfit[:3]}); resume with the same model settings, or use another "
                "checkpoint_dir / resume: false"
            )

    def digest(self) -> str | None:
        """SHA-256 of the locked parts' tensors; None when nothing is locked."""
        if not self.locked:
            return None
        digest = hashlib.sha256()
        for key, value in self.model.state_dict().items():
            if key.startswith(self.locked):
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        return digest.hexdigest()


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
            {k: v for k, v in {**SETTINGS_BEFORE, **settings}.items() if k not in RESUMABLE_CHANGES}
            for settings in (saved, current)
        )
        # Any other setting that a checkpoint predates reads as None (locked_state: nothing
        # locked).
        keys = saved.keys() | current.keys()
        changed = sorted(k for k in keys if saved.get(k) != current.get(k))
        if changed:
            raise ValueError(
                f"the checkpoint to resume was saved with other settings ({changed}); resume "
                "with the same parameters, or use another checkpoint_dir / resume: false"
            )


class BestModel:
    """The model with the lowest validation ``metric`` so far (its :class:`TrainedState`), in
    memory and in ``best.pt``."""

    def __init__(
        self, metric: str | None, checkpoints: Checkpointer, trained: TrainedState
    ) -> None:
        self.metric, self.checkpoints, self.trained = metric, checkpoints, trained
        self.value, self.step, self.state = float("inf"), 0, None

    def resume(self) -> None:
        saved = self.checkpoints.load("best") if self.metric else None
        if saved is not None:
            self.value, self.step, self.state = saved[self.metric], saved["step"], saved["model"]

    def update(self, row: dict) -> None:
        if self.metric is None or not row[self.metric] < self.value:
            return
        self.value, self.step = row[self.metric], row["step"]
        self.state = copy.deepcopy(self.trained.state())
        self.checkpoints.save(
            "best", {"model": self.state, "step": self.step, self.metric: self.value}
        )

    def restore(self) -> None:
        if self.state is None:
            return
        logger.info("keeping the best model: step %d, %s %.4f", self.step, self.metric, self.value)
        self.trained.load(self.state)
