"""One self-contained HTML report of a run: data, settings, metrics, figures, data versions.

``render_report`` takes the run's tables, metric dicts, figures and metadata and returns an HTML
string with inline CSS and the figures embedded as base64 PNG, so the single file can be mailed
or archived. Every part is optional in the sense that a missing or empty one is *stated* in the
report ("not computed in this run") instead of breaking it. Every string that comes from data
(scan ids, problem texts, parameter values) is HTML-escaped.

Metric dicts have the shape of ``zero_shot``, ``retrieval`` and ``baselines`` (plain numbers or
``summary.mean_and_sem`` leaves, shown as "mean ± sem"); the run's layout around them is::

    zero_shot_metrics = {"scan_level": {"model": M, "before_alignment": M, "random": B,
                                        "gap_sweep": S},
                         "lesion_level": {...}}
    retrieval_metrics = {"scan_level": {"model": M, "random": B, "shuffled": B},
                         "lesion_level": {...}}
    baseline_metrics  = {"level": "scan" | "lesion", "linear_probe": M,
                         "early_fusion": M, "late_fusion": M}

Every key but each level's "model" may be missing; the supervised baselines sit beside the
model at the level they were fitted at, and the headline reports that level.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from mriclip.evaluation.modality_gap import gap_sweep_table
from mriclip.evaluation.summary import OVERALL, metrics_table

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

#: Figure name → caption, in the order the report shows them.
FIGURE_CAPTIONS = {
    "training_curves": (
        "Alignment training: contrastive loss (and validation loss), temperature and learning "
        "rates by step."
    ),
    "roc": "Zero-shot one-vs-rest ROC curve per region on the test split; dashed: chance.",
    "tsne": (
        "t-SNE of image (circles) and text (triangles) embeddings before and after alignment, "
        "coloured by region. Images and texts forming two separate clouds show a modality gap."
    ),
    "retrieval_grid": (
        "Retrieval: for each region prompt (rows) the nearest scans (middle slice) with their "
        "distance; green frame: the scan has a lesion in that region, red: it has not."
    ),
    "reconstruction": (
        "Masked-autoencoder pretraining on held-out volumes: input, masked input and "
        "reconstruction (middle axial slices)."
    ),
}

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
    "before_alignment": "before alignment",
    "random": "random",
    "shuffled": "shuffled",
}
_COLUMN_NOTES = {
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

_CSS = """
body { margin: 0; background: #eef1f5; color: #1f2933;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 40px 56px; background: #fff; }
h1 { font-size: 1.75rem; margin: 0 0 .2rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .3rem;
  border-bottom: 2px solid #d9e2ec; }
h3 { font-size: 1.1rem; margin: 1.6rem 0 .4rem; }
h4 { font-size: .98rem; margin: 1.1rem 0 .3rem; }
.run-info { color: #52606d; margin: 0 0 1rem; }
.headline { font-size: 1.02rem; background: #eef6ff; border-left: 4px solid #2f80ed;
  padding: .7rem 1rem; margin: 1rem 0; }
nav { font-size: .9rem; margin-bottom: 1rem; }
nav a { margin-right: .9rem; color: #2f6fb3; text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: .7rem; margin: .6rem 0 1rem; }
.card { border: 1px solid #d9e2ec; border-radius: 6px; padding: .45rem .9rem; min-width: 110px; }
.card b { display: block; font-size: 1.35rem; }
.card span { color: #52606d; font-size: .85rem; }
.table-wrap { overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { padding: .28rem .55rem; border-bottom: 1px solid #e4e7eb; text-align: left;
  vertical-align: top; }
thead th { background: #f0f4f8; border-bottom: 2px solid #cbd2d9; }
th.group { text-align: center; border-bottom: 1px solid #cbd2d9; }
td:first-child { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
tr.overall td { font-weight: 600; border-top: 2px solid #cbd2d9; }
.note { color: #52606d; font-size: .88rem; margin: .3rem 0 .8rem; }
.absent { color: #7c4a03; background: #fff8e6; border-radius: 4px; padding: .4rem .7rem;
  display: inline-block; margin: .3rem 0; }
.settings { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr));
  gap: .8rem; }
.settings h3 { margin: .2rem 0; font-family: ui-monospace, Menlo, Consolas, monospace; }
pre { background: #f5f7fa; border: 1px solid #e4e7eb; border-radius: 4px; margin: 0;
  padding: .55rem .8rem; overflow-x: auto; font-size: .8rem; line-height: 1.35; }
figure { margin: 1.4rem 0; }
figure img { max-width: 100%; border: 1px solid #e4e7eb; }
figcaption { color: #52606d; font-size: .9rem; margin-top: .3rem; }
"""


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


# --- HTML building blocks --------------------------------------------------------------------


def html_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Iterable[int] = (),
    groups: Sequence[tuple[str, int]] | None = None,
    row_classes: Sequence[str] | None = None,
) -> str:
    """A table of already formatted cells; every header and cell is escaped here.

    ``numeric`` column indices are right-aligned; ``groups`` adds a header row of (label, span)
    above ``columns``; ``row_classes`` gives each body row a CSS class ("" for none).
    """
    numeric = set(numeric)

    def cell(tag: str, index: int, text: Any) -> str:
        css = ' class="num"' if index in numeric else ""
        return f"<{tag}{css}>{escape(str(text))}</{tag}>"

    header = ""
    if groups:
        header = "<tr>" + "".join(
            f'<th class="group" colspan="{span}">{escape(label)}</th>' for label, span in groups
        )
        header += "</tr>"
    header += "<tr>" + "".join(cell("th", i, name) for i, name in enumerate(columns)) + "</tr>"
    body = []
    for number, row in enumerate(rows):
        css = row_classes[number] if row_classes else ""
        attribute = f' class="{escape(css)}"' if css else ""
        body.append(
            f"<tr{attribute}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
        )
    # The wrapper scrolls a table wider than the page instead of letting it spill over.
    return (
        f'<div class="table-wrap"><table><thead>{header}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _paragraph(text: str, css: str = "note") -> str:
    return f'<p class="{css}">{escape(text)}</p>'


def _absent(text: str) -> str:
    return f'<p><span class="absent">{escape(text)}</span></p>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _cards(facts: Sequence[tuple[str, Any]]) -> str:
    cards = "".join(
        f'<div class="card"><b>{escape(format_number(value))}</b><span>{escape(label)}</span></div>'
        for label, value in facts
    )
    return f'<div class="cards">{cards}</div>'


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


def _figure(name: str, figure: bytes | Figure | None) -> str:
    caption = FIGURE_CAPTIONS.get(name, name.replace("_", " "))
    if figure is None:
        return f"<h3>{escape(name.replace('_', ' '))}</h3>" + _absent(
            "Figure not produced in this run."
        )
    encoded = base64.b64encode(figure_png(figure)).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


# --- metric tables ---------------------------------------------------------------------------


def _cells(metrics: Mapping | None, decimals: int) -> dict[tuple[str, str], str]:
    """{(metric, region): formatted value} of a metric dict, region "all" for overall rows."""
    if not metrics:
        return {}
    table = metrics_table(metrics)
    return {
        (row.metric, row.region): format_estimate(row.value, row.sem, decimals)
        for row in table.itertuples()
    }


def _regions_of(*metric_dicts: Mapping | None) -> list[str]:
    names: dict[str, None] = {}
    for metrics in metric_dicts:
        if metrics:
            names.update(dict.fromkeys(metrics.get("per_region", {})))
            names.update(dict.fromkeys(metrics.get("skipped_regions", {})))
    return list(names)


def _ordered_overall(metrics: Mapping, preferred: Sequence[str]) -> list[str]:
    present = list(metrics.get("overall", {}))
    return [key for key in preferred if key in present] + [
        key for key in present if key not in preferred
    ]


def _skipped_note(metrics: Mapping) -> str:
    parts = [
        f"{name}: {reason}"
        for key in ("skipped_regions", "skipped_metrics")
        for name, reason in metrics.get(key, {}).items()
    ]
    return _paragraph("Not scored — " + "; ".join(parts) + ".") if parts else ""


def comparison_columns(part: Mapping) -> dict[str, Mapping]:
    """{column label: metric dict} of one level of a metrics output: the model, then the
    references it holds (before alignment, random, shuffled), in that order."""
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


def _column_notes(columns: Mapping[str, Mapping]) -> str:
    """What the reference columns are (one line), then each baseline's caveat."""
    explained = [_COLUMN_NOTES[label] for label in columns if label in _COLUMN_NOTES]
    html = _paragraph(" ".join(explained)) if explained else ""
    # Baselines sharing one caveat (early and late fusion) get one footnote.
    by_caveat: dict[str, list[str]] = {}
    for label, metrics in columns.items():
        if metrics.get("caveat"):
            by_caveat.setdefault(metrics["caveat"], []).append(label.removesuffix(" †"))
    return html + "".join(
        _paragraph(f"† {', '.join(labels)}: {caveat}.") for caveat, labels in by_caveat.items()
    )


def zero_shot_table(columns: Mapping[str, Mapping], decimals: int = 3) -> str:
    """Per-region AUC and the overall metrics, one column per metric dict.

    The first column is the model: its counts, skipped regions and metric order lead.
    """
    model = next(iter(columns.values()))
    cells = {label: _cells(metrics, decimals) for label, metrics in columns.items()}
    positives = model.get("counts", {}).get("n_positive", {})
    rows, classes = [], []
    for region in _regions_of(*columns.values()):
        rows.append(
            [f"AUC — {region}", positives.get(region, "")]
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
    html = html_table(["metric", "positives", *columns], rows, numeric, row_classes=classes)
    counts = model.get("counts", {})
    if "n_samples" in counts:
        html += _paragraph(f"{counts['n_samples']} samples evaluated.")
    return html + _skipped_note(model) + _column_notes(columns)


def region_metric_table(
    columns: Mapping[str, Mapping], metrics: Sequence[str], decimals: int = 3
) -> str:
    """Rows = regions and their mean; for each metric, one column per metric dict.

    The first column is the model; metrics it lacks are left out.
    """
    model = next(iter(columns.values()))
    cells = {label: _cells(metric_dict, decimals) for label, metric_dict in columns.items()}
    shown = [m for m in metrics if any(key[0] == m for key in next(iter(cells.values())))]
    if not shown:
        return _absent("None of " + ", ".join(map(metric_label, metrics)) + " was computed.")
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
    return html_table(header, rows, range(1, len(header)), groups, classes)


def gap_sweep_html(sweep: Mapping, decimals: int = 3) -> str:
    """Overall zero-shot metrics for each modality-gap shift λ (λ = 0: unshifted)."""
    table = gap_sweep_table(dict(sweep))
    overall = table[table["region"] == OVERALL]
    metrics = [m for m in _GAP_SWEEP_COLUMNS if m in set(overall["metric"])]
    rows = []
    for lam, group in overall.groupby("gap_lambda", sort=True):
        by_metric = {
            row.metric: format_estimate(row.value, row.sem, decimals) for row in group.itertuples()
        }
        label = f"{lam:g}" + (" (unshifted)" if lam == 0 else "")
        rows.append([label] + [by_metric.get(metric, MISSING) for metric in metrics])
    columns = ["λ"] + [_GAP_SWEEP_COLUMNS[metric] for metric in metrics]
    html = html_table(columns, rows, range(1, len(columns)))
    note = (
        "Images shifted by −λg/2 and prompts by +λg/2 (then renormalised), g = mean(image) − "
        "mean(text) on the training split"
    )
    if "gap_norm" in sweep:
        note += f"; |g| = {format_number(sweep['gap_norm'], decimals)}"
    return html + _paragraph(note + ".")


# --- sections --------------------------------------------------------------------------------


def _nested(mapping: Mapping | None, path: Sequence[str], default: Any = None) -> Any:
    """mapping[path[0]][path[1]]…, or ``default`` where a key is missing."""
    node: Any = mapping
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def headline_level(zero_shot_metrics: Mapping | None, baseline_metrics: Mapping | None) -> str:
    """The level the headline reports: where the baselines were fitted (so all its numbers
    share one level), else the first level with zero-shot results."""
    if _baseline_parts(baseline_metrics):
        return _baseline_level(baseline_metrics)
    for level in LEVELS:
        if _nested(zero_shot_metrics, (level, "model")):
            return level
    return next(iter(LEVELS))


def headline(
    zero_shot_metrics: Mapping | None,
    retrieval_metrics: Mapping | None,
    baseline_metrics: Mapping | None,
    decimals: int = 3,
) -> str:
    """One line: zero-shot macro AUC, retrieval MRR (each beside random), linear probe AUC."""
    level = headline_level(zero_shot_metrics, baseline_metrics)

    def value(metrics: Mapping | None, *path: str) -> str:
        found = _nested(metrics, path)
        return "n/a" if found is None else format_number(found, decimals)

    auc = ("overall", "auc_macro")
    mrr = ("overall", "mrr")
    probe = baseline_columns(baseline_metrics, level).get("linear probe")
    return (
        f"Zero-shot macro AUC {value(zero_shot_metrics, level, 'model', *auc)} "
        f"(random {value(zero_shot_metrics, level, 'random', *auc)})"
        f" · retrieval MRR {value(retrieval_metrics, level, 'model', *mrr)} "
        f"(random {value(retrieval_metrics, level, 'random', *mrr)})"
        f" · linear probe AUC {value(probe, *auc)} — {LEVELS[level].lower()}"
    )


def _region_list(text: Any) -> list[str]:
    if _is_missing(text):
        return []
    return [region.strip() for region in str(text).split(";") if region.strip()]


def _region_counts(
    sentences: pd.DataFrame, lesions: pd.DataFrame, splits: pd.DataFrame, regions: Sequence[str]
) -> str:
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
        return ""
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
    html = "<h3>Regions</h3>" + html_table(columns, rows, range(1, 5))
    if "n_lesions" in sentences:
        html += _paragraph(f"{int((sentences['n_lesions'] == 0).sum())} scans without a lesion.")
    return html


def _split_sizes(splits: pd.DataFrame) -> str:
    html = "<h3>Splits (by patient)</h3>"
    if not {"split", "fold", "scan_id", "patient_id"} <= set(splits.columns):
        return html + _absent("No split table in this run.")
    test = splits[splits["split"] == "test"]
    train = splits[splits["split"] == "train"]
    rows = [["test (held out)", len(test), test["patient_id"].nunique()]]
    for fold, part in train.groupby("fold", sort=True):
        rows.append([f"train, fold {fold}", len(part), part["patient_id"].nunique()])
    rows.append(["train, all folds", len(train), train["patient_id"].nunique()])
    return html + html_table(["part", "scans", "patients"], rows, (1, 2))


def _problems(catalog_problems: pd.DataFrame | None) -> str:
    html = "<h3>Skipped items</h3>"
    if catalog_problems is None:
        return html + _absent("The problems table is absent from this run.")
    if catalog_problems.empty:
        return html + _paragraph("No problems: every scan and table row passed validation.")
    columns = [c for c in ("stage", "scan_id", "item", "problem", "fix") if c in catalog_problems]
    columns += [c for c in catalog_problems.columns if c not in columns]
    table = catalog_problems[columns]
    return html + html_table(columns, table.astype(object).where(table.notna(), "").values)


def data_section(
    nifti_catalog: pd.DataFrame | None,
    catalog_problems: pd.DataFrame | None,
    scan_sentences: pd.DataFrame | None,
    splits: pd.DataFrame | None,
    lesion_table: pd.DataFrame | None,
    regions: Sequence[str] = (),
) -> str:
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
    return (
        _cards(facts)
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


def settings_section(parameters: Mapping | None, shown: Sequence[str]) -> str:
    """The chosen parameter groups: single values in a table, groups as YAML blocks.

    Groups not in ``parameters`` are named rather than silently left out.
    """
    if not parameters:
        return _absent("The run's parameters were not passed to the report.")
    values, blocks, missing = [], [], []
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
        blocks.append(f"<div><h3>{escape(path)}</h3><pre>{escape(text)}</pre></div>")
    html = html_table(["parameter", "value"], values) if values else ""
    html += f'<div class="settings">{"".join(blocks)}</div>'
    if missing:
        html += _paragraph("Not set in this run: " + ", ".join(missing) + ".")
    return html


def _metrics_by_level(
    metrics: Mapping | None, render: Callable[[str, Mapping], str], name: str
) -> str:
    body = []
    for level, title in LEVELS.items():
        part = (metrics or {}).get(level)
        body.append(f"<h3>{title}</h3>")
        if not part or not part.get("model"):
            body.append(_absent(f"{title} {name} not computed in this run."))
            continue
        if not part.get("random"):
            body.append(_paragraph("No random baseline in this run."))
        body.append(render(level, part))
    return "".join(body)


def zero_shot_section(
    zero_shot_metrics: Mapping | None, baseline_metrics: Mapping | None, decimals: int
) -> str:
    def render(level: str, part: Mapping) -> str:
        columns = {**comparison_columns(part), **baseline_columns(baseline_metrics, level)}
        html = zero_shot_table(columns, decimals) + "<h4>Modality-gap sweep</h4>"
        sweep = part.get("gap_sweep")
        if sweep and sweep.get("by_lambda"):
            return html + gap_sweep_html(sweep, decimals)
        return html + _absent("Modality-gap sweep not computed in this run.")

    if _baseline_parts(baseline_metrics):
        level = LEVELS.get(_baseline_level(baseline_metrics), _baseline_level(baseline_metrics))
        intro = (
            f"Supervised references (linear probe, fusion) were fitted at the {level.lower()} "
            "and sit beside the model there."
        )
    else:
        intro = "No supervised references (linear probe, fusion) in this run."
    return _paragraph(intro) + _metrics_by_level(zero_shot_metrics, render, "zero-shot metrics")


def retrieval_section(retrieval_metrics: Mapping | None, decimals: int) -> str:
    def render(_: str, part: Mapping) -> str:
        columns = comparison_columns(part)
        precision_at = sorted(
            (m for m in part["model"].get("overall", {}) if m.startswith("precision_at_")),
            key=lambda m: int(m.rsplit("_", 1)[1]),
        )
        html = region_metric_table(columns, _STANDARD_RETRIEVAL, decimals)
        html += "<h4>Reference variants (the paper's Table 4 definitions, not standard)</h4>"
        html += region_metric_table(columns, _REFERENCE_RETRIEVAL, decimals)
        if precision_at:
            html += "<h4>Precision at k</h4>"
            html += region_metric_table(columns, precision_at, decimals)
        return html + _skipped_note(part["model"]) + _column_notes(columns)

    definitions = _paragraph(
        "Samples are ranked by distance to each region prompt. MRR: 1/rank of the first "
        "relevant sample; AP: sklearn average precision (its mean over regions is the standard "
        "mAP); R-precision: precision in the top R, R = number of relevant samples. The "
        "reference variants are the paper's reference implementation: reference mAP = mean of "
        "P@1 … P@R (ignores relevant samples ranked after R); reference MRR = 1/rank of the "
        "first relevant sample if it is within the top R, else 0."
    )
    return definitions + _metrics_by_level(retrieval_metrics, render, "retrieval metrics")


def pretraining_section(pretraining_summary: Mapping | None, decimals: int) -> str:
    """Held-out reconstruction loss beside the unmasked-mean baseline."""
    if not pretraining_summary:
        return _absent("No pretraining summary: the encoder was not pretrained in this run.")
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
    html = html_table(["", "value"], rows, (1,))
    if "reconstruction_loss" not in pretraining_summary:
        html += _absent("Reconstruction not measured: there were no held-out volumes.")
    elif not pretraining_summary.get("beats_unmasked_mean", True):
        html += _absent(
            "The pretrained encoder does not beat the unmasked-mean baseline: pretraining has "
            "not learnt useful structure yet (more steps or more volumes may help)."
        )
    else:
        html += _paragraph(
            "The baseline predicts every voxel as the mean of the sample's visible voxels; an "
            "encoder that has learnt anything reconstructs better than that."
        )
    return html


def training_section(alignment_history: pd.DataFrame | None, decimals: int) -> str:
    """Final loss, best validation loss (and the validation metrics there), temperature."""
    if alignment_history is None or alignment_history.empty:
        return _absent("No alignment training history in this run.")
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
    return html_table(["", "value"], rows, (1,))


def versions_section(run_metadata: Mapping | None) -> str:
    if not run_metadata:
        return _absent("No catalog version record: run metadata was not passed to the report.")
    if not run_metadata.get("versions"):
        return _absent("No versioned dataset took part in this run.")
    rows = sorted(run_metadata["versions"].items())
    return html_table(["dataset", "version"], rows) + _paragraph(
        "Load any of them again with e.g. `kedro run --load-versions=<dataset>:<version>`."
    )


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
    sections = [
        (
            "data",
            "Data",
            data_section(
                nifti_catalog, catalog_problems, scan_sentences, splits, lesion_table, regions
            ),
        ),
        ("settings", "Settings", settings_section(parameters, settings_shown)),
        (
            "zero-shot",
            "Zero-shot classification",
            zero_shot_section(zero_shot_metrics, baseline_metrics, decimals),
        ),
        ("retrieval", "Retrieval", retrieval_section(retrieval_metrics, decimals)),
        ("pretraining", "Pretraining", pretraining_section(pretraining_summary, decimals)),
        ("training", "Alignment training", training_section(alignment_history, decimals)),
        (
            "figures",
            "Figures",
            "".join(_figure(name, figures[name]) for name in figure_names)
            or _absent("No figures were passed to the report."),
        ),
        ("versions", "Catalog versions this report came from", versions_section(run_metadata)),
    ]
    navigation = "".join(f'<a href="#{anchor}">{escape(name)}</a>' for anchor, name, _ in sections)
    body = "".join(_section(anchor, name, html) for anchor, name, html in sections)
    summary = headline(zero_shot_metrics, retrieval_metrics, baseline_metrics, decimals)
    logger.info("report: %s", summary)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>{escape(title)}</h1>"
        f'<p class="run-info">{escape(_run_info(run_metadata))}</p>'
        f'<p class="headline">{escape(summary)}</p><nav>{navigation}</nav></header>'
        f"{body}</main></body></html>\n"
    )
