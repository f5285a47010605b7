"""One self-contained HTML report of a run: headline, data, results, figures, settings.

``render_report`` assembles the run's tables, metric dicts, figures and metadata into *blocks*
(headings, tables of formatted cells, notes, figures) and renders them with the Jinja2 template
``templates/report.html.j2`` (autoescaped: scan ids, problem texts and parameter values from data
can never inject markup) and ``templates/report.css``; the figures are embedded as base64 PNG,
so the single file can be mailed or archived. Every part is optional in the sense that a
missing or empty one is *stated* in the report ("not computed in this run").

Metric dicts have the shape of ``zero_shot``, ``retrieval`` and ``baselines`` (plain numbers,
``summary.mean_and_sem`` leaves shown as "mean ± sem", and bootstrap intervals stored beside a
value as ``<name>_ci``, shown as "value [low, high]"); the run's layout around them is::

    zero_shot_metrics = {"prompts": {...},
                         "scan_level": {"model": M, "lesion_ablated": M, "before_alignment": M,
                                        "random": B},
                         "lesion_level": {... , "gap_sweep": S},
                         "lesion_detection": {"model": {"auc", "auc_ci", ...}, ...},
                         "targets": {"diagnosis": {"model": M, ...}}}
    retrieval_metrics = {"scan_level": {"model": M, "lesion_ablated": M, "random": B,
                                        "shuffled": B}, "lesion_level": {...}}
    baseline_metrics  = {"level": "scan" | "lesion", "linear_probe": M,
                         "early_fusion": M, "late_fusion": M}

The headline is scan level, what a user gets on a new scan, beside its lesion-ablated
control; the paper's lesion-level protocol follows with its own control.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.resources import files
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from mriclip.evaluation.modality_gap import gap_sweep_table
from mriclip.evaluation.summary import CI_SUFFIX, OVERALL, metrics_table

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MISSING = "—"
_NOT_SET = object()
LEVELS = {"scan_level": "Scan level", "lesion_level": "Lesion level"}
DEFAULT_SETTINGS_SHOWN = (
    "seed",
    "regions",
    "data_engineering.preprocessing",
    "pretraining",
    "alignment",
)
Block = dict[str, Any]

#: Figure name → caption, in the order the report shows them.
FIGURE_CAPTIONS = {
    "evidence": (
        "Where the model sees lesions: test scans (axial slice through the largest lesion) with "
        "their true lesions outlined (green), the lesion evidence 1 − p(no lesion) of the "
        "patches blended over the slice, and the same on the scan's lesion-ablated twin."
    ),
    "training_curves": (
        "Alignment training: contrastive loss (and validation loss), temperature and learning "
        "rates by step."
    ),
    "roc": (
        "Scan-level zero-shot one-vs-rest ROC curve per region on the test split; dashed: chance."
    ),
    "tsne": (
        "t-SNE of image (circles) and text (triangles) embeddings before and after alignment, "
        "coloured by region. Images and texts forming two separate clouds show a modality gap."
    ),
    "retrieval_grid": (
        "Retrieval: for each region prompt (rows) the best-scored test scans (middle slice) with "
        "their score; green frame: the scan has a lesion in that region, red: it has not."
    ),
    "reconstruction": (
        "Masked-autoencoder pretraining on held-out volumes: input, masked input and "
        "reconstruction (middle axial slices)."
    ),
}

#: What each level measures: said in the report's header, next to the headline.
MEASURES = (
    "Scan level: the whole test scan, covered by patches each scored against every region "
    "prompt and the no-lesion prompt, aggregated per region — what mriclip gives for a new "
    "scan without annotations.",
    "Lesion-ablated: the same metric on the same test scans with their lesions removed "
    "(phantom: rendered again with invisible lesions; user data: the labelled lesions "
    "inpainted). A score that comes from the lesions falls to chance there.",
    "Lesion detection: lesion versus lesion-free test patches, scored by 1 − p(no lesion).",
    "Lesion level (the paper's protocol): a cube centred on each annotated lesion. The cube's "
    "position in the head alone can give away the region, so read it beside its ablated control.",
)

_METRIC_LABELS = {
    "auc": "AUC",
    "auc_macro": "AUC, macro mean over regions",
    "auc_micro_pooled": "AUC, micro (pooled; the paper's 'AUC average')",
    "class_mrr": "MRR of the true region",
    "mrr": "MRR",
    "average_precision": "AP (mean: mAP)",
    "r_precision": "R-precision",
    "reference_mrr": "reference MRR",
    "reference_map": "reference mAP",
}
_ZERO_SHOT_OVERALL_ORDER = ("auc_macro", "auc_micro_pooled", "top1_accuracy", "top3_accuracy")
#: Comparisons one level of a metrics output may hold: key → column label, in display order.
_COMPARISON_LABELS = {
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
_STANDARD_RETRIEVAL = ("mrr", "average_precision", "r_precision")
_REFERENCE_RETRIEVAL = ("reference_mrr", "reference_map")
#: The gap sweep's columns with short headers: the table has a row per λ and must stay narrow.
_GAP_SWEEP_COLUMNS = {
    "auc_macro": "macro AUC",
    "auc_micro_pooled": "micro AUC",
    "top1_accuracy": "top-1 accuracy",
    "top3_accuracy": "top-3 accuracy",
}

# --- formatting ------------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and math.isnan(value))


def format_number(value: Any, decimals: int = 3) -> str:
    """A cell: floats to ``decimals`` places, ints as they are, bools yes/no, missing as —.

    A ``mean_and_sem`` leaf {"mean", "sem", "n"} becomes "mean ± sem".
    """
    if isinstance(value, Mapping) and "mean" in value:
        return format_estimate(value["mean"], value.get("sem"), decimals)
    if _is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.{decimals}f}"
    return str(value)


def format_estimate(value: Any, error: Any, decimals: int = 3) -> str:
    """The value, with "± error" when there is a standard error (fold summaries)."""
    if _is_missing(error):
        return format_number(value, decimals)
    return f"{format_number(value, decimals)} ± {format_number(error, decimals)}"


def metric_label(metric: str) -> str:
    """A readable name of a metric key (top3_accuracy → "top-3 accuracy")."""
    top_k = re.fullmatch(r"top(\d+)_accuracy", metric)
    if top_k:
        return f"top-{top_k.group(1)} accuracy"
    precision_at = re.fullmatch(r"precision_at_(\d+)", metric)
    if precision_at:
        return f"P@{precision_at.group(1)}"
    return _METRIC_LABELS.get(metric, metric.replace("_", " "))


# --- blocks: what the template renders ------------------------------------------------------


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Iterable[int] = (),
    groups: Sequence[tuple[str, int]] | None = None,
    row_classes: Sequence[str] | None = None,
) -> Block:
    """A table of formatted cells; ``numeric`` column indices are right-aligned, ``groups``
    adds a header row of (label, span), ``row_classes`` a CSS class per body row."""
    return {
        "kind": "table",
        "columns": [str(c) for c in columns],
        "rows": [[str(cell) for cell in row] for row in rows],
        "numeric": set(numeric),
        "groups": list(groups or []),
        "row_classes": list(row_classes or []),
    }


def note(text: str) -> Block:
    return {"kind": "note", "text": text}


def absent(text: str) -> Block:
    return {"kind": "absent", "text": text}


def heading(text: str, level: int = 3) -> Block:
    return {"kind": "heading", "text": text, "level": level}


def figure_png(figure: bytes | Figure) -> bytes:
    """PNG bytes of a figure: bytes as a ``FigurePNGDataset`` loads them, or a live Figure
    (when the figure reaches the report in memory, e.g. in a single-process test run)."""
    if isinstance(figure, Figure):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        return buffer.getvalue()
    png = bytes(figure)
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("figure_png: the figure bytes are not a PNG image")
    return png


def _figure(name: str, figure: bytes | Figure | None) -> list[Block]:
    caption = FIGURE_CAPTIONS.get(name, name.replace("_", " "))
    if figure is None:
        return [heading(name.replace("_", " ")), absent("Figure not produced in this run.")]
    encoded = base64.b64encode(figure_png(figure)).decode("ascii")
    return [{"kind": "figure", "src": f"data:image/png;base64,{encoded}", "caption": caption}]


# --- metric tables ---------------------------------------------------------------------------


def format_interval(value: Any, low: Any, high: Any, decimals: int = 3) -> str:
    """ "value [low, high]" for a bootstrap interval, the value alone without one."""
    if _is_missing(low) or _is_missing(high):
        return format_number(value, decimals)
    return f"{format_number(value, decimals)} [{low:.{decimals}f}, {high:.{decimals}f}]"


def _cells(metrics: Mapping | None, decimals: int) -> dict[tuple[str, str], str]:
    """{(metric, region): formatted value} of a metric dict, region "all" for overall rows."""
    if not metrics:
        return {}
    cells = {}
    for row in metrics_table(metrics).itertuples():
        if not _is_missing(row.sem):
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


def _skipped_note(metrics: Mapping) -> list[Block]:
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
        for key, label in _COMPARISON_LABELS.items()
        if isinstance(part.get(key), Mapping) and part[key]
    }


def _baseline_level(baseline_metrics: Mapping) -> str:
    # The evaluation pipeline records where it fitted the baselines; scans when it does not.
    return f"{baseline_metrics.get('level', 'scan')}_level"


def _baseline_parts(baseline_metrics: Mapping | None) -> dict[str, Mapping]:
    return {
        name: metrics
        for name, metrics in (baseline_metrics or {}).items()
        if isinstance(metrics, Mapping) and metrics
    }


def baseline_columns(baseline_metrics: Mapping | None, level: str) -> dict[str, Mapping]:
    """Supervised references fitted at ``level``, labelled; those with a caveat end in †."""
    parts = _baseline_parts(baseline_metrics)
    if not parts or _baseline_level(baseline_metrics) != level:
        return {}
    return {
        _BASELINE_LABELS.get(name, name) + (" †" if metrics.get("caveat") else ""): metrics
        for name, metrics in parts.items()
    }


def _column_notes(columns: Mapping[str, Mapping]) -> list[Block]:
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
    return blocks + _skipped_note(model) + _column_notes(columns)


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


# --- the headline ----------------------------------------------------------------------------


def _nested(mapping: Mapping | None, path: Sequence[str], default: Any = None) -> Any:
    """mapping[path[0]][path[1]]…, or ``default`` where a key is missing."""
    node: Any = mapping
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def headline(
    zero_shot_metrics: Mapping | None,
    retrieval_metrics: Mapping | None,
    baseline_metrics: Mapping | None,
    decimals: int = 3,
) -> str:
    """One line, scan level first: zero-shot macro AUC with its interval beside its
    lesion-ablated control and random, lesion detection, retrieval MRR, the linear probe,
    then the paper's lesion-level AUC beside its control."""

    def value(metrics: Mapping | None, *path: str) -> str:
        found = _nested(metrics, path)
        return "n/a" if found is None else format_number(found, decimals)

    def with_interval(metrics: Mapping | None, *path: str) -> str:
        found = _nested(metrics, path)
        interval = _nested(metrics, (*path[:-1], path[-1] + CI_SUFFIX))
        if found is None:
            return "n/a"
        return format_interval(found, *(interval or (None, None)), decimals=decimals)

    auc = ("overall", "auc_macro")
    mrr = ("overall", "mrr")
    scan, lesion = "scan_level", "lesion_level"
    probe_level = _baseline_level(baseline_metrics) if _baseline_parts(baseline_metrics) else scan
    probe = baseline_columns(baseline_metrics, probe_level).get("linear probe")
    parts = [
        f"Scan-level zero-shot macro AUC {with_interval(zero_shot_metrics, scan, 'model', *auc)} "
        f"(lesion-ablated {value(zero_shot_metrics, scan, 'lesion_ablated', *auc)}, "
        f"random {value(zero_shot_metrics, scan, 'random', *auc)})",
        f"lesion detection AUC "
        f"{with_interval(zero_shot_metrics, 'lesion_detection', 'model', 'auc')} "
        f"(lesion-ablated {value(zero_shot_metrics, 'lesion_detection', 'lesion_ablated', 'auc')})",
        f"retrieval MRR {value(retrieval_metrics, scan, 'model', *mrr)} "
        f"(random {value(retrieval_metrics, scan, 'random', *mrr)})",
        f"linear probe AUC {value(probe, *auc)} ({LEVELS[probe_level].lower()})",
        f"lesion-level (the paper's protocol) AUC "
        f"{with_interval(zero_shot_metrics, lesion, 'model', *auc)} "
        f"(lesion-ablated {value(zero_shot_metrics, lesion, 'lesion_ablated', *auc)})",
    ]
    return " · ".join(parts)


