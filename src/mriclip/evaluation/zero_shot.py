"""Zero-shot classification: score each sample against one text prompt per region.

A sample's score for a region is the cosine similarity of its image embedding to the region's
prompt embedding ("There is a lesion in the {region} section."), optionally turned into a
softmax over regions as the reference implementation does. Labels are a binary (samples,
regions) matrix: several regions per scan are allowed; at lesion level each row has one 1.

Metrics (``zero_shot_metrics``):

- ``per_region[region]["auc"]``: one-vs-rest ROC AUC; regions where the labels hold one class
  only are left out and listed in ``skipped_regions`` with the reason.
- ``overall["auc_macro"]``: mean of the per-region AUCs.
- ``overall["auc_micro_pooled"]``: the paper's "AUC average" (sklearn's
  ``roc_auc_score(labels, scores, average="micro")``): all (sample, region) cells pooled into one
  binary problem. Unlike the macro AUC it depends on how scores compare *across* regions, so
  cosine and softmax scores give different values.
- ``overall["top{k}_accuracy"]``: share of samples whose k best-scored regions include a true
  one; ``overall["class_mrr"]``: mean 1 / rank of the best-ranked true region (the reference's
  "MRR of the true class"). Samples without any labelled region cannot be hit and are left out
  of both (``counts["n_samples_without_region"]``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import softmax

from mriclip.evaluation.rank_metrics import roc_auc
from mriclip.evaluation.retrieval import (
    as_matrix,
    check_label_matrix,
    check_same_dim,
    expected_reciprocal_rank,
    probability_hit_in_top,
    single_class_reason,
    unit_rows,
)

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = (1, 3)


def zero_shot_scores(
    image_embeddings: Any, prompt_embeddings: Any, logit_scale: float | None = None
) -> np.ndarray:
    """(n, k) cosine similarities of samples to region prompts.

    With ``logit_scale`` the rows become softmax(logit_scale · cosine) over regions. The scale
    is the multiplier itself (the reference's learnable 1.351, or exp of a CLIP-style log scale),
    not its logarithm.
    """
    where = "zero_shot_scores"
    images = unit_rows(image_embeddings, "image_embeddings", where)
    prompts = unit_rows(prompt_embeddings, "prompt_embeddings", where)
    check_same_dim(images, "image_embeddings", prompts, "prompt_embeddings", where)
    cosine = images @ prompts.T
    if logit_scale is None:
        return cosine
    return softmax(logit_scale * cosine, axis=1)


def _best_true_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of each row's best-scored true region (ties: earlier region first)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    hits_in_rank_order = np.take_along_axis(labels, order, axis=1).astype(bool)
    return np.argmax(hits_in_rank_order, axis=1) + 1


def _overall_keys(top_k: Sequence[int]) -> list[str]:
    return [f"top{k}_accuracy" for k in top_k] + ["class_mrr"]


def zero_shot_metrics(
    scores: Any, labels: Any, regions: Sequence[str], top_k: Sequence[int] = DEFAULT_TOP_K
) -> dict[str, Any]:
    """Per-region and averaged AUC, top-k accuracy and class MRR of (n, k) ``scores``.

    Returns ``per_region`` {region: {"auc"}}, ``overall`` {"auc_macro", "auc_micro_pooled",
    "top{k}_accuracy" for k in ``top_k``, "class_mrr"}, ``skipped_regions`` {region: reason},
    ``skipped_metrics`` {metric: reason} (a metric the labels cannot support is left out of
    ``overall``, never NaN) and ``counts`` {"n_samples", "n_samples_without_region",
    "n_positive": {region: count}}.
    """
    where = "zero_shot_metrics"
    scores = as_matrix(scores, "scores", where)
    if scores.shape[1] != len(regions):
        raise ValueError(
            f"{where}: scores has {scores.shape[1]} columns but regions has {len(regions)} names"
        )
    labels = check_label_matrix(labels, scores.shape[0], "scores", regions, where)

    per_region, skipped_regions = {}, {}
    for index, region in enumerate(regions):
        reason = single_class_reason(labels[:, index])
        if reason:
            skipped_regions[region] = reason
            continue
        per_region[region] = {"auc": roc_auc(labels[:, index], scores[:, index])}
    if skipped_regions:
        logger.info("%s: AUC skipped for %s", where, skipped_regions)

    overall, skipped_metrics = {}, {}
    if per_region:
        overall["auc_macro"] = float(np.mean([m["auc"] for m in per_region.values()]))
    else:
        skipped_metrics["auc_macro"] = "no region has both positive and negative samples"
    pooled_reason = single_class_reason(labels.ravel())
    if pooled_reason:
        skipped_metrics["auc_micro_pooled"] = f"pooled labels: {pooled_reason}"
    else:
        overall["auc_micro_pooled"] = roc_auc(labels.ravel(), scores.ravel())

    labelled = labels.sum(axis=1) > 0
    if labelled.any():
        ranks = _best_true_rank(scores[labelled], labels[labelled])
        for k in top_k:
            overall[f"top{k}_accuracy"] = float(np.mean(ranks <= k))
        overall["class_mrr"] = float(np.mean(1.0 / ranks))
    else:
        skipped_metrics.update(dict.fromkeys(_overall_keys(top_k), "no sample has a region"))

    return {
        "per_region": per_region,
        "overall": overall,
        "skipped_regions": skipped_regions,
        "skipped_metrics": skipped_metrics,
        "counts": {
            "n_samples": int(labels.shape[0]),
            "n_samples_without_region": int((~labelled).sum()),
            "n_positive": {region: int(labels[:, j].sum()) for j, region in enumerate(regions)},
        },
    }


def zero_shot_random_baseline(
    labels: Any, regions: Sequence[str], top_k: Sequence[int] = DEFAULT_TOP_K
) -> dict[str, Any]:
    """Exact expectations of ``zero_shot_metrics`` for scores that rank regions at random.

    AUCs are 0.5. For a sample with m true regions out of k, P(hit in top t) = 1 − C(k−m, t) /
    C(k, t) and E[1/rank of the first true region] follows the first-hit distribution; both are
    averaged over samples with at least one region. Same keys and skips as the metrics.
    """
    where = "zero_shot_random_baseline"
    labels = np.asarray(labels)
    labels = check_label_matrix(labels, len(labels), "labels", regions, where)
    chance = zero_shot_metrics(np.zeros(labels.shape), labels, regions, top_k)
    n_regions = labels.shape[1]
    positives_per_row = labels.sum(axis=1)
    positives_per_row = positives_per_row[positives_per_row > 0]
    overall = {key: 0.5 for key in ("auc_macro", "auc_micro_pooled") if key in chance["overall"]}
    if len(positives_per_row):
        for k in top_k:
            overall[f"top{k}_accuracy"] = float(
                np.mean([probability_hit_in_top(n_regions, int(m), k) for m in positives_per_row])
            )
        overall["class_mrr"] = float(
            np.mean([expected_reciprocal_rank(n_regions, int(m)) for m in positives_per_row])
        )
    # Constant scores reuse the metric's own skip rules, so keys match region for region.
    return {
        **chance,
        "per_region": {region: {"auc": 0.5} for region in chance["per_region"]},
        "overall": overall,
    }


def evaluate_zero_shot(
    image_embeddings: Any,
    prompt_embeddings: Any,
    labels: Any,
    regions: Sequence[str],
    logit_scale: float | None = None,
    top_k: Sequence[int] = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """``zero_shot_metrics`` of ``zero_shot_scores``: embeddings in, metric dict out."""
    prompts = as_matrix(prompt_embeddings, "prompt_embeddings", "evaluate_zero_shot")
    if len(prompts) != len(regions):
        raise ValueError(
            f"evaluate_zero_shot: prompt_embeddings has {len(prompts)} rows but regions has "
            f"{len(regions)} names"
        )
    scores = zero_shot_scores(image_embeddings, prompts, logit_scale)
    return zero_shot_metrics(scores, labels, regions, top_k)
