"""Expected calibration error and Platt calibration, against direct computations."""

import numpy as np
import pandas as pd
import pytest

from mriclip.evaluation.calibration import (
    apply_calibration,
    calibrated,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
)
from mriclip.evaluation.rank_metrics import roc_auc


def test_ece_by_hand():
    # Bin (0.1, 0.2]: p 0.15, 0.15, labels 0, 1 -> |0.5 - 0.15| = 0.35, weight 2/5.
    # Bin (0.8, 0.9]: p 0.9, 0.9, 0.9, labels 1, 1, 0 -> |2/3 - 0.9|, weight 3/5.
    probabilities = np.array([0.15, 0.15, 0.9, 0.9, 0.9])
    labels = np.array([0, 1, 1, 1, 0])
    expected = 2 / 5 * 0.35 + 3 / 5 * abs(2 / 3 - 0.9)
    assert expected_calibration_error(probabilities, labels, 10) == pytest.approx(expected)
    assert expected_calibration_error(probabilities[:, None], labels[:, None], 10) == (
        pytest.approx(expected)
    )


def test_ece_is_near_zero_for_calibrated_draws_and_large_for_overconfident_ones():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    labels = rng.uniform(size=p.size) < p
    assert expected_calibration_error(p, labels) < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(overconfident, labels) > 0.2


def test_ece_refuses_what_is_not_a_probability():
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([1.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error([0.2, 0.3], [1])


def test_platt_recovers_a_known_distortion_and_keeps_the_ranking():
    rng = np.random.default_rng(1)
    true = rng.uniform(0.02, 0.98, size=(4000, 3))
    labels = rng.uniform(size=true.shape) < true
    logit = np.log(true / (1 - true))
    distorted = 1 / (1 + np.exp(-(3.0 * logit - 1.0)))  # overconfident and shifted
    platt = fit_platt(distorted, labels)
    assert platt["slope"] == pytest.approx(1 / 3, rel=0.1)
    assert platt["intercept"] == pytest.approx(1 / 3, abs=0.1)
    fixed = calibrated(distorted, platt)
    assert expected_calibration_error(fixed, labels) < expected_calibration_error(distorted, labels)
    for k in range(3):
        assert roc_auc(labels[:, k], fixed[:, k]) == pytest.approx(
            roc_auc(labels[:, k], distorted[:, k])
        )


def test_calibration_record_applies_to_its_columns_only():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=(200, 2))
    labels = rng.uniform(size=p.shape) < p**2
    record = fit_calibration(
        {"regions": (p, labels), "diagnosis": (p[:, :1], np.zeros((200, 1)))},
        {"regions": ["prob_a", "prob_b"], "diagnosis": ["prob_x"]},
    )
    assert "diagnosis" in record["skipped"] and "regions" in record["targets"]
    table = pd.DataFrame({"prob_a": p[:, 0], "prob_b": p[:, 1], "prob_x": p[:, 0]})
    out = apply_calibration(table, record)
    np.testing.assert_allclose(out["prob_a"], calibrated(p[:, 0], record["targets"]["regions"]))
    np.testing.assert_array_equal(out["prob_x"], table["prob_x"])
    assert apply_calibration(table, None) is table
