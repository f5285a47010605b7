"""The batches a training run reads: the endless, resumable and shardable stream of item keys
(:class:`BatchStream`), the collate function and the ``DataLoader`` over them."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ItemKey = int | tuple[int, int] | tuple[int, int, int]
"""What a training dataset is indexed with: ``(epoch, index)``, ``(epoch, index, draw)`` for an
item's further draws in one epoch (see :class:`BatchStream`), or a plain index (epoch 0)."""


class BatchStream:
    """Endless shuffled batches of ``(epoch, index)`` keys, epoch by epoch (the ragged tail of
    each epoch dropped).

    With fewer items than a batch (a pilot cohort: the items are scans, the batch counts
    patches), an epoch is ``draws`` passes over the items shuffled together, enough for one
    batch: an item may come several times in a batch, its n-th time as ``(epoch, index, n)``,
    whose own random draw (another patch of the scan) makes it another training item. With
    enough items, ``draws`` is 1 and the keys are those of a plain permutation.

    Epoch ``e``'s order is a permutation drawn from (seed, e), so batch number ``b`` is the
    same whatever came before: a run resumed at batch ``b`` (``start``) sees exactly the
    batches an uninterrupted one would, with no state to save.

    Sharded over ``world_size`` processes, batch ``b`` of all of them together is batch ``b``
    of ``world_size * batch_size`` items of one process, and ``rank`` reads its ``rank``-th
    slice: the ranks' items are disjoint, and each item's key is what one process gives it."""

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n_items < 1:
            raise ValueError("no training items")
        self.n_items, self.batch_size, self.seed, self.start = n_items, batch_size, seed, start
        self.rank, self.world_size = rank, world_size
        self.draws = math.ceil(batch_size * world_size / n_items)
        self.per_epoch = n_items * self.draws // (batch_size * world_size)
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def batch(self, number: int) -> list[tuple[int, int]]:
        epoch, position = divmod(number, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            rng = np.random.default_rng([self.seed, epoch])
            self._order = rng.permutation(self.n_items * self.draws)
        first = (position * self.world_size + self.rank) * self.batch_size
        chunk = self._order[first : first + self.batch_size]
        return [self._key(epoch, int(place)) for place in chunk]

    def _key(self, epoch: int, place: int) -> tuple[int, int] | tuple[int, int, int]:
        draw, index = divmod(place, self.n_items)
        return (epoch, index) if draw == 0 else (epoch, index, draw)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        number = self.start
        while True:
            yield self.batch(number)
            number += 1


def collate(items: list[dict]) -> dict:
    """Stack tensors; keep everything else (sentences, keys, ids) as lists."""
    return {
        key: torch.stack([item[key] for item in items])
        if isinstance(items[0][key], torch.Tensor)
        else [item[key] for item in items]
        for key in items[0]
    }


def load_batch(dataset: Dataset, indices: list[ItemKey]) -> dict:
    return collate([dataset[i] for i in indices])


def batch_loader(
    dataset: Dataset,
    stream: BatchStream,
    num_workers: int,
    pin_memory: bool,
    seed: int,
    in_flight: int = 1,
) -> DataLoader:
    """A ``DataLoader`` of ``stream``'s batches, read by ``num_workers`` processes (0: in
    this one). The loop makes one iterator for the whole run, so its workers start once and
    stay. They keep at least ``in_flight`` batches in flight, and two each: the engine asks
    for one optimiser step's, since it takes them all at once; with fewer, the workers would
    stop while the model computes and the next step would wait for the rest."""
    return DataLoader(
        dataset if num_workers else OneThreadItems(dataset),
        batch_sampler=stream,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=max(2, math.ceil(in_flight / num_workers)) if num_workers else None,
        # Starting an iterator draws a base seed. From its own generator it leaves the global
        # torch RNG (dropout's, which checkpoints restore) where it was.
        generator=torch.Generator().manual_seed(seed),
    )


class OneThreadItems(Dataset):
    """``dataset``'s items computed on one thread, as DataLoader workers compute them: BLAS
    rounding depends on the thread count, and with two threads rotated cubes differed from
    the workers' in the last bit. (Raising the workers' count instead can hang OpenMP in a
    forked process.)"""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.dataset[key]
        finally:
            torch.set_num_threads(threads)
