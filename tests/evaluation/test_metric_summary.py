"""Fold aggregation against numpy/scipy, and the tidy metrics table."""

import numpy as np
import pytest
from scipy.stats import sem

from mriclip.evaluation.summary import mean_and_sem, metrics_table

FOLDS = [
    {
        "per_region": {"frontal": {"auc": 0.8}, "temporal": {"auc": 0.6}},
        "overall": {"auc_macro": 0.7},
        "method": "linear_probe",
        "skipped_regions": {},
    },
    {
        "per_region": {"frontal": {"auc": 0.9}},
        "overall": {"auc_macro": 0.9},
        "method": "linear_probe",
        "skipped_regions": {"temporal": "no positive samples"},
    },
    {
        "per_region": {"frontal": {"auc": 0.7}, "temporal": {"auc": 0.5}},
        "overall": {"auc_macro": 0.6},
        "method": "linear_probe",
        "skipped_regions": {},
    },
]


def test_mean_and_sem_matches_numpy_and_scipy():
    summary = mean_and_sem(FOLDS)
    frontal = [0.8, 0.9, 0.7]
    assert summary["per_region"]["frontal"]["auc"] == pytest.approx(
        {"mean": np.mean(frontal), "sem": sem(frontal), "n": 3}
    )
    # temporal was skipped in one fold: two values, and n says so.
    assert summary["per_region"]["temporal"]["auc"] == pytest.approx(
        {"mean": 0.55, "sem": sem([0.6, 0.5]), "n": 2}
    )
    assert summary["overall"]["auc_macro"]["mean"] == pytest.approx(np.mean([0.7, 0.9, 0.6]))
    assert summary["method"] == "linear_probe"
    assert summary["skipped_regions"] == {"temporal": "no positive samples"}


def test_single_fold_has_no_sem_and_bad_input_is_named():
    assert mean_and_sem(FOLDS[:1])["overall"]["auc_macro"] == {"mean": 0.7, "sem": None, "n": 1}
    with pytest.raises(ValueError, match="empty"):
        mean_and_sem([])
    with pytest.raises(ValueError, match="'overall' is a dict in some folds"):
        mean_and_sem([{"overall": {"a": 1.0}}, {"overall": 0.5}])


def test_metrics_table_is_tidy_and_matches_baselines():
    baseline = {
        "per_region": {"frontal": {"auc": 0.5}, "temporal": {"auc": 0.5}},
        "overall": {"auc_macro": 0.5},
    }
    table = metrics_table(FOLDS[0], baseline, task="zero_shot")
    assert list(table.columns) == [
        "task", "metric", "region", "value", "sem", "n", "ci_low", "ci_high", "baseline",
    ]  # fmt: skip
    assert len(table) == 3
    assert table["ci_low"].isna().all()  # no interval was stored
    overall = table.set_index("region").loc["all"]
    assert (overall["metric"], overall["value"], overall["baseline"]) == ("auc_macro", 0.7, 0.5)
    assert (table["task"] == "zero_shot").all()

    summarised = metrics_table(mean_and_sem(FOLDS), baseline)
    frontal = summarised[summarised["region"] == "frontal"].iloc[0]
    assert frontal["value"] == pytest.approx(0.8)
    assert frontal["sem"] == pytest.approx(sem([0.8, 0.9, 0.7]))
    assert frontal["n"] == 3
    with pytest.raises(ValueError, match="neither 'per_region' nor 'overall'"):
        metrics_table({"auc": 0.5})

    with_interval = {"overall": {"auc_macro": 0.7, "auc_macro_ci": [0.6, 0.8]}}
    row = metrics_table(with_interval).iloc[0]
    assert (row["metric"], row["ci_low"], row["ci_high"]) == ("auc_macro", 0.6, 0.8)
    assert len(metrics_table(with_interval)) == 1  # the interval is no metric row of its own
