"""Patient-level splits: a held-out test set and k folds on the rest, seeded.

Splitting by scan would put a patient's second course in training and its first in test;
the reference implementation did exactly that. Here a patient is always on one side.
"""

from __future__ import annotations

import logging
import warnings

import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

logger = logging.getLogger(__name__)

SPLIT_COLUMNS = ["scan_id", "patient_id", "split", "fold", "stratum"]


def _group_folds(scans: pd.DataFrame, n_splits: int, seed: int, stratify: bool):
    """Yield (train_index, held_out_index) by patient, stratified by stratum when possible."""
    groups = scans["patient_id"].to_numpy()
    strata = scans["stratum"].to_numpy()
    counts = pd.Series(strata).value_counts()
    if stratify and counts.min() >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return list(splitter.split(scans, strata, groups))
    if stratify:
        logger.info(
            "splits: some strata have fewer than %d scans; splitting by patient only", n_splits
        )
    splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(scans, groups=groups))


class TooFewPatientsError(ValueError):
    """The cohort is too small to split as the parameters ask; the message says the minimum."""


def _test_groups(test_fraction: float) -> int:
    return max(2, round(1 / test_fraction))


def minimum_patients(test_fraction: float, n_folds: int) -> int:
    """The fewest patients ``patient_level_splits`` can split: each of the
    ``round(1 / test_fraction)`` patient groups needs a patient, and the rest, once the
    smallest group (at most ``n // groups`` patients) is the test split, one per fold."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"splits.test_fraction must be in (0, 1), got {test_fraction}")
    if n_folds < 2:
        raise ValueError(f"splits.n_folds must be at least 2, got {n_folds}")
    groups = _test_groups(test_fraction)
    n_patients = groups
    while n_patients - n_patients // groups < n_folds:
        n_patients += 1
    return n_patients


def too_few_patients(n_patients: int, test_fraction: float, n_folds: int) -> str:
    """Why ``n_patients`` cannot be split, with the minimum and the settings that lower it."""
    needed = minimum_patients(test_fraction, n_folds)
    smallest = minimum_patients(0.5, 2)
    return (
        f"{n_patients} patient(s) are too few to split: a 1/{_test_groups(test_fraction)} test "
        f"split and {n_folds} cross-validation folds need at least {needed} patients "
        f"(data_engineering.splits.test_fraction: {test_fraction}, n_folds: {n_folds}). Add "
        f"patients, or lower n_folds (at least 2) or raise test_fraction; the smallest "
        f"cohort any setting can split has {smallest} patients"
    )


def patient_level_splits(
    scans: pd.DataFrame,
    test_fraction: float = 0.2,
    n_folds: int = 5,
    seed: int = 0,
    stratify: bool = True,
) -> pd.DataFrame:
    """Assign each scan to ``train`` (with a CV ``fold`` 0..k-1) or ``test`` (fold -1).

    ``scans`` needs ``scan_id``, ``patient_id`` and a ``stratum`` (e.g. the scan's most frequent
    region). The test part takes about ``test_fraction`` of the patients: one of
    ``round(1 / test_fraction)`` patient groups, the first, or in a cohort so small that the
    first would leave fewer patients than folds, the one with the fewest patients.
    """
    needed = minimum_patients(test_fraction, n_folds)
    scans = scans.reset_index(drop=True)
    n_patients = scans["patient_id"].nunique()
    if n_patients < needed:
        raise TooFewPatientsError(too_few_patients(n_patients, test_fraction, n_folds))
    n_test_groups = _test_groups(test_fraction)
    groups = _group_folds(scans, n_test_groups, seed, stratify)
    rest_index, test_index = groups[0]
    patients = scans["patient_id"].to_numpy()
    if len(set(patients[rest_index])) < n_folds:
        rest_index, test_index = min(groups, key=lambda group: len(set(patients[group[1]])))
    result = scans.assign(split="train", fold=-1)
    result.loc[test_index, "split"] = "test"
    rest = scans.iloc[rest_index].reset_index(drop=True)
    for fold, (_, held_out) in enumerate(_group_folds(rest, n_folds, seed + 1, stratify)):
        result.loc[rest_index[held_out], "fold"] = fold
    logger.info(
        "splits: %d test scans (%d patients), %d train scans in %d folds",
        len(test_index),
        result.loc[test_index, "patient_id"].nunique(),
        len(rest_index),
        n_folds,
    )
    return result[SPLIT_COLUMNS]


def in_split(splits: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of a table with a ``split`` column (the splits table, or one joined to it)
    that lie in ``split``: ``"train"`` or ``"test"``."""
    return splits[splits["split"] == split]
