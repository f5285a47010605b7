import os
import time

import pytest
import torch

from mriclip.parallel import (
    TimeLimitExceeded,
    WorkerDied,
    call_with_time_limit,
    map_as_completed,
)


def square_or_fail(item: int) -> int:
    if item == 3:
        raise ValueError("three")
    return item * item


@pytest.mark.parametrize("workers", [1, 2])
def test_every_item_comes_back_and_a_failure_is_an_outcome(workers):
    items = {f"k{i}": i for i in range(6)}
    outcomes = {o.key: o for o in map_as_completed(square_or_fail, items, workers, None)}
    assert sorted(outcomes) == sorted(items)
    assert {k: o.result for k, o in outcomes.items() if o.error is None} == {
        f"k{i}": i * i for i in range(6) if i != 3
    }
    error = outcomes["k3"].error
    assert isinstance(error, ValueError) and str(error) == "three"


def test_unpicklable_items_fail_once_and_clearly():
    items = {"a": lambda: 1, "b": lambda: 2}
    with pytest.raises(TypeError, match="set workers to 1"):
        list(map_as_completed(callable, items, 2, None))
    assert {o.key for o in map_as_completed(callable, items, 1, None)} == {"a", "b"}


def sleep_when_asked(item: tuple[str, float]) -> str:
    """Write this process's id to ``item[0]``, sleep ``item[1]`` seconds, return the path."""
    path, seconds = item
    with open(path, "w") as file:
        file.write(str(os.getpid()))
    time.sleep(seconds)
    return path


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_a_call_past_the_time_limit_is_ended_and_the_others_go_on(tmp_path, workers):
    items = {"stuck": (str(tmp_path / "stuck"), 30.0)}  # first: the others wait on it serially
    items.update({name: (str(tmp_path / name), 0.0) for name in "abc"})
    tick = time.monotonic()
    outcomes = {
        o.key: o for o in map_as_completed(sleep_when_asked, items, workers, None, timeout_s=1.5)
    }
    assert time.monotonic() - tick < 15  # not the 30 s the stuck call asked for
    assert {k: o.result for k, o in outcomes.items() if o.error is None} == {
        k: items[k][0] for k in "abc"
    }
    error = outcomes["stuck"].error
    assert isinstance(error, TimeLimitExceeded)
    assert error.limit_s == 1.5 and 1.5 <= error.elapsed_s < 10
    assert "over the time limit of 1.5 s" in str(error)
    pids = {k: int((tmp_path / k).read_text()) for k in items}
    assert len(set(pids.values())) == 4 and os.getpid() not in pids.values()  # a child each
    assert not is_running(pids["stuck"])  # ended, not left to run


def exit_abruptly(item: int) -> int:
    if item == 1:
        os._exit(3)  # as a crash in C code or the out-of-memory killer would end it
    return item


def test_a_worker_that_dies_is_an_outcome_and_errors_come_back():
    outcomes = {
        o.key: o for o in map_as_completed(exit_abruptly, {"a": 0, "b": 1}, 1, None, timeout_s=30)
    }
    assert outcomes["a"].result == 0
    assert isinstance(outcomes["b"].error, WorkerDied) and "exit code 3" in str(outcomes["b"].error)
    failed = {o.key: o for o in map_as_completed(square_or_fail, {"x": 3}, 2, None, timeout_s=30)}
    assert isinstance(failed["x"].error, ValueError) and str(failed["x"].error) == "three"


def test_call_with_time_limit_raises_what_the_call_raised_or_the_limit(tmp_path):
    assert call_with_time_limit(square_or_fail, 4, 30) == 16
    assert call_with_time_limit(square_or_fail, 4, None) == 16  # no limit: called here
    with pytest.raises(ValueError, match="three"):
        call_with_time_limit(square_or_fail, 3, 30)
    with pytest.raises(TimeLimitExceeded):
        call_with_time_limit(sleep_when_asked, (str(tmp_path / "pid"), 30.0), 1.0)
    assert not is_running(int((tmp_path / "pid").read_text()))
    with pytest.raises(ValueError, match="time limit must be > 0"):
        list(map_as_completed(square_or_fail, {"x": 1}, 1, None, timeout_s=0))


def torch_threads_after_a_parallel_region(_: int) -> int:
    volume = torch.rand(1, 1, 24, 24, 24)
    torch.nn.functional.interpolate(volume, size=(40, 40, 40), mode="trilinear")
    return torch.get_num_threads()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("timeout_s", [None, 60])
def test_forked_children_run_torch_after_the_parent_used_its_thread_pool(workers, timeout_s):
    """GNU OpenMP does not survive a fork: a child that ran torch on several threads after
    the parent had used them waited forever (each scan then ran to its time limit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch_threads_after_a_parallel_region(0)  # the parent's pool now holds threads
        items = {"a": 0, "b": 1}
        tick = time.monotonic()
        outcomes = list(
            map_as_completed(
                torch_threads_after_a_parallel_region, items, workers, None, "torch", timeout_s
            )  # fmt: skip
        )
    finally:
        torch.set_num_threads(threads)
    assert [o.error for o in outcomes] == [None, None]
    assert time.monotonic() - tick < 30
    if workers == 2 or timeout_s is not None:  # children forked (Linux): one thread each
        assert {o.result for o in outcomes} == {1}
