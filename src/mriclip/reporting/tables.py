"""Metric tables: a level of a metrics output (the model beside its controls and the supervised
references) as table blocks, per class or per region, and the modality-gap sweep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mriclip.evaluation.modality_gap import gap_sweep_table
from mriclip.evaluation.protocol import LEVELS, level_key
from mriclip.evaluation.summary import CI_SUFFIX, OVERALL, metrics_table
from mriclip.reporting.blocks import (
    MISSING,
    Block,
    absent,
    format_estimate,
    format_interval,
    format_number,
    is_missing,
    metric_label,
    note,
    table,
)

#: The levels of a metrics output and their titles, in the order the report shows them.
LEVEL_TITLES = {level_key(level): f"{level.capitalize()} level" for level in LEVELS}
_ZERO_SHOT_OVERALL_ORDER = ("auc_macro", "auc_micro_pooled", "top1_accuracy", "top3_accuracy")
#: Comparisons one level of a metrics output may hold: key → column label, in display order.
COMPARISON_LABELS = {
    "model": "model",
    "lesion_ablated": "lesion-ablated",
    "before_alignment": "before alignment",
    "random": "random",
    "shuffled": "shuffled",
}
_COLUMN_NOTES = {
    "lesion-ablated": (
        "Lesion-ablated: the model on the same test scans without their lesions (the control)."
    ),
    "before alignment": "Before alignment: the same model (same seed) before CLIP training.",
    "random": "Random: exact expectation under a uniformly random ranking.",
    "shuffled": (
        "Shuffled: the same metrics on row-shuffled embeddings, mean ± standard error over "
        "permutations."
    ),
}
_BASELINE_LABELS = {
    "linear_probe": "linear probe",
    "early_fusion": "early fusion",
    "late_fusion": "late fusion",
}
#: The gap sweep's columns with short headers: the table has a row per λ and must stay narrow.
_GAP_SWEEP_COLUMNS = {
    "auc_macro": "macro AUC",
    "auc_micro_pooled": "micro AUC",
    "top1_accuracy": "top-1 accuracy",
    "top3_accuracy": "top-3 accuracy",
}


def _cells(metrics: Mapping | None, decimals: int) -> dict[tuple[str, str], str]:
    """{(metric, region): formatted value} of a metric dict, region "all" for overall rows."""
    if not metrics:
        return {}
    cells = {}
    for row in metrics_table(metrics).itertuples():
        if not is_missing(row.sem):
            cells[(row.metric, row.region)] = format_estimate(row.value, row.sem, decimals)
        else:
            cells[(row.metric, row.region)] = format_interval(
                row.value, row.ci_low, row.ci_high, decimals
            )
    return cells


def _regions_of(*metric_dicts: Mapping | None) -> list[str]:
    names: dict[str, None] = {}
    for metrics in metric_dicts:
        if metrics:
            names.update(dict.fromkeys(metrics.get("per_region", {})))
            names.update(dict.fromkeys(metrics.get("skipped_regions", {})))
    return list(names)


def _ordered_overall(metrics: Mapping, preferred: Sequence[str]) -> list[str]:
    present = [key for key in metrics.get("overall", {}) if not key.endswith(CI_SUFFIX)]
    return [key for key in preferred if key in present] + [
        key for key in present if key not in preferred
    ]


def skipped_note(metrics: Mapping) -> list[Block]:
    parts = [
        f"{name}: {reason}"
        for key in ("skipped_regions", "skipped_metrics")
        for name, reason in metrics.get(key, {}).items()
    ]
    return [note("Not scored — " + "; ".join(parts) + ".")] if parts else []


def comparison_columns(part: Mapping) -> dict[str, Mapping]:
    """{column label: metric dict} of one level of a metrics output: the model, then the
    references it holds (lesion-ablated, before alignment, random, shuffled), in that order."""
    return {
        label: part[key]
        for key, label in COMPARISON_LABELS.items()
        if isinstance(part.get(key), Mapping) and part[key]
    }


def baseline_level(baseline_metrics: Mapping) -> str:
    # The evaluation pipeline records where it fitted the baselines; scans when it does not.
    return f"{baseline_metrics.get('level', 'scan')}_level"


def baseline_parts(baseline_metrics: Mapping | None) -> dict[str, Mapping]:
    return {
        name: metrics
        for name, metrics in (baseline_metrics or {}).items()
        if isinstance(metrics, Mapping) and metrics
    }


def baseline_columns(baseline_metrics: Mapping | None, level: str) -> dict[str, Mapping]:
    """Supervised references fitted at ``level``, labelled; those with a caveat end in †."""
    parts = baseline_parts(baseline_metrics)
    if not parts or baseline_level(baseline_metrics) != level:
        return {}
    return {
        _BASELINE_LABELS.get(name, name) + (" †" if metrics.get("caveat") else ""): metrics
        for name, metrics in parts.items()
    }


def column_notes(columns: Mapping[str, Mapping]) -> list[Block]:
    """What the reference columns are (one line), then each baseline's caveat."""
    explained = [_COLUMN_NOTES[label] for label in columns if label in _COLUMN_NOTES]
    blocks = [note(" ".join(explained))] if explained else []
    # Baselines sharing one caveat (early and late fusion) get one footnote.
    by_caveat: dict[str, list[str]] = {}
    for label, metrics in columns.items():
        if metrics.get("caveat"):
            by_caveat.setdefault(metrics["caveat"], []).append(label.removesuffix(" †"))
    return blocks + [
        note(f"† {', '.join(labels)}: {caveat}.") for caveat, labels in by_caveat.items()
    ]


