"""The report's vocabulary: formatted cells ("0.812 ± 0.013", "0.80 [0.71, 0.88]", "—") and the
blocks the Jinja2 template renders (headings, tables, notes, figures)."""

from __future__ import annotations

import io
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MISSING = "—"
Block = dict[str, Any]

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

# --- formatting ------------------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and math.isnan(value))


def format_number(value: Any, decimals: int = 3) -> str:
    """A cell: floats to ``decimals`` places, ints as they are, bools yes/no, missing as —.

    A ``mean_and_sem`` leaf {"mean", "sem", "n"} becomes "mean ± sem".
    """
    if isinstance(value, Mapping) and "mean" in value:
        return format_estimate(value["mean"], value.get("sem"), decimals)
    if is_missing(value):
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
    if is_missing(error):
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


def format_interval(value: Any, low: Any, high: Any, decimals: int = 3) -> str:
    """ "value [low, high]" for a bootstrap interval, the value alone without one."""
    if is_missing(low) or is_missing(high):
        return format_number(value, decimals)
    return f"{format_number(value, decimals)} [{low:.{decimals}f}, {high:.{decimals}f}]"


# --- values ----------------------------------------------------------------------------------


def nested(mapping: Mapping | None, path: Sequence[str], default: Any = None) -> Any:
    """mapping[path[0]][path[1]]…, or ``default`` where a key is missing."""
    node: Any = mapping
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


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
