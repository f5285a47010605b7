"""One function over many independent items: in this process, over a pool of processes, or
on a Dask cluster.

Outcomes come back as items finish, not in order, so a caller keeps only what it needs of
each and nothing waits on the slowest item. A call that raises, or whose worker dies, comes
back as an outcome holding the error: one bad item never ends the others.

Items and the function go to other processes by pickle (a pool) or cloudpickle (Dask): give
module-level functions and loaders such as a dataset's bound ``load``; lambdas need
``workers=1`` or Dask.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

K = TypeVar("K")


@dataclass(frozen=True)
class Outcome(Generic[K]):
    key: K
    result: Any = None
    error: BaseException | None = None


def map_as_completed(
    function: Callable[[Any], Any],
    items: Mapping[K, Any],
    workers: int,
    dask_scheduler: str | None,
    initializer: Callable[[int], None] | None = None,
    desc: str = "items",
) -> Iterator[Outcome[K]]:
    """``function(item)`` for every item, as outcomes in the order they finish.

    ``dask_scheduler`` (an address such as ``tcp://host:8786``) sends the calls to that
    cluster; otherwise ``workers`` > 1 runs them in that many processes, each started with
    ``initializer(workers)``, and 1 runs them here, one after another."""
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, got {workers}")
    if dask_scheduler:
        outcomes = _on_dask(function, items, dask_scheduler)
    elif workers > 1 and len(items) > 1:
        outcomes = _in_pool(function, items, workers, initializer)
    else:
        outcomes = _here(function, items)
    yield from tqdm(outcomes, total=len(items), desc=desc, unit="item", disable=None)


def _here(function, items):
    for key, item in items.items():
        try:
            result = function(item)
        except Exception as error:  # noqa: BLE001 - the caller decides what a failure means
            yield Outcome(key, error=error)
        else:
            yield Outcome(key, result)


def _in_pool(function, items, workers, initializer):
    _require_picklable(function, next(iter(items.values())))
    initargs = (workers,) if initializer else ()
    pool = ProcessPoolExecutor(min(workers, len(items)), initializer=initializer, initargs=initargs)
    try:
        futures = {pool.submit(function, item): key for key, item in items.items()}
        for future in as_completed(futures):
            yield _outcome(futures[future], future)
    finally:  # a caller that stops early must not wait for the rest
        pool.shutdown(wait=True, cancel_futures=True)


def _on_dask(function, items, address):
    try:
        from distributed import Client
        from distributed import as_completed as dask_as_completed
    except ImportError as error:
        raise ImportError(
            f"a Dask scheduler ({address}) is named but dask.distributed is not installed: "
            "pip install 'mriclip[dask]', or set the scheduler to null"
        ) from error
    with Client(address, set_as_default=False) as client:  # leave the user's default alone
        logger.info("sending %d items to the Dask cluster at %s", len(items), address)
        futures = {client.submit(function, item, pure=False): key for key, item in items.items()}
        for future in dask_as_completed(futures, loop=client.loop):
            yield _outcome(futures[future], future)
            future.release()  # the cluster may forget the result once it is here


def _outcome(key, future) -> Outcome:
    try:
        return Outcome(key, future.result())
    except Exception as error:  # noqa: BLE001 - a worker died or the result did not travel
        return Outcome(key, error=error)


def _require_picklable(function, item) -> None:
    """Fail once, clearly, before any worker starts, rather than once per item."""
    try:
        pickle.dumps((function, item))
    except Exception as error:
        raise TypeError(
            f"workers > 1 sends each item to another process, which needs it picklable: "
            f"{error}. Use module-level functions and loaders (a catalog dataset's load), "
            "or set workers to 1."
        ) from error
