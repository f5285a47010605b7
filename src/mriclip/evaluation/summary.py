"""Fold aggregation (mean ± standard error) and tidy tables of metric dicts for reports.

Metric dicts from ``zero_shot``, ``retrieval`` and ``baselines`` share one shape:
``per_region`` {region: {metric: value}}, ``overall`` {metric: value}, plus bookkeeping keys
(``skipped_regions``, ``counts``, …). ``mean_and_sem`` keeps that shape; ``metrics_table``
flattens ``per_region`` and ``overall`` into rows.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import sem

OVERALL = "all"  # the region label of macro/pooled rows in metrics_table
TABLE_COLUMNS = ["task", "metric", "region", "value", "sem", "n", "ci_low", "ci_high", "baseline"]
CI_SUFFIX = "_ci"  # bootstrap intervals stored beside a value: auc_macro_ci = [low, high]


def _is_number(value: Any) -> bool:
    # bool is an Integral in Python, but flags like uses_sample_text are not metrics.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _aggregate(nodes: list[Mapping], path: str) -> dict[str, Any]:
    keys = list(dict.fromkeys(key for node in nodes for key in node))
    result: dict[str, Any] = {}
    for key in keys:
        where = f"{path}.{key}" if path else str(key)
        # A key missing from a fold (region skipped there) or None simply has fewer values: n
        # in the result says how many folds contributed.
        values = [node[key] for node in nodes if node.get(key) is not None]
        mappings = [value for value in values if isinstance(value, Mapping)]
        numeric = [value for value in values if _is_number(value)]
        if mappings and len(mappings) != len(values):
            raise ValueError(f"mean_and_sem: '{where}' is a dict in some folds but not in others")
        if mappings:
            result[key] = _aggregate(mappings, where)
        elif numeric and len(numeric) == len(values):
            array = np.asarray(numeric, dtype=float)
            result[key] = {
                "mean": float(array.mean()),
                # One fold has no spread to estimate; None rather than NaN says so explicitly.
                "sem": float(sem(array)) if len(array) > 1 else None,
                "n": len(array),
            }
        elif values:
            # Labels and notes (method names, skip reasons): one value if the folds agree.
            distinct = list(dict.fromkeys(map(str, values)))
            result[key] = values[0] if len(distinct) == 1 else distinct
    return result


def mean_and_sem(fold_metrics: Sequence[Mapping]) -> dict[str, Any]:
    """Mean, standard error (ddof=1, as scipy.stats.sem) and count of every numeric leaf.

    Nested dicts keep their structure; each number becomes {"mean", "sem", "n"}, where ``n``
    counts the folds that had the value (a region skipped in one fold has a smaller n) and
    ``sem`` is None when n = 1. Non-numeric leaves are kept if all folds agree, else listed.
    """
    folds = list(fold_metrics)
    if not folds:
        raise ValueError("mean_and_sem: fold_metrics is empty")
    for index, fold in enumerate(folds):
        if not isinstance(fold, Mapping):
            raise ValueError(f"mean_and_sem: fold {index} is a {type(fold).__name__}, not a dict")
    return _aggregate(folds, "")


def _value_parts(leaf: Any) -> tuple[float | None, float | None, int | None]:
    """(value, sem, n) of a plain number or of a mean_and_sem leaf."""
    if isinstance(leaf, Mapping):
        return leaf.get("mean"), leaf.get("sem"), leaf.get("n")
    return float(leaf), None, None


def _metric_leaves(metrics: Mapping) -> dict[tuple[str, str], Any]:
    leaves = {}
    groups = [*metrics.get("per_region", {}).items(), (OVERALL, metrics.get("overall", {}))]
    for region, region_metrics in groups:
        for metric, leaf in region_metrics.items():
            if not metric.endswith(CI_SUFFIX):
                leaves[(metric, region)] = leaf
    return leaves


def _interval(metrics: Mapping, metric: str, region: str) -> tuple[float | None, float | None]:
    group = metrics.get("overall", {}) if region == OVERALL else metrics["per_region"][region]
    interval = group.get(metric + CI_SUFFIX)
    return (None, None) if not interval else (interval[0], interval[1])


def metrics_table(
    metrics: Mapping, baseline: Mapping | None = None, task: str | None = None
) -> pd.DataFrame:
    """Tidy rows ``task, metric, region, value, sem, n, ci_low, ci_high, baseline`` from a
    metric dict (``ci_*``: its bootstrap interval, empty without one).

    ``metrics`` and ``baseline`` are plain metric dicts or ``mean_and_sem`` results; the
    baseline (e.g. a random baseline) is matched by (metric, region). Overall rows have region
    ``"all"``. ``sem`` and ``n`` are empty for single-run dicts, ``baseline`` where none matches.
    """
    if "per_region" not in metrics and "overall" not in metrics:
        raise ValueError("metrics_table: metrics has neither 'per_region' nor 'overall' keys")
    baseline_leaves = _metric_leaves(baseline) if baseline is not None else {}
    rows = []
    for (metric, region), leaf in _metric_leaves(metrics).items():
        value, error, count = _value_parts(leaf)
        reference = baseline_leaves.get((metric, region))
        low, high = _interval(metrics, metric, region)
        rows.append(
            {
                "task": task,
                "metric": metric,
                "region": region,
                "value": value,
                "sem": error,
                "n": count,
                "ci_low": low,
                "ci_high": high,
                "baseline": None if reference is None else _value_parts(reference)[0],
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
