"""ROC AUC and average precision of one binary problem, computed from ranks.

They give exactly what ``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` give
(ties included: a tied positive/negative pair counts one half for the AUC, and tied samples
form one threshold for the AP), about a hundred times faster, which is what bootstrap
intervals over hundreds of resamples need.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2
    (the Mann-Whitney U statistic over n_pos · n_neg). Needs both classes."""
    positive = np.asarray(labels).astype(bool)
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    if n_positive == 0 or n_negative == 0:
        raise ValueError("roc_auc needs positive and negative samples")
    ranks = rankdata(scores)
    return float(
        (ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)
    )


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Σ over distinct score thresholds (highest first) of recall gained × precision there."""
    relevant = np.asarray(labels).astype(bool)
    n_relevant = int(relevant.sum())
    if n_relevant == 0:
        raise ValueError("average_precision needs at least one relevant sample")
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    sorted_scores = np.asarray(scores, dtype=float)[order]
    hits = np.cumsum(relevant[order])
    # The last position of each group of tied scores is where its threshold's counts stand.
    group_end = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(sorted_scores) - 1]
    true_positives = hits[group_end]
    precision = true_positives / (group_end + 1)
    recall_gain = np.diff(np.r_[0, true_positives]) / n_relevant
    return float(np.sum(recall_gain * precision))
