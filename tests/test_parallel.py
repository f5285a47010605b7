import pytest

from mriclip.parallel import map_as_completed


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
