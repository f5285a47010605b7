"""What the benchmark scripts that compare whole pipeline runs share: a Kedro session run in
this process, the evaluation's metrics read with their bootstrap intervals, table cells.

Imported by ``alignment_methods.py`` and ``pretraining_ablation.py`` (run as
``python benchmarks/<script>.py``, which puts this folder on the import path).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from kedro.framework.context import KedroContext
from kedro.framework.session import KedroSession
from omegaconf import OmegaConf

from mriclip.evaluation.summary import CI_SUFFIX
from mriclip.reporting.blocks import MISSING, format_interval

PROJECT = Path(__file__).resolve().parents[1]

# The zero-shot evaluation's headline figures, each beside its lesion-ablated control (the
# same test scans with their lesions removed): a score that does not fall without the lesions
# is read from anatomy and position. Name -> path in zero_shot_metrics.
ZERO_SHOT_COLUMNS = {
    "scan AUC": "scan_level.model.overall.auc_macro",
    "scan AUC ablated": "scan_level.lesion_ablated.overall.auc_macro",
    "lesion AUC": "lesion_level.model.overall.auc_macro",
    "lesion AUC ablated": "lesion_level.lesion_ablated.overall.auc_macro",
}

Estimate = tuple[float | None, Sequence[float] | None]  # value, [low, high] or None


def run_pipelines(
    pipelines: Sequence[str],
    runtime_params: Mapping,
    env: str | None = None,
    tags: Sequence[str] | None = None,
) -> tuple[float, KedroContext]:
    """Run ``pipelines`` (only the nodes with one of ``tags``, if given) in one session;
    returns its wall seconds and its context, whose catalog loads the latest outputs."""
    start = time.perf_counter()
    with KedroSession.create(
        project_path=PROJECT, env=env, runtime_params=dict(runtime_params)
    ) as session:
        session.run(pipeline_names=list(pipelines), tags=tags)
        seconds = time.perf_counter() - start
        context = session.load_context()
    end_tracking_run()
    return seconds, context


def end_tracking_run() -> None:
    """With the mlflow extra, kedro-mlflow leaves the session's run active; the next
    session would log its other parameters into it, which mlflow refuses."""
    try:
        import mlflow
    except ImportError:
        return
    while mlflow.active_run() is not None:
        mlflow.end_run()


def dotted_params(text: str) -> dict:
    """``kedro run --params`` syntax ("a.b=1,c=x") as a nested dict, parsed as Kedro does."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    malformed = [item for item in items if "=" not in item]
    if malformed:
        raise SystemExit(f"--params items need key=value: {malformed}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(items))


def merged(*changes: Mapping) -> dict:
    """Nested parameter changes merged left to right (the later ones win)."""
    return OmegaConf.to_container(OmegaConf.merge(*changes))


def metric_with_interval(metrics: Mapping, path: str) -> Estimate:
    """The value at the dotted ``path`` and its bootstrap interval (the ``<name>_ci`` beside
    it); (None, None) where the run did not compute it (e.g. a level without lesions)."""
    *parents, name = path.split(".")
    node = metrics
    for key in parents:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return None, None
    return node.get(name), node.get(name + CI_SUFFIX)


def zero_shot_estimates(zero_shot_metrics: Mapping) -> dict[str, Estimate]:
    return {
        name: metric_with_interval(zero_shot_metrics, path)
        for name, path in ZERO_SHOT_COLUMNS.items()
    }


def cell(estimate: Estimate) -> str:
    """ "0.81 [0.77, 0.87]"; the value alone without an interval, — without a value."""
    value, interval = estimate
    if value is None:
        return MISSING
    low, high = interval if interval is not None else (None, None)
    return format_interval(value, low, high, decimals=2)