# --- sections --------------------------------------------------------------------------------


def _region_list(text: Any) -> list[str]:
    if _is_missing(text):
        return []
    return [region.strip() for region in str(text).split(";") if region.strip()]


def _region_counts(
    sentences: pd.DataFrame, lesions: pd.DataFrame, splits: pd.DataFrame, regions: Sequence[str]
) -> list[Block]:
    """Lesions per region (label maps / lesions.csv) and scans per region, by split."""
    if {"scan_id", "regions"} <= set(sentences.columns):
        scan_regions = (
            sentences[["scan_id"]]
            .assign(region=sentences["regions"].map(_region_list))
            .explode("region")
            .dropna(subset=["region"])
        )
    else:
        scan_regions = pd.DataFrame(columns=["scan_id", "region"])
    if {"scan_id", "split"} <= set(splits.columns):
        scan_regions["split"] = scan_regions["scan_id"].map(splits.set_index("scan_id")["split"])
    else:
        scan_regions["split"] = None
    lesion_counts = (
        lesions["region"].value_counts() if "region" in lesions else pd.Series(dtype=int)
    )
    names = list(dict.fromkeys([*regions, *lesion_counts.index, *scan_regions["region"]]))
    if not names:
        return []
    rows = []
    for region in names:
        in_region = scan_regions[scan_regions["region"] == region]
        rows.append(
            [
                region,
                int(lesion_counts.get(region, 0)),
                in_region["scan_id"].nunique(),
                int((in_region["split"] == "train").sum()),
                int((in_region["split"] == "test").sum()),
            ]
        )
    columns = ["region", "lesions", "scans", "train scans", "test scans"]
    blocks = [heading("Regions"), table(columns, rows, range(1, 5))]
    if "n_lesions" in sentences:
        blocks.append(note(f"{int((sentences['n_lesions'] == 0).sum())} scans without a lesion."))
    return blocks


