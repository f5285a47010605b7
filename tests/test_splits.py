import numpy as np
import pandas as pd
import pytest

from mriclip.splits import (
    TooFewPatientsError,
    in_split,
    minimum_patients,
    patient_level_splits,
)

REGIONS = ["frontal", "cerebellar", "parietal", "occipital", "temporal"]


def cohort(n_patients=47, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(n_patients):
        for course in range(rng.integers(1, 4)):
            rows.append(
                {
                    "scan_id": f"P{patient}_S{course}",
                    "patient_id": f"P{patient}",
                    "stratum": rng.choice(REGIONS, p=[0.31, 0.2, 0.17, 0.12, 0.2]),
                }
            )
    return pd.DataFrame(rows)


def test_no_patient_on_both_sides_and_folds_partition_training():
    splits = patient_level_splits(cohort(), test_fraction=0.2, n_folds=5, seed=3)
    test, train = in_split(splits, "test"), in_split(splits, "train")
    test_patients = set(test["patient_id"])
    assert test_patients.isdisjoint(set(train["patient_id"]))
    assert (test["fold"] == -1).all()
    assert sorted(train["fold"].unique()) == [0, 1, 2, 3, 4]
    assert train.groupby("patient_id")["fold"].nunique().max() == 1
    n_patients = splits["patient_id"].nunique()
    assert 0.12 < len(test_patients) / n_patients < 0.28


def test_seeded_and_seed_sensitive():
    scans = cohort()
    first = patient_level_splits(scans, seed=1)
    pd.testing.assert_frame_equal(first, patient_level_splits(scans, seed=1))
    assert not first["split"].equals(patient_level_splits(scans, seed=2)["split"])


def test_stratification_falls_back_when_classes_are_rare():
    scans = cohort(n_patients=12).assign(stratum="frontal")
    scans.loc[0, "stratum"] = "temporal"  # one scan of a class: cannot be stratified
    splits = patient_level_splits(scans, n_folds=3, seed=0)
    assert set(splits["split"]) == {"train", "test"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 1.2}, "test_fraction must be in"),
        ({"n_folds": 1}, "n_folds must be at least 2"),
        ({"n_folds": 20}, "too few"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        patient_level_splits(cohort(n_patients=10), **kwargs)


def test_the_smallest_cohort_splits_and_one_patient_fewer_is_refused_with_the_minimum():
    # 5 patient groups, the test split the smallest (one patient of 6), 5 folds of the rest
    assert minimum_patients(0.2, 5) == 6
    assert minimum_patients(0.34, 2) == 3 and minimum_patients(0.5, 2) == 3
    for seed in range(5):
        for stratify in (True, False):
            splits = patient_level_splits(cohort(6, seed), 0.2, 5, seed, stratify)
            assert set(splits["fold"]) == {-1, 0, 1, 2, 3, 4}
            splits = patient_level_splits(cohort(3, seed), 0.5, 2, seed, stratify)
            assert set(splits["fold"]) == {-1, 0, 1}
    with pytest.raises(TooFewPatientsError) as raised:
        patient_level_splits(cohort(n_patients=5), test_fraction=0.2, n_folds=5)
    assert str(raised.value).startswith(
        "5 patient(s) are too few to split: a 1/5 test split and 5 cross-validation folds need "
        "at least 6 patients"
    )
    assert "the smallest cohort any setting can split has 3 patients" in str(raised.value)


def test_seed_matters_when_stratification_is_impossible():
    scans = cohort(n_patients=20).assign(stratum="frontal")
    scans.loc[0, "stratum"] = "temporal"
    first = patient_level_splits(scans, n_folds=3, seed=0)
    assert not first["split"].equals(patient_level_splits(scans, n_folds=3, seed=1)["split"])
    pd.testing.assert_frame_equal(first, patient_level_splits(scans, n_folds=3, seed=0))


def test_in_split_keeps_the_rows_of_one_side_with_their_index():
    splits = pd.DataFrame({"scan_id": ["a", "b", "c"], "split": ["train", "test", "train"]})
    assert list(in_split(splits, "train").index) == [0, 2]
    assert list(in_split(splits, "test")["scan_id"]) == ["b"]
    assert in_split(splits, "validation").empty