def zero_shot_table(
    columns: Mapping[str, Mapping], decimals: int = 3, class_label: str = "AUC"
) -> list[Block]:
    """Per-class AUC and the overall metrics, one column per metric dict.

    The first column is the model: its counts, skipped classes and metric order lead.
    """
    model = next(iter(columns.values()))
    cells = {label: _cells(metrics, decimals) for label, metrics in columns.items()}
    positives = model.get("counts", {}).get("n_positive", {})
    rows, classes = [], []
    for region in _regions_of(*columns.values()):
        rows.append(
            [f"{class_label} — {region}", positives.get(region, "")]
            + [cells[label].get(("auc", region), MISSING) for label in columns]
        )
        classes.append("")
    for index, metric in enumerate(_ordered_overall(model, _ZERO_SHOT_OVERALL_ORDER)):
        rows.append(
            [metric_label(metric), ""]
            + [cells[label].get((metric, OVERALL), MISSING) for label in columns]
        )
        classes.append("overall" if index == 0 else "")
    numeric = range(1, len(columns) + 2)
    blocks = [table(["metric", "positives", *columns], rows, numeric, row_classes=classes)]
    counts = model.get("counts", {})
    if "n_samples" in counts:
        blocks.append(note(f"{counts['n_samples']} samples evaluated."))
    return blocks + skipped_note(model) + column_notes(columns)


def region_metric_table(
    columns: Mapping[str, Mapping], metrics: Sequence[str], decimals: int = 3
) -> list[Block]:
    """Rows = regions and their mean; for each metric, one column per metric dict.

    The first column is the model; metrics it lacks are left out.
    """
    model = next(iter(columns.values()))
    cells = {label: _cells(metric_dict, decimals) for label, metric_dict in columns.items()}
    shown = [m for m in metrics if any(key[0] == m for key in next(iter(cells.values())))]
    if not shown:
        return [absent("None of " + ", ".join(map(metric_label, metrics)) + " was computed.")]
    relevant = model.get("counts", {}).get("n_relevant", {})
    rows, classes = [], []
    for region in [*_regions_of(*columns.values()), OVERALL]:
        row = ["mean over regions" if region == OVERALL else region, relevant.get(region, "")]
        for metric in shown:
            row += [cells[label].get((metric, region), MISSING) for label in columns]
        rows.append(row)
        classes.append("overall" if region == OVERALL else "")
    groups = [("", 2)] + [(metric_label(metric), len(columns)) for metric in shown]
    header = ["region", "relevant"] + list(columns) * len(shown)
    return [table(header, rows, range(1, len(header)), groups, classes)]


def gap_sweep_blocks(sweep: Mapping, decimals: int = 3) -> list[Block]:
    """Overall zero-shot metrics for each modality-gap shift λ (λ = 0: unshifted)."""
    sweep_table = gap_sweep_table(dict(sweep))
    overall = sweep_table[sweep_table["region"] == OVERALL]
    metrics = [m for m in _GAP_SWEEP_COLUMNS if m in set(overall["metric"])]
    rows = []
    for lam, group in overall.groupby("gap_lambda", sort=True):
        by_metric = {
            row.metric: format_estimate(row.value, row.sem, decimals) for row in group.itertuples()
        }
        label = f"{lam:g}" + (" (unshifted)" if lam == 0 else "")
        rows.append([label] + [by_metric.get(metric, MISSING) for metric in metrics])
    columns = ["λ"] + [_GAP_SWEEP_COLUMNS[metric] for metric in metrics]
    text = (
        "Images shifted by −λg/2 and prompts by +λg/2 (then renormalised), g = mean(image) − "
        "mean(text) on the training split"
    )
    if "gap_norm" in sweep:
        text += f"; |g| = {format_number(sweep['gap_norm'], decimals)}"
    return [table(columns, rows, range(1, len(columns))), note(text + ".")]