def _split_sizes(splits: pd.DataFrame) -> list[Block]:
    blocks = [heading("Splits (by patient)")]
    if not {"split", "fold", "scan_id", "patient_id"} <= set(splits.columns):
        return blocks + [absent("No split table in this run.")]
    test = splits[splits["split"] == "test"]
    train = splits[splits["split"] == "train"]
    rows = [["test (held out)", len(test), test["patient_id"].nunique()]]
    for fold, part in train.groupby("fold", sort=True):
        rows.append([f"train, fold {fold}", len(part), part["patient_id"].nunique()])
    rows.append(["train, all folds", len(train), train["patient_id"].nunique()])
    return blocks + [table(["part", "scans", "patients"], rows, (1, 2))]


def _problems(catalog_problems: pd.DataFrame | None) -> list[Block]:
    blocks = [heading("Skipped items")]
    if catalog_problems is None:
        return blocks + [absent("The problems table is absent from this run.")]
    if catalog_problems.empty:
        return blocks + [note("No problems: every scan and table row passed validation.")]
    columns = [c for c in ("stage", "scan_id", "item", "problem", "fix") if c in catalog_problems]
    columns += [c for c in catalog_problems.columns if c not in columns]
    rows = catalog_problems[columns]
    return blocks + [table(columns, rows.astype(object).where(rows.notna(), "").values)]


