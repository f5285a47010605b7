"""The batch stream: every item once per epoch, reshuffled, resumable without saved state."""

import itertools

import pytest

from mriclip.training.batching import BatchStream
from mriclip.training.rng import item_rng


def test_batch_stream_covers_each_epoch_and_resumes_exactly():
    batches = iter(BatchStream(10, 3, seed=0))
    epoch = [key for _ in range(3) for key in next(batches)]
    assert {e for e, _ in epoch} == {0}
    assert len({i for _, i in epoch}) == 9  # one epoch without repeats, ragged tail dropped
    expected = [next(batches) for _ in range(7)]
    assert [e for batch in expected for e, _ in batch] == [1] * 9 + [2] * 9 + [3] * 3
    assert [i for _, i in expected[0]] != [i for _, i in epoch[:3]]  # reshuffled each epoch
    resumed = BatchStream(10, 3, seed=0, start=3)  # a run resumed after three batches
    assert list(itertools.islice(resumed, 7)) == expected
    assert list(itertools.islice(BatchStream(10, 3, seed=1), 3)) != [epoch[:3], *expected[:2]]
    with pytest.raises(ValueError, match="no training items"):
        BatchStream(0, 3, seed=0)


def test_a_batch_larger_than_the_items_draws_each_item_again_with_its_own_key():
    stream = BatchStream(3, 8, seed=0)  # three scans, micro-batches of eight patches
    assert stream.draws == 3 and stream.per_epoch == 1
    batches = list(itertools.islice(stream, 3))
    for epoch, batch in enumerate(batches):
        assert len(batch) == 8 and len(set(batch)) == 8  # no key twice: every patch its own
        assert {key[0] for key in batch} == {epoch} and {key[1] for key in batch} == {0, 1, 2}
        assert {len(key) for key in batch} == {2, 3}  # later draws carry their number
        assert all(key[2] in (1, 2) for key in batch if len(key) == 3)
    assert list(itertools.islice(BatchStream(3, 8, seed=0, start=2), 1)) == batches[2:]
    # the items' randomness differs between draws of one scan and is fixed per key
    draws = [item_rng(0, key)[1].random() for key in [(0, 1), (0, 1, 1), (0, 1, 2)]]
    assert len(set(draws)) == 3 and item_rng(0, (0, 1, 2))[1].random() == draws[2]
    assert item_rng(0, (0, 1, 1))[0] == 1
    # with enough items, exactly the plain permutation's keys, as before
    assert BatchStream(10, 3, seed=0).draws == 1
