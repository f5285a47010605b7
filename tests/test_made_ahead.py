import copy
import pickle
import threading
import time

import pytest

from mriclip.made_ahead import MadeAhead


class Maker:
    """Records when each value is made, in which thread, and how many are made but not taken."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: list[str] = []
        self.threads: set[str] = set()
        self.pending = 0
        self.most_pending = 0

    def __call__(self, key: str):
        def make():
            time.sleep(0.01)
            with self.lock:
                self.made.append(key)
                self.threads.add(threading.current_thread().name)
                self.pending += 1
                self.most_pending = max(self.most_pending, self.pending)
            return key.upper()

        return make

    def taken(self) -> None:
        with self.lock:
            self.pending -= 1


def test_values_come_back_in_sorted_order_made_in_background_threads_with_bounded_lookahead():
    maker = Maker()
    keys = [f"scan{i:02d}" for i in range(12)]
    made_ahead = MadeAhead({key: maker(key) for key in reversed(keys)}, ahead=2)
    assert list(made_ahead) == keys and len(made_ahead) == 12
    values = []
    for _key, make in sorted(made_ahead.items()):  # as Kedro's PartitionedDataset saves
        values.append(make())
        maker.taken()
        time.sleep(0.02)  # writing: the next values are made meanwhile
    assert values == [key.upper() for key in keys]
    assert sorted(maker.made) == keys  # each made once
    assert all(name.startswith("made-ahead") for name in maker.threads)
    # the one being written, plus at most `ahead` made or waiting
    assert 2 <= maker.most_pending <= 3


def test_a_value_taken_twice_is_made_again_and_errors_reach_the_caller():
    def broken():
        raise ValueError("scan03: bad map")

    made_ahead = MadeAhead({"a": lambda: 1, "b": broken}, ahead=1)
    assert made_ahead["a"]() == 1
    with pytest.raises(ValueError, match="scan03: bad map"):
        made_ahead["b"]()
    assert made_ahead["a"]() == 1
    with pytest.raises(KeyError):
        made_ahead["c"]
    with pytest.raises(ValueError, match="ahead >= 1"):
        MadeAhead({}, ahead=0)


def test_a_copy_or_a_pickle_starts_afresh():
    made_ahead = MadeAhead({"b": int, "a": float}, ahead=2)
    assert made_ahead["a"]() == 0.0  # threads and futures exist now
    for clone in (copy.deepcopy(made_ahead), pickle.loads(pickle.dumps(made_ahead))):
        assert list(clone) == ["a", "b"]
        assert [make() for make in clone.values()] == [0.0, 0]