def data_section(
    nifti_catalog: pd.DataFrame | None,
    catalog_problems: pd.DataFrame | None,
    scan_sentences: pd.DataFrame | None,
    splits: pd.DataFrame | None,
    lesion_table: pd.DataFrame | None,
    regions: Sequence[str] = (),
) -> list[Block]:
    """Counts of scans, patients, lesions, regions and splits, and every skipped item."""
    sentences = scan_sentences if scan_sentences is not None else pd.DataFrame()
    lesions = lesion_table if lesion_table is not None else pd.DataFrame()
    splits = splits if splits is not None else pd.DataFrame()
    facts = []
    if nifti_catalog is not None:
        facts.append(("scans found", len(nifti_catalog)))
    facts += [
        ("scans used", len(sentences)),
        ("patients", sentences["patient_id"].nunique() if "patient_id" in sentences else None),
        ("lesions", len(lesions) if lesion_table is not None else None),
    ]
    if "split" in splits:
        facts += [
            (f"{side} scans", int((splits["split"] == side).sum())) for side in ("train", "test")
        ]
    facts.append(("problems", len(catalog_problems) if catalog_problems is not None else None))
    cards = {"kind": "cards", "facts": [(label, format_number(v)) for label, v in facts]}
    return (
        [cards]
        + _region_counts(sentences, lesions, splits, regions)
        + _split_sizes(splits)
        + _problems(catalog_problems)
    )


