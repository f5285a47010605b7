import numpy as np
import pytest

from mriclip.evaluation.bootstrap import with_bootstrap_intervals
from mriclip.evaluation.rank_metrics import roc_auc


def noisy_problem(n_patients, seed=0):
    """Two scans per patient; scores separate the classes only partly."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.random(n_patients) < 0.5, 2)
    labels[:2] = [True, False]
    scores = labels + rng.normal(0, 1.0, len(labels))
    groups = np.repeat([f"P{i}" for i in range(n_patients)], 2)
    return labels, scores, groups


def auc_metrics(labels, scores):
    return lambda i: {"overall": {"auc_macro": roc_auc(labels[i], scores[i]), "n": len(i)}}


def test_interval_covers_the_point_estimate_and_shrinks_with_more_patients():
    widths = []
    for n_patients in (20, 320):
        labels, scores, groups = noisy_problem(n_patients)
        result = with_bootstrap_intervals(auc_metrics(labels, scores), groups, 400, 0.95, seed=1)
        low, high = result["overall"]["auc_macro_ci"]
        assert low <= result["overall"]["auc_macro"] <= high
        assert result["overall"]["auc_macro"] == roc_auc(labels, scores)
        assert "n_ci" not in result["overall"]  # counts get no interval
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 16x the patients, ~4x narrower


def test_resamples_draw_whole_patients():
    groups = np.array(["A", "A", "B", "B", "C"])
    seen = []

    def metric(indices):
        seen.append(indices.copy())
        return {"overall": {"auc": 0.5}}

    with_bootstrap_intervals(metric, groups, n_resamples=50, seed=0)
    for indices in seen[1:]:
        for first, second in ((0, 1), (2, 3)):  # a patient's scans come together
            assert np.sum(indices == first) == np.sum(indices == second)


def test_unscorable_resamples_are_left_out_and_bad_parameters_refused():
    labels = np.array([1, 0, 0, 0, 0, 0])
    scores = np.arange(6.0)
    groups = [f"P{i}" for i in range(6)]
    result = with_bootstrap_intervals(auc_metrics(labels, scores), groups, 100, seed=0)
    assert result["bootstrap"]["n_resamples"] == 100
    assert result["overall"]["auc_macro_ci"] is not None  # from the resamples that had a positive
    with pytest.raises(ValueError, match="n_resamples"):
        with_bootstrap_intervals(auc_metrics(labels, scores), groups, -1)
    with pytest.raises(ValueError, match="confidence"):
        with_bootstrap_intervals(auc_metrics(labels, scores), groups, 10, confidence=1.5)
