"""One function over many independent items: in this process, over a pool of processes, or
on a Dask cluster.

Outcomes come back as items finish, not in order, so a caller keeps only what it needs of
each and nothing waits on the slowest item. A call that raises, or whose worker dies, comes
back as an outcome holding the error: one bad item never ends the others.

Items and the function go to other processes by pickle (a pool) or cloudpickle (Dask): give
module-level functions and loaders such as a dataset's bound ``load``; lambdas need
``workers=1`` or Dask.

A time limit (``timeout_s``) runs every call in a child process of its own, which is ended
(SIGTERM, then SIGKILL) once the call has run that long; the item comes back as an outcome
holding :class:`TimeLimitExceeded`, and the next item starts. This holds serially
(``workers=1``: one child at a time) and with workers alike: a call stuck in C code (a
registration that never converges) cannot be interrupted inside a process, only ended with
it. Children are forked where the platform allows (Linux), so nothing needs to pickle but the
results; elsewhere they are spawned and function and items must pickle.

Threads in child processes: a spawned child gets its share of the cores for torch. A forked
child runs torch on one thread, because GNU OpenMP (which torch's CPU kernels use on Linux)
does not survive a fork: once the parent has run a parallel region, a child that starts one
with more than one thread waits forever for threads that were not copied. SimpleITK's own
pool does survive it and keeps its threads.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

K = TypeVar("K")


class TimeLimitExceeded(TimeoutError):
    """A call ran past its time limit and its process was ended."""

    def __init__(self, limit_s: float, elapsed_s: float) -> None:
        super().__init__(
            f"ended after {elapsed_s:.1f} s, over the time limit of {limit_s:g} s per item"
        )
        self.limit_s, self.elapsed_s = limit_s, elapsed_s

    def __reduce__(self):  # travels back from a Dask worker with its fields
        return type(self), (self.limit_s, self.elapsed_s)


class WorkerDied(RuntimeError):
    """The process running a call ended without a result (killed, out of memory, a crash)."""


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
    desc: str = "items",
    timeout_s: float | None = None,
) -> Iterator[Outcome[K]]:
    """``function(item)`` for every item, as outcomes in the order they finish.

    ``dask_scheduler`` (an address such as ``tcp://host:8786``) sends the calls to that
    cluster; otherwise ``workers`` > 1 runs them in that many processes (threads: see the
    module docstring), and 1 runs them here, one after another. With ``timeout_s``
    each call runs in a process of its own that is ended after that many seconds (on Dask:
    a child of the worker; see :func:`call_with_time_limit`)."""
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, got {workers}")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"a time limit must be > 0 seconds or None, got {timeout_s}")
    if dask_scheduler:
        call = function if timeout_s is None else TimeLimited(function, timeout_s)
        outcomes = _on_dask(call, items, dask_scheduler)
    elif timeout_s is not None:
        outcomes = _in_children(function, items, workers, timeout_s)
    elif workers > 1 and len(items) > 1:
        outcomes = _in_pool(function, items, workers)
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


def _in_pool(function, items, workers):
    _require_picklable(function, next(iter(items.values())))
    context = _context()
    # The function goes to each worker once, as it starts (inherited by a forked one), not
    # with every item: it may hold large state, such as the phantom's template anatomy.
    pool = ProcessPoolExecutor(
        min(workers, len(items)),
        mp_context=context,
        initializer=_start_pool_worker,
        initargs=(function, workers, context.get_start_method()),
    )
    try:
        futures = {pool.submit(_call_pool_function, item): key for key, item in items.items()}
        for future in as_completed(futures):
            yield _outcome(futures[future], future)
    finally:  # a caller that stops early must not wait for the rest
        pool.shutdown(wait=True, cancel_futures=True)


_pool_function: Callable[[Any], Any] | None = None  # a pool worker's function


def _start_pool_worker(function, workers: int, start_method: str) -> None:
    global _pool_function
    _pool_function = function
    _set_child_threads(workers, start_method)


def _call_pool_function(item):
    return _pool_function(item)


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


def _context():
    """Fork where the platform has it (no pickling of function and items), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _set_child_threads(workers: int, start_method: str) -> None:
    """torch's threads in a child process: see the module docstring."""
    torch = sys.modules.get("torch")  # a child that never needs torch does not import it
    if torch is None:
        return
    if start_method == "fork":
        torch.set_num_threads(1)
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // workers))


def _child(sender, function, item, workers, start_method) -> None:
    """A child process's whole life: one call, its result or error sent back."""
    try:
        _set_child_threads(workers, start_method)
        message = ("result", function(item))
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        message = ("error", error)
    try:
        sender.send(message)
    except Exception as error:  # noqa: BLE001 - a result or error that does not pickle
        sender.send(("error", RuntimeError(f"the result could not be sent back: {error!r}")))
    finally:
        sender.close()


class _Child:
    """One call in a child process: started now, ended on demand."""

    def __init__(self, context, function, item, workers: int) -> None:
        self.connection, sender = context.Pipe(duplex=False)
        arguments = (sender, function, item, workers, context.get_start_method())
        self.process = context.Process(target=_child, args=arguments, daemon=True)
        self.process.start()
        sender.close()  # the child holds the only sending end: its death is our EOF
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def outcome(self, key) -> Outcome:
        """The call's outcome, once the connection is ready (a message or the child's end)."""
        try:
            kind, value = self.connection.recv()
        except (EOFError, OSError):
            self.process.join()
            return Outcome(
                key,
                error=WorkerDied(
                    f"the worker process ended without a result (exit code "
                    f"{self.process.exitcode}: killed, out of memory, or a crash in C code)"
                ),
            )
        finally:
            self.connection.close()
        self.process.join()
        return Outcome(key, value) if kind == "result" else Outcome(key, error=value)

    def end(self) -> None:
        self.connection.close()
        self.process.terminate()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _in_children(function, items, workers, timeout_s):
    """Each call in a child process of its own, at most ``workers`` at once; a child over
    ``timeout_s`` is ended and its item's outcome is :class:`TimeLimitExceeded`."""
    context = _context()
    if context.get_start_method() != "fork":
        _require_picklable(function, next(iter(items.values())))
    queue = iter(items.items())
    running: dict[Any, tuple[Any, _Child]] = {}

    def start_next(n: int = 1) -> None:
        for key, item in itertools.islice(queue, n):
            child = _Child(context, function, item, workers)
            running[child.connection] = (key, child)

    try:
        start_next(workers)
        while running:
            soonest = min(child.started for _, child in running.values()) + timeout_s
            for connection in wait(list(running), max(0.0, soonest - time.monotonic())):
                key, child = running.pop(connection)
                yield child.outcome(key)
                start_next()
            for connection, (key, child) in list(running.items()):
                if child.elapsed() >= timeout_s:
                    del running[connection]
                    elapsed = child.elapsed()
                    child.end()
                    logger.warning("%s: ended after %.1f s (limit %g s)", key, elapsed, timeout_s)
                    yield Outcome(key, error=TimeLimitExceeded(timeout_s, elapsed))
                    start_next()
    finally:  # a caller that stops early leaves no child behind
        for _, child in running.values():
            child.end()


def call_with_time_limit(function: Callable[[Any], Any], item: Any, timeout_s: float | None):
    """``function(item)``, ended after ``timeout_s`` seconds (None: no limit, called here).

    The call runs in a child process (see the module docstring); its error is raised here,
    as is :class:`TimeLimitExceeded` when it runs too long, or :class:`WorkerDied`. In a
    process that may not have children (a daemonic one, such as a Dask nanny's worker) the
    call runs here without a limit, and a warning says so."""
    if timeout_s is None:
        return function(item)
    if multiprocessing.current_process().daemon:
        logger.warning(
            "a daemonic process cannot start the child a time limit needs; running without "
            "one (for Dask: start workers with distributed.worker.daemon: false)"
        )
        return function(item)
    outcome = next(_in_children(function, {None: item}, 1, timeout_s))
    if outcome.error is not None:
        raise outcome.error
    return outcome.result


@dataclass(frozen=True)
class TimeLimited:
    """``function`` under :func:`call_with_time_limit`: a picklable callable for Dask."""

    function: Callable[[Any], Any]
    timeout_s: float

    def __call__(self, item: Any) -> Any:
        return call_with_time_limit(self.function, item, self.timeout_s)