class _SettingsDumper(yaml.SafeDumper):
    """Block-style YAML, except lists of plain values stay on one line ([32, 32, 32])."""


def _represent_list(dumper: yaml.SafeDumper, items: list) -> yaml.Node:
    flat = all(not isinstance(item, (Mapping, list, tuple)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_SettingsDumper.add_representer(list, _represent_list)
_SettingsDumper.add_representer(tuple, _represent_list)


def settings_section(parameters: Mapping | None, shown: Sequence[str]) -> list[Block]:
    """The chosen parameter groups: single values in a table, groups as YAML blocks.

    Groups not in ``parameters`` are named rather than silently left out.
    """
    if not parameters:
        return [absent("The run's parameters were not passed to the report.")]
    values, groups, missing = [], [], []
    for path in shown:
        # A sentinel, since a parameter may legitimately be null.
        value = _nested(parameters, path.split("."), default=_NOT_SET)
        if value is _NOT_SET:
            missing.append(path)
            continue
        if not isinstance(value, Mapping):
            shown_value = ", ".join(map(str, value)) if isinstance(value, list) else value
            values.append([path, format_number(shown_value)])
            continue
        text = yaml.dump(dict(value), Dumper=_SettingsDumper, sort_keys=False, width=1000)
        groups.append((path, text))
    blocks = [table(["parameter", "value"], values)] if values else []
    blocks.append({"kind": "settings", "groups": groups})
    if missing:
        blocks.append(note("Not set in this run: " + ", ".join(missing) + "."))
    return blocks


def _metrics_by_level(
    metrics: Mapping | None, render: Callable[[str, Mapping], list[Block]], name: str
) -> list[Block]:
    blocks = []
    for level, title in LEVELS.items():
        part = (metrics or {}).get(level)
        blocks.append(heading(title))
        if not part or not part.get("model"):
            blocks.append(absent(f"{title} {name} not computed in this run."))
            continue
        if not part.get("random"):
            blocks.append(note("No random baseline in this run."))
        blocks += render(level, part)
    return blocks


def _prompt_note(zero_shot_metrics: Mapping | None) -> list[Block]:
    prompts = (zero_shot_metrics or {}).get("prompts")
    if not prompts:
        return []
    ensemble = "an ensemble of phrasings per class" if prompts.get("ensemble") else "one phrasing"
    scoring = (
        "each class as a softmax between its prompt and its negative prompt"
        if prompts.get("negative")
        else "one softmax over the region prompts and the no-lesion prompt"
    )
    aggregation = prompts.get("aggregation", "?")
    if aggregation == "top_k_mean":
        aggregation = f"mean of the top {prompts.get('top_k')}"
    return [
        note(
            f"Prompts: {ensemble}; patches scored with {scoring}; a scan's score per region is "
            f"the {aggregation} of its patches (patch stride {prompts.get('stride')})."
        )
    ]


def _detection_blocks(detection: Mapping | None, decimals: int) -> list[Block]:
    blocks = [heading("Lesion detection (test patches)")]
    if not detection or not detection.get("model"):
        return blocks + [absent("Lesion detection not computed in this run.")]
    rows = []
    for key, label in _COMPARISON_LABELS.items():
        part = detection.get(key)
        if not isinstance(part, Mapping) or not part:
            continue
        if "auc" not in part:
            rows.append([label, part.get("skipped", MISSING), "", ""])
            continue
        interval = part.get("auc" + CI_SUFFIX) or (None, None)
        rows.append(
            [label, format_interval(part["auc"], *interval, decimals=decimals),
             part.get("n_positive", ""), part.get("n_negative", "")]
        )  # fmt: skip
    model = detection["model"]
    return blocks + [
        table(["", "AUC", "lesion patches", "lesion-free patches"], rows, (1, 2, 3)),
        note(
            "Score 1 − p(no lesion). Patches cutting a lesion without showing enough of it "
            f"are neither and left out ({model.get('n_excluded', 0)} patches)."
        ),
    ]


def zero_shot_section(
    zero_shot_metrics: Mapping | None, baseline_metrics: Mapping | None, decimals: int
) -> list[Block]:
    def render(level: str, part: Mapping) -> list[Block]:
        columns = {**comparison_columns(part), **baseline_columns(baseline_metrics, level)}
        blocks = zero_shot_table(columns, decimals)
        sweep = part.get("gap_sweep")
        if sweep and sweep.get("by_lambda"):
            return blocks + [heading("Modality-gap sweep", 4), *gap_sweep_blocks(sweep, decimals)]
        if level == "lesion_level":  # the evaluation pipeline sweeps the gap at lesion level
            blocks.append(absent("Modality-gap sweep not computed in this run."))
        return blocks

    if _baseline_parts(baseline_metrics):
        level = LEVELS.get(_baseline_level(baseline_metrics), _baseline_level(baseline_metrics))
        intro = (
            f"Supervised references (linear probe, fusion) were fitted at the {level.lower()} "
            "and sit beside the model there. Intervals: patient-level bootstrap, 95%."
        )
    else:
        intro = "No supervised references (linear probe, fusion) in this run."
    blocks = [note(intro), *_prompt_note(zero_shot_metrics)]
    blocks += _metrics_by_level(zero_shot_metrics, render, "zero-shot metrics")
    blocks += _detection_blocks((zero_shot_metrics or {}).get("lesion_detection"), decimals)
    for target, part in ((zero_shot_metrics or {}).get("targets") or {}).items():
        blocks.append(heading(f"Scan-level target: {target}"))
        if part.get("model"):
            blocks += zero_shot_table(comparison_columns(part), decimals, class_label="AUC")
    return blocks


def retrieval_section(retrieval_metrics: Mapping | None, decimals: int) -> list[Block]:
    def render(_: str, part: Mapping) -> list[Block]:
        columns = comparison_columns(part)
        precision_at = sorted(
            (
                m
                for m in part["model"].get("overall", {})
                if m.startswith("precision_at_") and not m.endswith(CI_SUFFIX)
            ),
            key=lambda m: int(m.rsplit("_", 1)[1]),
        )
        blocks = region_metric_table(columns, _STANDARD_RETRIEVAL, decimals)
        blocks.append(
            heading("Reference variants (the paper's Table 4 definitions, not standard)", 4)
        )
        blocks += region_metric_table(columns, _REFERENCE_RETRIEVAL, decimals)
        if precision_at:
            blocks.append(heading("Precision at k", 4))
            blocks += region_metric_table(columns, precision_at, decimals)
        return blocks + _skipped_note(part["model"]) + _column_notes(columns)

    definitions = note(
        "Scan level ranks test scans by their aggregated patch evidence for each region; lesion "
        "level ranks lesion cubes by distance to each region prompt. MRR: 1/rank of the first "
        "relevant sample; AP: average precision (its mean over regions is the standard mAP); "
        "R-precision: precision in the top R, R = number of relevant samples. The reference "
        "variants are the paper's reference implementation: reference mAP = mean of P@1 … P@R "
        "(ignores relevant samples ranked after R); reference MRR = 1/rank of the first relevant "
        "sample if it is within the top R, else 0."
    )
    return [definitions, *_metrics_by_level(retrieval_metrics, render, "retrieval metrics")]


def pretraining_section(pretraining_summary: Mapping | None, decimals: int) -> list[Block]:
    """Held-out reconstruction loss beside the unmasked-mean baseline."""
    if not pretraining_summary:
        return [absent("No pretraining summary: the encoder was not pretrained in this run.")]
    rows = [
        [label, format_number(pretraining_summary[key], decimals)]
        for key, label in (
            ("reconstruction_loss", "held-out reconstruction loss (MSE)"),
            ("unmasked_mean_loss", "unmasked-mean baseline loss (MSE)"),
            ("beats_unmasked_mean", "beats the baseline"),
            ("n_train_volumes", "training volumes"),
            ("n_held_out_volumes", "held-out volumes"),
        )
        if key in pretraining_summary
    ]
    blocks = [table(["", "value"], rows, (1,))]
    if "reconstruction_loss" not in pretraining_summary:
        blocks.append(absent("Reconstruction not measured: there were no held-out volumes."))
    elif not pretraining_summary.get("beats_unmasked_mean", True):
        blocks.append(
            absent(
                "The pretrained encoder does not beat the unmasked-mean baseline: pretraining "
                "has not learnt useful structure yet (more steps or more volumes may help)."
            )
        )
    else:
        blocks.append(
            note(
                "The baseline predicts every voxel as the mean of the sample's visible voxels; "
                "an encoder that has learnt anything reconstructs better than that."
            )
        )
    return blocks


def training_section(alignment_history: pd.DataFrame | None, decimals: int) -> list[Block]:
    """Final loss, best validation loss (and the validation metrics there), temperature."""
    if alignment_history is None or alignment_history.empty:
        return [absent("No alignment training history in this run.")]
    history = (
        alignment_history.sort_values("step") if "step" in alignment_history else alignment_history
    )
    last = history.iloc[-1]
    rows = []
    if "step" in history:
        rows.append(["steps", format_number(int(last["step"]))])
    rows.append(["final training loss", format_number(last.get("loss"), decimals)])
    validated = history.dropna(subset=["val_loss"]) if "val_loss" in history else history.iloc[:0]
    if not validated.empty:
        best = validated.loc[validated["val_loss"].idxmin()]
        where = f" (step {int(best['step'])})" if "step" in best else ""
        rows.append([f"best validation loss{where}", format_number(best["val_loss"], decimals)])
        rows += [
            [
                f"{column.removeprefix('val_').replace('_', ' ')} at best validation",
                format_number(best[column], decimals),
            ]
            for column in validated.columns
            if column.startswith("val_") and column != "val_loss" and not _is_missing(best[column])
        ]
    else:
        rows.append(["best validation loss", "no validation steps"])
    for column, label in (
        ("temperature", "final temperature τ"),
        ("logit_scale", "final logit scale 1/τ"),
    ):
        if column in history:
            rows.append([label, format_number(last[column], decimals)])
    if "samples_per_s" in history:
        rows.append(
            ["mean throughput (samples/s)", format_number(history["samples_per_s"].mean(), 1)]
        )
    return [table(["", "value"], rows, (1,))]


def versions_section(run_metadata: Mapping | None) -> list[Block]:
    if not run_metadata:
        return [absent("No catalog version record: run metadata was not passed to the report.")]
    if not run_metadata.get("versions"):
        return [absent("No versioned dataset took part in this run.")]
    rows = sorted(run_metadata["versions"].items())
    return [
        table(["dataset", "version"], rows),
        note("Load any of them again with e.g. `kedro run --load-versions=<dataset>:<version>`."),
    ]


def _run_info(run_metadata: Mapping | None) -> str:
    if not run_metadata:
        return "Run metadata absent."
    labels = {
        "save_version": "save version",
        "kedro_env": "env",
        "pipeline": "pipeline",
        "device": "device",
        "mriclip_version": "mriclip",
    }
    parts = [
        f"{label} {run_metadata[key]}" for key, label in labels.items() if run_metadata.get(key)
    ]
    return " · ".join(parts)


@functools.cache
def _template() -> tuple[jinja2.Template, str]:
    folder = files("mriclip.evaluation") / "templates"
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string((folder / "report.html.j2").read_text(encoding="utf-8"))
    return template, (folder / "report.css").read_text(encoding="utf-8")


def render_report(
    *,
    nifti_catalog: pd.DataFrame | None = None,
    catalog_problems: pd.DataFrame | None = None,
    scan_sentences: pd.DataFrame | None = None,
    splits: pd.DataFrame | None = None,
    lesion_table: pd.DataFrame | None = None,
    zero_shot_metrics: Mapping | None = None,
    retrieval_metrics: Mapping | None = None,
    baseline_metrics: Mapping | None = None,
    alignment_history: pd.DataFrame | None = None,
    pretraining_summary: Mapping | None = None,
    figures: Mapping[str, bytes | Figure | None] | None = None,
    parameters: Mapping | None = None,
    run_metadata: Mapping | None = None,
    title: str = "mriclip run report",
    settings_shown: Sequence[str] = DEFAULT_SETTINGS_SHOWN,
    decimals: int = 3,
) -> str:
    """The whole report as one self-contained HTML document (see the module docstring).

    ``figures`` maps names (``FIGURE_CAPTIONS`` keys first, in that order, then any others) to
    PNG bytes or matplotlib Figures; None means "not produced". ``settings_shown`` lists dotted
    paths into ``parameters`` to display.
    """
    figures = dict(figures or {})
    figure_names = [name for name in FIGURE_CAPTIONS if name in figures]
    figure_names += [name for name in figures if name not in FIGURE_CAPTIONS]
    regions = list((parameters or {}).get("regions") or [])
    figure_blocks = [block for name in figure_names for block in _figure(name, figures[name])]
    sections = [
        (
            "data",
            "Data",
            data_section(
                nifti_catalog, catalog_problems, scan_sentences, splits, lesion_table, regions
            ),
        ),  # fmt: skip
        (
            "zero-shot",
            "Zero-shot classification",
            zero_shot_section(zero_shot_metrics, baseline_metrics, decimals),
        ),
        ("retrieval", "Retrieval", retrieval_section(retrieval_metrics, decimals)),
        ("pretraining", "Pretraining", pretraining_section(pretraining_summary, decimals)),
        ("training", "Alignment training", training_section(alignment_history, decimals)),
        ("figures", "Figures", figure_blocks or [absent("No figures were passed to the report.")]),
        ("settings", "Settings", settings_section(parameters, settings_shown)),
        ("versions", "Catalog versions this report came from", versions_section(run_metadata)),
    ]
    summary = headline(zero_shot_metrics, retrieval_metrics, baseline_metrics, decimals)
    logger.info("report: %s", summary)
    template, css = _template()
    return (
        template.render(
            title=title,
            css=css,
            run_info=_run_info(run_metadata),
            headline=summary,
            measures=[{"kind": "list", "entries": list(MEASURES)}],
            sections=[
                {"anchor": anchor, "title": name, "blocks": blocks}
                for anchor, name, blocks in sections
            ],
        )
        + "\n"
    )
