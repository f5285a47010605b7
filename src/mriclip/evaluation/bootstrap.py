"""Patient-level bootstrap intervals for metric dicts.

Scans of one patient are not independent (same anatomy, often the same lesions), so the
resampling unit is the patient: each resample draws patients with replacement and keeps all
their samples. The metric function runs on every resample; the percentile interval of each
chosen value is stored beside it as ``<name>_ci: [low, high]`` (e.g. ``auc_macro_ci``).
Resamples where a value cannot be computed (a region left with one class) are left out of
that value's interval; ``bootstrap`` in the result says how many resamples there were.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: The metric names that get intervals (AUCs, MRRs, mAP, calibration error) wherever they
#: appear in a dict.
INTERVAL_METRICS = (
    "auc",
    "auc_macro",
    "auc_micro_pooled",
    "class_mrr",
    "mrr",
    "average_precision",
    "ece",
)


def _leaves(metrics: Mapping, names: Sequence[str], path: tuple = ()) -> dict[tuple, float]:
    found = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            found.update(_leaves(value, names, (*path, key)))
        elif key in names and isinstance(value, (int, float)) and not isinstance(value, bool):
            found[(*path, key)] = float(value)
    return found


def _set(metrics: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        metrics = metrics[key]
    metrics[path[-1]] = value


def with_bootstrap_intervals(
    metric_fn: Callable[[np.ndarray], dict],
    groups: Sequence[str],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    names: Sequence[str] = INTERVAL_METRICS,
) -> dict:
    """``metric_fn`` on all samples, with a ``<name>_ci`` beside every value named in
    ``names``.

    Args:
        metric_fn: sample indices (into the rows the metric is about) -> metric dict.
        groups: the resampling unit of each sample (its patient id).
        n_resamples: bootstrap resamples; 0 computes the point estimates only.
        confidence: the interval's coverage, e.g. 0.95 for the 2.5th-97.5th percentiles.
        seed: seeds the resampling.
    """
    if n_resamples < 0:
        raise ValueError(f"bootstrap n_resamples must be >= 0, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap confidence must be in (0, 1), got {confidence}")
    groups = np.asarray(groups)
    point = metric_fn(np.arange(len(groups)))
    result = copy.deepcopy(point)
    result["bootstrap"] = {
        "unit": "patient",
        "n_resamples": int(n_resamples),
        "confidence": confidence,
    }
    if n_resamples == 0:
        return result
    estimates = _leaves(point, names)
    units, unit_of_sample = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(unit_of_sample == u) for u in range(len(units))]
    rng = np.random.default_rng(seed)
    draws: dict[tuple, list[float]] = {path: [] for path in estimates}
    for _ in range(n_resamples):
        chosen = rng.integers(len(units), size=len(units))
        indices = np.concatenate([members[u] for u in chosen])
        try:
            values = _leaves(metric_fn(indices), names)
        except ValueError:  # e.g. every resampled sample of one class: nothing to score
            continue
        for path, value in values.items():
            if path in draws:
                draws[path].append(value)
    tail = (1 - confidence) / 2 * 100
    for path, values in draws.items():
        interval = None
        if values:
            low, high = np.percentile(values, [tail, 100 - tail])
            interval = [float(low), float(high)]
        _set(result, (*path[:-1], f"{path[-1]}_ci"), interval)
    return result
