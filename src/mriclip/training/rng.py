"""Randomness a training run can reproduce: each item's generator from (seed, epoch, index),
and snapshots of every global RNG for exact resume."""

from __future__ import annotations

import random

import numpy as np
import torch

from mriclip.training.batching import ItemKey


def item_rng(seed: int, key: ItemKey) -> tuple[int, np.random.Generator]:
    """The item index of ``key`` and the generator its randomness comes from.

    The generator depends on (seed, epoch, index[, draw]) only, so an item is the same whichever
    process loads it and whatever was loaded before: 0 or k workers, fresh or resumed run."""
    epoch, index, *draw = key if isinstance(key, tuple) else (0, key)
    return index, np.random.default_rng([seed, epoch, index, *draw])


def rng_state() -> dict:
    """Every global RNG's state, as tensors and plain values so ``weights_only`` loads it."""
    kind, key, position, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        # The current GPU's only: reading every visible GPU's would create a CUDA context on
        # the GPUs of the other DDP ranks.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
