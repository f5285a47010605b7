"""The batch stream: every item once per epoch, reshuffled, resumable without saved state."""

import itertools

import pytest

from mriclip.training.batching import BatchStream


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
    with pytest.raises(ValueError, match="exceeds the 2 training items"):
        BatchStream(2, 3, seed=0)
