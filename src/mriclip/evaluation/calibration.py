"""How far predicted probabilities are from observed frequencies, and a calibration that
brings them closer.

Users read ``prob_<class>`` as probabilities, so the scan-level scores are judged by their
expected calibration error (ECE) beside their AUC: the (n, K) probabilities of n scans and K
classes are pooled into n·K binary predictions, cut into ``n_bins`` equal-width bins of
predicted probability, and the ECE is the mean over bins of |observed frequency − mean
predicted probability|, weighted by each bin's share of predictions (Guo et al., 2017).

:func:`fit_calibration` fits Platt scaling on held-out scans: one logistic map
``σ(a · logit(p) + b)`` per target, shared by its classes, so that it is monotone (every AUC is
unchanged) and needs few scans. :func:`apply_calibration` applies it to ``prob_*`` columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

#: Probabilities are clipped this far from 0 and 1 before their logit.
_EPSILON = 1e-6


def expected_calibration_error(probabilities, labels, n_bins: int = 10) -> float:
    """ECE of probabilities against binary labels of the same shape (see the module
    docstring); 0 is perfectly calibrated, at most 1."""
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if probabilities.shape != labels.shape:
        raise ValueError(
            f"expected_calibration_error: {probabilities.size} probabilities but "
            f"{labels.size} labels"
        )
    if probabilities.size == 0:
        raise ValueError("expected_calibration_error: no predictions")
    if n_bins < 1:
        raise ValueError(f"expected_calibration_error: n_bins must be >= 1, got {n_bins}")
    if np.any((probabilities < 0) | (probabilities > 1)) or not np.all(np.isfinite(probabilities)):
        raise ValueError("expected_calibration_error: probabilities must lie in [0, 1]")
    # Bin b holds (b/n, (b+1)/n]; 0 goes to the first bin.
    bins = np.clip(np.ceil(probabilities * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        members = bins == b
        total += members.sum() * abs(labels[members].mean() - probabilities[members].mean())
    return float(total / probabilities.size)


def _logit(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(probabilities, _EPSILON, 1 - _EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def fit_platt(probabilities, labels) -> dict[str, float]:
    """Platt scaling ``{"slope": a, "intercept": b}`` of pooled (n, K) probabilities against
    their binary labels: the logistic regression of the label on ``logit(p)``. Needs both
    labels among the predictions."""
    x = _logit(np.asarray(probabilities, dtype=np.float64).ravel())[:, None]
    y = np.asarray(labels, dtype=int).ravel()
    if len(np.unique(y)) < 2:
        raise ValueError("fit_platt: the held-out labels are all of one class")
    model = LogisticRegression(C=1e6, max_iter=1000).fit(x, y)
    return {"slope": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])}


def calibrated(probabilities, platt: Mapping[str, float]) -> np.ndarray:
    """``σ(slope · logit(p) + intercept)`` elementwise."""
    z = platt["slope"] * _logit(np.asarray(probabilities, dtype=np.float64)) + platt["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


def fit_calibration(
    targets: Mapping[str, tuple[np.ndarray, np.ndarray]], columns: Mapping[str, Sequence[str]]
) -> dict:
    """A calibration record: for each target, the Platt map fitted on its held-out
    ``(probabilities, labels)`` and the ``prob_*`` columns it applies to. Targets whose
    held-out labels are all of one class are left uncalibrated (listed under ``skipped``)."""
    record: dict = {"method": "platt", "targets": {}, "skipped": {}}
    for name, (probabilities, labels) in targets.items():
        try:
            platt = fit_platt(probabilities, labels)
        except ValueError as error:
            record["skipped"][name] = str(error)
            continue
        record["targets"][name] = {**platt, "columns": list(columns[name])}
    return record


def apply_calibration(table, calibration: Mapping | None):
    """A copy of a table of ``prob_*`` columns with each calibrated target's columns mapped
    through its Platt scaling; the table itself when ``calibration`` is None or empty."""
    if not calibration or not calibration.get("targets"):
        return table
    table = table.copy()
    for target in calibration["targets"].values():
        present = [column for column in target["columns"] if column in table.columns]
        table[present] = calibrated(table[present].to_numpy(dtype=np.float64), target)
    return table


def calibrate_scores(scores: Mapping[str, float], calibration: Mapping | None) -> dict:
    """One scan's ``{prob_<class>: p}`` through :func:`apply_calibration` (a copy; unchanged
    without a calibration)."""
    row = apply_calibration(pd.DataFrame([dict(scores)]), calibration)
    return {column: float(value) for column, value in row.iloc[0].items()}
