"""The evaluation protocol: each metric for the model beside its controls, with patient-level
bootstrap intervals and the exact random baseline.

Levels: ``scan`` (what a user gets on a new scan: patches over the whole brain, scored against
every prompt and aggregated; labels = all regions of the scan) and ``lesion`` (a cube centred on
each annotated lesion, label = its region). Comparisons: the ``model`` (the aligned model on
the test scans), ``lesion_ablated`` (the same model on the same scans without their lesions:
every metric's control) and ``before_alignment`` (the same model before alignment).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from mriclip.evaluation.bootstrap import with_bootstrap_intervals
from mriclip.evaluation.calibration import expected_calibration_error
from mriclip.evaluation.embedding import label_matrix
from mriclip.evaluation.embedding_tables import (
    ABLATED,
    ORIGINAL,
    embedding_matrix,
    logit_scale,
    patient_ids,
    region_prompts,
    select_embeddings,
    stage_prompts,
)
from mriclip.evaluation.modality_gap import zero_shot_gap_sweep
from mriclip.evaluation.prompts import REGIONS_TARGET
from mriclip.evaluation.rank_metrics import roc_auc
from mriclip.evaluation.retrieval import (
    permutation_baseline,
    ranking_metrics,
    retrieval_random_baseline,
    single_class_reason,
)
from mriclip.evaluation.scan_calibration import target_labels
from mriclip.evaluation.score_test_split import scan_probabilities
from mriclip.evaluation.zero_shot import (
    zero_shot_metrics,
    zero_shot_random_baseline,
    zero_shot_scores,
)
from mriclip.training.runtime import compute_environment

#: The levels a metrics output has, in order; each is the output's key ``<level>_level``.
LEVELS = ("scan", "lesion")
#: Which embeddings each comparison of a level uses: (stage, variant).
COMPARISONS = {
    "model": ("aligned", ORIGINAL),
    "lesion_ablated": ("aligned", ABLATED),
    "before_alignment": ("initial", ORIGINAL),
}


#: What a cohort without lesion information (no regions target) skips, and why.
NO_LESION_INFORMATION = {
    "lesion level": "no lesion information: there are no annotated lesions to cut cubes around",
    "lesion detection": "no lesion information: no patch is known to hold a lesion",
    "lesion-ablated controls": "no lesion information: there are no lesions to remove",
}


def level_key(level: str) -> str:
    """The key of a level in a metrics output: ``scan`` → ``scan_level``."""
    return f"{level}_level"


def with_intervals(metric_fn: Callable, groups: Sequence, params: dict, seed: int) -> dict:
    """``metric_fn(indices)`` on all rows, with patient-level bootstrap intervals
    (``params["bootstrap"]``: ``n_resamples``, ``confidence``)."""
    bootstrap = params["bootstrap"]
    return with_bootstrap_intervals(
        metric_fn, groups, bootstrap["n_resamples"], bootstrap["confidence"], seed
    )


def zero_shot_with_intervals(scores, labels, classes, groups, params, seed) -> dict:
    """Zero-shot metrics of ``scores`` against ``labels``, with bootstrap intervals."""
    return with_intervals(
        lambda i: zero_shot_metrics(scores[i], labels[i], classes), groups, params, seed
    )


def scan_level_with_intervals(scores, labels, classes, groups, params, seed) -> dict:
    """Zero-shot metrics of scan-level probabilities, with their expected calibration error
    (``overall.ece``: users read ``prob_<class>`` as probabilities)."""

    def metrics(indices: np.ndarray) -> dict:
        result = zero_shot_metrics(scores[indices], labels[indices], classes)
        result["overall"]["ece"] = expected_calibration_error(
            scores[indices], labels[indices], params["calibration"]["n_bins"]
        )
        return result

    return with_intervals(metrics, groups, params, seed)


def lesion_cubes(
    test_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    regions: list[str],
    stage: str,
    variant: str,
    ensemble: bool,
    softmax: bool = False,
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """The lesion-level cubes of a stage and variant, their scores against the region prompts
    (cosines, or with ``softmax`` the reference's softmax over regions at the stage's logit
    scale) and their labels (None, None when there are none)."""
    rows = select_embeddings(test_embeddings, stage, variant, "lesion")
    if rows.empty:
        return rows, None, None
    scale = logit_scale(stage_prompts(prompt_embeddings, stage)[0]) if softmax else None
    scores = zero_shot_scores(
        embedding_matrix(rows, "image"),
        region_prompts(prompt_embeddings, stage, ensemble),
        scale,
    )
    return rows, scores, label_matrix(rows["key"], regions)


def lesion_detection_metrics(
    patch_scores: pd.DataFrame, groups: list[str], params: dict, seed: int
) -> dict:
    """AUC of lesion vs no-lesion patches, score 1 − p(no lesion). Patches that cut a lesion
    without showing enough of it are neither, and left out (``n_excluded``)."""
    positive = patch_scores["key"].fillna("") != ""
    negative = ~positive & ~patch_scores["cut"].astype(bool)
    keep = (positive | negative).to_numpy()
    labels = positive.to_numpy()[keep]
    scores = patch_scores["lesion_evidence"].to_numpy()[keep]
    counts = {
        "n_positive": int(labels.sum()),
        "n_negative": int((~labels).sum()),
        "n_excluded": int((~keep).sum()),
    }
    reason = single_class_reason(labels.astype(int))
    if reason:
        return {"skipped": f"lesion detection: {reason} among the test patches", **counts}

    def detection(indices: np.ndarray) -> dict:
        return {"auc": roc_auc(labels[indices], scores[indices])}

    return {**with_intervals(detection, np.asarray(groups)[keep], params, seed), **counts}


def scan_level_targets(
    test_scan_scores: pd.DataFrame,
    zero_shot_spec: dict,
    scan_sentences: pd.DataFrame,
    params: dict,
    seed: int,
) -> dict:
    """{target: {comparison: metrics with intervals and ECE, "random": ...}} of the scans'
    probabilities; the model's also carries the uncalibrated ECE (``ece_uncalibrated``)."""
    patient_of = patient_ids(scan_sentences)
    result = {}
    for target in zero_shot_spec["targets"]:
        classes = zero_shot_spec["targets"][target]["classes"]
        part = {}
        for comparison, (stage, variant) in COMPARISONS.items():
            rows, scores = scan_probabilities(
                test_scan_scores, zero_shot_spec, target, stage, variant
            )
            if rows.empty:
                continue
            labels = target_labels(scan_sentences, rows["scan_id"], zero_shot_spec, target)
            groups = rows["scan_id"].map(patient_of).tolist()
            part[comparison] = scan_level_with_intervals(
                scores, labels, classes, groups, params, seed
            )
            if comparison == "model":
                part["random"] = zero_shot_random_baseline(labels, classes)
                _, raw = scan_probabilities(
                    test_scan_scores, zero_shot_spec, target, stage, variant, prefix="raw_"
                )
                part[comparison]["overall"]["ece_uncalibrated"] = expected_calibration_error(
                    raw, labels, params["calibration"]["n_bins"]
                )
        result[target] = part
    return result


