"""The result sections of the report and its one-line headline: zero-shot classification
(scan level, lesion level, lesion detection, clinical targets), retrieval, pretraining and
alignment training, each metric beside its controls."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from mriclip.evaluation.summary import CI_SUFFIX
from mriclip.reporting.blocks import (
    MISSING,
    Block,
    absent,
    format_interval,
    format_number,
    heading,
    is_missing,
    nested,
    note,
    table,
)
from mriclip.reporting.tables import (
    COMPARISON_LABELS,
    LEVEL_TITLES,
    baseline_columns,
    baseline_level,
    baseline_parts,
    column_notes,
    comparison_columns,
    gap_sweep_blocks,
    region_metric_table,
    skipped_note,
    zero_shot_table,
)

_STANDARD_RETRIEVAL = ("mrr", "average_precision", "r_precision")
_REFERENCE_RETRIEVAL = ("reference_mrr", "reference_map")

# --- the headline ----------------------------------------------------------------------------


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
        found = nested(metrics, path)
        return "n/a" if found is None else format_number(found, decimals)

    def with_interval(metrics: Mapping | None, *path: str) -> str:
        found = nested(metrics, path)
        interval = nested(metrics, (*path[:-1], path[-1] + CI_SUFFIX))
        if found is None:
            return "n/a"
        return format_interval(found, *(interval or (None, None)), decimals=decimals)

    auc = ("overall", "auc_macro")
    mrr = ("overall", "mrr")
    scan, lesion = "scan_level", "lesion_level"
    probe_level = baseline_level(baseline_metrics) if baseline_parts(baseline_metrics) else scan
    probe = baseline_columns(baseline_metrics, probe_level).get("linear probe")
    parts = [
        f"Scan-level zero-shot macro AUC {with_interval(zero_shot_metrics, scan, 'model', *auc)} "
        f"(lesion-ablated {value(zero_shot_metrics, scan, 'lesion_ablated', *auc)}, "
        f"random {value(zero_shot_metrics, scan, 'random', *auc)}), calibration error (ECE) "
        f"{with_interval(zero_shot_metrics, scan, 'model', 'overall', 'ece')} "
        f"(uncalibrated {value(zero_shot_metrics, scan, 'model', 'overall', 'ece_uncalibrated')})",
        f"lesion detection AUC "
        f"{with_interval(zero_shot_metrics, 'lesion_detection', 'model', 'auc')} "
        f"(lesion-ablated {value(zero_shot_metrics, 'lesion_detection', 'lesion_ablated', 'auc')})",
        f"retrieval MRR {value(retrieval_metrics, scan, 'model', *mrr)} "
        f"(random {value(retrieval_metrics, scan, 'random', *mrr)})",
        f"linear probe AUC {value(probe, *auc)} ({LEVEL_TITLES[probe_level].lower()})",
        f"lesion-level (the paper's protocol) AUC "
        f"{with_interval(zero_shot_metrics, lesion, 'model', *auc)} "
        f"(lesion-ablated {value(zero_shot_metrics, lesion, 'lesion_ablated', *auc)})",
    ]
    for target in (zero_shot_metrics or {}).get("targets") or {}:
        path = ("targets", target)
        parts.append(
            f"{target} AUC {with_interval(zero_shot_metrics, *path, 'model', *auc)} "
            f"(random {value(zero_shot_metrics, *path, 'random', *auc)})"
        )
    return " · ".join(parts)


# --- sections --------------------------------------------------------------------------------


def _metrics_by_level(
    metrics: Mapping | None, render: Callable[[str, Mapping], list[Block]], name: str
) -> list[Block]:
    blocks = []
    for level, title in LEVEL_TITLES.items():
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
    for key, label in COMPARISON_LABELS.items():
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


def _skipped_blocks(skipped: Mapping | None) -> list[Block]:
    """One line per target, patch column or metric the cohort could not have, with why (a
    cohort without lesion information skips everything that needs lesions)."""
    if not skipped:
        return []
    rows = [[name, reason] for name, reason in skipped.items()]
    return [heading("Skipped in this run"), table(["skipped", "why"], rows)]


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

    if baseline_parts(baseline_metrics):
        level = LEVEL_TITLES.get(baseline_level(baseline_metrics), baseline_level(baseline_metrics))
        intro = (
            f"Supervised references (linear probe, fusion) were fitted at the {level.lower()} "
            "and sit beside the model there. Intervals: patient-level bootstrap, 95%."
        )
    else:
        intro = "No supervised references (linear probe, fusion) in this run."
    blocks = [note(intro), *_prompt_note(zero_shot_metrics)]
    blocks += _skipped_blocks((zero_shot_metrics or {}).get("skipped"))
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
        return blocks + skipped_note(part["model"]) + column_notes(columns)

    definitions = note(
        "Scan level ranks test scans by their aggregated patch evidence for each region; lesion "
        "level ranks lesion cubes by distance to each region prompt. MRR: 1/rank of the first "
        "relevant sample; AP: average precision (its mean over regions is the standard mAP); "
        "R-precision: precision in the top R, R = number of relevant samples. The reference "
        "variants are the paper's reference implementation: reference mAP = mean of P@1 … P@R "
        "(ignores relevant samples ranked after R); reference MRR = 1/rank of the first relevant "
        "sample if it is within the top R, else 0."
    )
    blocks = [definitions, *_metrics_by_level(retrieval_metrics, render, "retrieval metrics")]
    for target, part in ((retrieval_metrics or {}).get("targets") or {}).items():
        blocks.append(heading(f"Scan-level target: {target}"))
        if part.get("model"):
            blocks += render(target, part)
    return blocks


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
            if column.startswith("val_") and column != "val_loss" and not is_missing(best[column])
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
