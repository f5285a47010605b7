"""Lazy outputs made a few at a time ahead of the code that writes them.

Kedro's ``PartitionedDataset`` saves lazy partitions (callables) one after the other, in sorted
order: each is made, then written, while the other cores wait. :class:`MadeAhead` wraps such
callables so that, once the first is asked for, the next ones are made in background threads
while the current one is written. Making an evidence map is mostly torch and numpy work and
writing it mostly zlib, all of which release the GIL, so threads use the cores that would
otherwise wait. Besides the value being written, at most ``ahead`` are being made or wait to
be taken: memory stays bounded however many there are.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class MadeAhead(Mapping):
    """``makers``' keys, each mapped to a callable that returns what its maker returns, made
    up to ``ahead`` keys in advance in sorted key order (the order it iterates in).

    Args:
        makers: key -> a callable with no arguments (e.g. ``mriclip.inference.EvidenceMaps``).
        ahead: how many of the following values are made while one is written (and the
            threads that make them).
    """

    def __init__(self, makers: Mapping[Hashable, Callable[[], Any]], ahead: int) -> None:
        if ahead < 1:
            raise ValueError(f"MadeAhead needs ahead >= 1, got {ahead}")
        self._makers, self._ahead = dict(makers), ahead
        self._order = sorted(self._makers)
        self._position = {key: i for i, key in enumerate(self._order)}
        self._futures: dict[Hashable, Future] = {}
        self._started: set[Hashable] = set()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def __getitem__(self, key: Hashable) -> Callable[[], Any]:
        if key not in self._makers:
            raise KeyError(key)
        return functools.partial(self._take, key)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __reduce__(self):  # a copy or a pickle (Kedro's MemoryDataset) starts afresh
        return type(self), (self._makers, self._ahead)

    def _take(self, key: Hashable) -> Any:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._ahead, "made-ahead")
            first = self._position[key]
            for later in self._order[first : first + self._ahead + 1]:
                if later not in self._started:
                    self._started.add(later)
                    self._futures[later] = self._executor.submit(self._makers[later])
            future = self._futures.pop(key, None)
            if len(self._started) == len(self._order) and not self._futures:
                self._executor.shutdown(wait=False)  # every value is taken or being taken
        # Taken a second time: made again here, as a plain callable would be.
        return self._makers[key]() if future is None else future.result()
