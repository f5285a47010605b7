"""Supervised references on frozen embeddings: linear probe and fusion classifiers."""

import warnings
from functools import partial

import numpy as np
import pytest
import torch

from mriclip.evaluation.baselines import ORACLE_CAVEAT, fusion_classifier, linear_probe

early_fusion_classifier = partial(fusion_classifier, "early_fusion")
late_fusion_classifier = partial(fusion_classifier, "late_fusion")

REGIONS = ["frontal", "parietal", "temporal", "occipital"]


def separable(n=160, dim=12, seed=0):
    """Region clusters far apart relative to their spread; text = one-hot label + noise."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.normal(size=(len(REGIONS), dim))
    region_index = np.arange(n) % len(REGIONS)
    images = centres[region_index] + rng.normal(size=(n, dim))
    labels = np.eye(len(REGIONS), dtype=int)[region_index]
    texts = np.hstack([labels, np.zeros((n, 4))]) + 0.1 * rng.normal(size=(n, 8))
    train, test = slice(0, n // 2), slice(n // 2, n)
    return (images[train], texts[train], labels[train]), (images[test], texts[test], labels[test])


def test_linear_probe_separates_separable_data():
    (train_x, _, train_y), (test_x, _, test_y) = separable()
    metrics = linear_probe(train_x, train_y, test_x, test_y, REGIONS, C=1.0, seed=0)
    assert metrics["method"] == "linear_probe"
    assert metrics["overall"]["auc_macro"] > 0.95
    assert set(metrics["per_region"]) == set(REGIONS)
    assert metrics["overall"]["top1_accuracy"] > 0.9


def test_linear_probe_lists_regions_it_could_not_train():
    (train_x, _, train_y), (test_x, _, test_y) = separable()
    train_y[:, 3] = 0  # never saw an occipital lesion in training
    metrics = linear_probe(train_x, train_y, test_x, test_y, REGIONS)
    assert "occipital" not in metrics["per_region"]
    assert metrics["skipped_regions"]["occipital"] == "training labels: no positive samples"


def test_linear_probe_names_mismatched_arrays():
    (train_x, _, train_y), (test_x, _, test_y) = separable()
    with pytest.raises(ValueError, match="train_Y has shape"):
        linear_probe(train_x, train_y[:-1], test_x, test_y, REGIONS)
    with pytest.raises(ValueError, match="train_X has 12 features but test_X has 5"):
        linear_probe(train_x, train_y, test_x[:, :5], test_y, REGIONS)


@pytest.mark.parametrize("classifier", [early_fusion_classifier, late_fusion_classifier])
def test_fusion_runs_is_deterministic_and_flags_the_oracle_text(classifier):
    (train_x, train_t, train_y), (test_x, test_t, test_y) = separable(n=90)
    rng_state = torch.get_rng_state()
    kwargs = {"epochs": 8, "batch_size": 16, "seed": 3}
    first = classifier(train_x, train_t, train_y, test_x, test_t, test_y, REGIONS, **kwargs)
    second = classifier(train_x, train_t, train_y, test_x, test_t, test_y, REGIONS, **kwargs)
    assert first == second
    assert torch.equal(torch.get_rng_state(), rng_state)  # callers' RNG left alone
    other_seed = classifier(
        train_x, train_t, train_y, test_x, test_t, test_y, REGIONS, **{**kwargs, "seed": 4}
    )
    assert other_seed["final_train_loss"] != first["final_train_loss"]
    assert first["uses_sample_text"] is True and first["caveat"] == ORACLE_CAVEAT
    # The text states the label, so even a short training run nearly solves the task.
    assert first["overall"]["auc_macro"] > 0.9


def test_fusion_takes_read_only_embeddings_without_a_warning():
    """Embeddings read back from parquet may be read-only arrays; torch warns on sharing them."""
    splits = separable(n=40)
    arrays = [np.array(array, dtype=float) for split in splits for array in split]
    for array in arrays:
        array.flags.writeable = False
    train_x, train_t, train_y, test_x, test_t, test_y = arrays
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = early_fusion_classifier(
            train_x, train_t, train_y, test_x, test_t, test_y, REGIONS, epochs=1
        )
    assert np.isfinite(metrics["final_train_loss"])


def test_fusion_handles_a_trailing_batch_of_one():
    (train_x, train_t, train_y), (test_x, test_t, test_y) = separable(n=34)
    # 17 training samples in batches of 8: 8, 8, 1 -> the single sample joins the previous batch.
    metrics = early_fusion_classifier(
        train_x, train_t, train_y, test_x, test_t, test_y, REGIONS, epochs=2, batch_size=8
    )
    assert np.isfinite(metrics["final_train_loss"])


def test_fusion_names_mismatched_arrays():
    (train_x, train_t, train_y), (test_x, test_t, test_y) = separable(n=40)
    with pytest.raises(ValueError, match="test_text has 19 rows but test_image has 20"):
        late_fusion_classifier(train_x, train_t, train_y, test_x, test_t[:-1], test_y, REGIONS)


def test_unknown_fusion_kind_is_named():
    from mriclip.evaluation.baselines import fusion_classifier

    with pytest.raises(ValueError, match="unknown fusion kind 'middle_fusion'"):
        fusion_classifier("middle_fusion", *([None] * 6), REGIONS)
