"""Experiment tracking in MLflow: training histories as per-step metrics, nested metric dicts
as dotted metric keys, Optuna trials as child runs, files as artifacts.

Plain functions over an ``mlflow.MlflowClient`` and a run id; ``mriclip.hooks`` calls them
for the run kedro-mlflow opens. mlflow is imported only here, so the project runs without it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from numbers import Real
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

#: mlflow accepts at most this many metrics per ``log_batch`` call.
BATCH_SIZE = 1000

#: Optuna trial state -> status of its mlflow run (PRUNED and still-running trials: KILLED).
RUN_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED"}


def metric_key(name: str) -> str:
    """``name`` with the characters mlflow refuses in metric and param keys replaced by ``_``."""
    return re.sub(r"[^\w\-. /:]", "_", name)


def _number(value: Any) -> float | None:
    """A finite number as float; None for anything else (bools and NaN included)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def flatten_metrics(nested: Mapping, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested metrics dict under dotted keys. A ``[low, high]`` pair of
    numbers (a confidence interval) becomes ``<key>_low`` and ``<key>_high``; strings,
    non-finite numbers and other lists are skipped."""
    flat = {}
    for key, value in nested.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{path}."))
        elif _number(value) is not None:
            flat[metric_key(path)] = _number(value)
        elif isinstance(value, list | tuple) and len(value) == 2:
            low, high = (_number(v) for v in value)
            if low is not None and high is not None:
                flat[metric_key(f"{path}_low")], flat[metric_key(f"{path}_high")] = low, high
    return flat


def history_metrics(history: pd.DataFrame, prefix: str) -> list[Metric]:
    """One metric per numeric column of a training history, at the row's ``step``."""
    timestamp = int(time.time() * 1000)
    steps = history["step"] if "step" in history else pd.Series(range(len(history)))
    metrics = []
    for column in history.columns.drop("step", errors="ignore"):
        values = pd.to_numeric(history[column], errors="coerce")
        key = metric_key(f"{prefix}.{column}")
        for step, value in zip(steps, values, strict=True):
            if _number(value) is not None:
                metrics.append(Metric(key, float(value), timestamp, int(step)))
    return metrics


def log_metrics(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for start in range(0, len(metrics), BATCH_SIZE):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH_SIZE])


def log_metric_dict(client: MlflowClient, run_id: str, nested: Mapping, prefix: str) -> None:
    timestamp = int(time.time() * 1000)
    flat = flatten_metrics(nested, f"{prefix}.")
    log_metrics(client, run_id, [Metric(k, v, timestamp, 0) for k, v in flat.items()])


def log_trials(client: MlflowClient, parent_run_id: str, trials: pd.DataFrame) -> list[str]:
    """One child run of ``parent_run_id`` per row of Optuna's trials table (``number``,
    ``state``, ``value``, ``params_*``, ``user_attrs_*`` columns); returns their run ids."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    timestamp = int(time.time() * 1000)
    run_ids = []
    for trial in trials.to_dict("records"):
        number, state = int(trial["number"]), str(trial["state"])
        tags = {
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            "optuna.trial_number": str(number),
            "optuna.state": state,
        }
        params = []
        for column, value in trial.items():
            if pd.isna(value):
                continue
            if column.startswith("params_"):
                params.append(Param(metric_key(column.removeprefix("params_")), str(value)))
            elif column.startswith("user_attrs_"):  # e.g. why a trial failed
                tags[f"optuna.{column.removeprefix('user_attrs_')}"] = str(value)[:5000]
        value = _number(trial.get("value"))
        start, end = _trial_times(trial)
        run = client.create_run(
            experiment_id, start_time=start, run_name=f"trial {number}", tags=tags
        )
        client.log_batch(
            run.info.run_id,
            metrics=[] if value is None else [Metric("value", value, timestamp, 0)],
            params=params,
        )
        client.set_terminated(run.info.run_id, RUN_STATUS.get(state, "KILLED"), end_time=end)
        run_ids.append(run.info.run_id)
    return run_ids


def _trial_times(trial: Mapping) -> tuple[int | None, int | None]:
    """When the trial started and ended, in ms since the epoch (None where unknown)."""
    start = pd.Timestamp(trial.get("datetime_start"))
    if pd.isna(start):
        return None, None
    duration = pd.Timedelta(trial.get("duration"))
    end = None if pd.isna(duration) else int((start + duration).timestamp() * 1000)
    return int(start.timestamp() * 1000), end