def lesion_level_zero_shot(
    test_embeddings: pd.DataFrame,
    train_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    scan_sentences: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """Region classification of the lesion cubes per comparison, beside the random baseline
    and the model's modality-gap sweep (empty when there are no cubes).

    Cubes are scored with a softmax over regions, as the reference and the scan-level patch
    scores are: a cube's cosines to every region prompt move together, and per-region AUCs over
    raw cosines rank cubes by that shared offset as much as by region."""
    patient_of = patient_ids(scan_sentences)
    ensemble = params["prompts"]["ensemble"]
    part = {}
    for comparison, (stage, variant) in COMPARISONS.items():
        lesions, scores, labels = lesion_cubes(
            test_embeddings, prompt_embeddings, regions, stage, variant, ensemble, softmax=True
        )
        if lesions.empty:
            continue
        groups = lesions["scan_id"].map(patient_of).tolist()
        part[comparison] = zero_shot_with_intervals(scores, labels, regions, groups, params, seed)
        if comparison == "model":
            part["random"] = zero_shot_random_baseline(labels, regions)
            train = select_embeddings(train_embeddings, level="lesion")
            part["gap_sweep"] = zero_shot_gap_sweep(
                embedding_matrix(train, "image"),
                embedding_matrix(train, "text"),
                embedding_matrix(lesions, "image"),
                region_prompts(prompt_embeddings, stage, ensemble),
                labels,
                regions,
                lambdas=params["gap_lambdas"],
            )
    return part


def lesion_detection(
    test_patch_scores: pd.DataFrame, scan_sentences: pd.DataFrame, params: dict, seed: int
) -> dict:
    """Patch-level lesion detection per comparison, beside the random AUC of 0.5."""
    patient_of = patient_ids(scan_sentences)
    result = {}
    for comparison, (stage, variant) in COMPARISONS.items():
        patches = select_embeddings(test_patch_scores, stage, variant)
        if patches.empty:
            continue
        groups = patches["scan_id"].map(patient_of).tolist()
        result[comparison] = lesion_detection_metrics(patches, groups, params, seed)
    result["random"] = {"auc": 0.5}
    return result


def zero_shot_protocol(
    test_embeddings: pd.DataFrame,
    train_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    test_scan_scores: pd.DataFrame,
    test_patch_scores: pd.DataFrame,
    zero_shot_spec: dict,
    scan_sentences: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """Scan level (patch evidence aggregated), lesion level (cubes), patch-level lesion
    detection and the scan-level targets, each for every comparison, beside the exact random
    baseline, with patient-level bootstrap intervals; plus the prompt and scoring settings,
    the compute environment the metrics were computed in and what was skipped (``skipped``:
    name -> why; without lesion information, everything that needs lesions)."""
    scoring = params["scan_scoring"]
    result = {
        "prompts": {
            "ensemble": params["prompts"]["ensemble"],
            "negative": params["prompts"]["negative"],
            "aggregation": scoring["aggregation"],
            "top_k": scoring["top_k"],
            "stride": scoring["stride"],
        },
        "environment": compute_environment(),
    }
    for target, part in scan_level_targets(
        test_scan_scores, zero_shot_spec, scan_sentences, params, seed
    ).items():
        if target == REGIONS_TARGET:
            result[level_key("scan")] = part
        else:
            result.setdefault("targets", {})[target] = part
    result["skipped"] = dict(zero_shot_spec.get("skipped", {}))
    if REGIONS_TARGET not in zero_shot_spec["targets"]:
        result["skipped"].update(NO_LESION_INFORMATION)
        return result
    if not (test_scan_scores["variant"] == ABLATED).any():
        result["skipped"]["lesion-ablated controls"] = (
            "no lesion-ablated twins: the test scans have neither label maps nor raw twins"
        )
    lesion_part = lesion_level_zero_shot(
        test_embeddings, train_embeddings, prompt_embeddings, scan_sentences, regions, params, seed
    )
    if lesion_part:
        result[level_key("lesion")] = lesion_part
    result["lesion_detection"] = lesion_detection(test_patch_scores, scan_sentences, params, seed)
    return result


def retrieval_protocol(
    test_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    test_scan_scores: pd.DataFrame,
    zero_shot_spec: dict,
    scan_sentences: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """Retrieval by each class prompt for the model and its lesion-ablated control (with
    bootstrap intervals), beside the analytic random baseline and shuffled scores. Scan level
    ranks scans by their aggregated evidence for a class: the regions (``scan_level``) and each
    clinical target (``targets``); lesion level ranks lesion cubes by their distance to the
    region prompt. A level or target the cohort lacks (no lesions) is absent."""
    patient_of = patient_ids(scan_sentences)
    ensemble = params["prompts"]["ensemble"]
    result = {}
    for target, spec in zero_shot_spec["targets"].items():

        def scan_level(stage, variant, target=target):
            rows, scores = scan_probabilities(
                test_scan_scores, zero_shot_spec, target, stage, variant
            )
            if rows.empty:
                return rows, None, None
            return rows, scores, target_labels(scan_sentences, rows["scan_id"], zero_shot_spec,
                                               target)  # fmt: skip

        part = _retrieval(scan_level, spec["classes"], patient_of, params, seed)
        if target == REGIONS_TARGET:
            result[level_key("scan")] = part
        elif part:
            result.setdefault("targets", {})[target] = part
    if REGIONS_TARGET in zero_shot_spec["targets"]:
        part = _retrieval(
            lambda stage, variant: lesion_cubes(
                test_embeddings, prompt_embeddings, regions, stage, variant, ensemble
            ),
            regions,
            patient_of,
            params,
            seed,
        )
        if part:
            result[level_key("lesion")] = part
    return {key: value for key, value in result.items() if value}


def _retrieval(
    items: Callable, classes: list[str], patient_of: dict, params: dict, seed: int
) -> dict:
    """Ranking metrics of ``items(stage, variant)`` (rows, scores, labels) for the model and its
    lesion-ablated control, with the model's random and shuffled baselines."""
    part = {}
    for comparison in ("model", "lesion_ablated"):
        rows, scores, labels = items(*COMPARISONS[comparison])
        if rows.empty:
            continue
        groups = rows["scan_id"].map(patient_of).tolist()
        part[comparison] = with_intervals(
            lambda i, s=scores, y=labels: ranking_metrics(s[i], y[i], classes),
            groups,
            params,
            seed,
        )
        if comparison == "model":
            part["random"] = retrieval_random_baseline(labels, classes)
            part["shuffled"] = permutation_baseline(
                ranking_metrics,
                scores,
                labels,
                classes,
                n_permutations=params["n_permutations"],
                seed=seed,
            )
    return part
