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
    ``round(1 / test_fraction)`` patient groups.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"splits.test_fraction must be in (0, 1), got {test_fraction}")
    if n_folds < 2:
        raise ValueError(f"splits.n_folds must be at least 2, got {n_folds}")
    scans = scans.reset_index(drop=True)
    n_patients = scans["patient_id"].nunique()
    n_test_groups = max(2, round(1 / test_fraction))
    if n_patients < n_test_groups + n_folds - 1:
        raise ValueError(
            f"splits: {n_patients} patients are too few for a 1/{n_test_groups} test split and "
            f"{n_folds} folds; lower splits.n_folds or add patients"
        )
    rest_index, test_index = _group_folds(scans, n_test_groups, seed, stratify)[0]
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
