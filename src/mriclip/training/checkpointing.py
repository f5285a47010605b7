"""Checkpoints of a training run: ``last.pt`` to resume from, ``best.pt`` of the best
validation, written atomically and loaded with ``weights_only=True``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


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
