"""Retrieval: rank samples by their distance to each region prompt, and score the rankings.

For every region prompt the samples are ordered nearest-first by the Euclidean distance of
L2-normalised embeddings (the same order as descending cosine similarity). A sample is relevant
to a region when its label row marks that region.

Standard metrics per region, then their macro mean over regions:

- ``mrr``: 1 / rank of the first relevant sample.
- ``average_precision``: as sklearn's ``average_precision_score`` (mean of the precision at each
  relevant sample's rank); the mean over regions is the standard mAP.
- ``r_precision``: precision in the top R, R = number of relevant samples.
- ``precision_at_{k}``: precision in the top k.

The paper's reference implementation reports two non-standard variants; we compute them too,
named so nobody mistakes them for the standard ones:

- ``reference_map``: mean of P@1 … P@R (not AP: it rewards relevant samples early in the top R
  only, and ignores those ranked after R).
- ``reference_mrr``: 1 / rank of the first relevant sample if it is within the top R, else 0.

Random baselines are exact expectations under a uniformly random ranking. The module also holds
the input checks and random-ranking formulas that ``zero_shot`` reuses (zero-shot classification
ranks regions for a sample, retrieval ranks samples for a region: the same combinatorics).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances

from mriclip.evaluation.rank_metrics import average_precision
from mriclip.evaluation.summary import mean_and_sem

logger = logging.getLogger(__name__)

DEFAULT_PRECISION_AT = (1, 5, 10)


# --- input checks shared by the evaluation modules -------------------------------------------


def as_matrix(array: Any, name: str, where: str) -> np.ndarray:
    """``array`` as a finite, non-empty 2-D float matrix, or a ValueError naming it."""
    matrix = np.asarray(array, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"{where}: {name} must be 2-D (rows, columns), got shape {matrix.shape}")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{where}: {name} is empty (shape {matrix.shape})")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{where}: {name} contains NaN or infinite values")
    return matrix


def unit_rows(array: Any, name: str, where: str) -> np.ndarray:
    """Rows of ``array`` scaled to unit L2 norm; an all-zero row has no direction and is refused."""
    matrix = as_matrix(array, name, where)
    norms = np.linalg.norm(matrix, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{where}: {name} row {int(np.argmin(norms))} is all zeros")
    return matrix / norms[:, None]


def check_same_dim(
    first: np.ndarray, first_name: str, second: np.ndarray, second_name: str, where: str
) -> None:
    if first.shape[1] != second.shape[1]:
        raise ValueError(
            f"{where}: {first_name} has dimension {first.shape[1]} but {second_name} has "
            f"dimension {second.shape[1]}; they must live in the same embedding space"
        )


def check_label_matrix(
    labels: Any,
    n_rows: int,
    rows_name: str,
    regions: Sequence[str],
    where: str,
    labels_name: str = "labels",
) -> np.ndarray:
    """A binary (n_rows, len(regions)) int matrix, or a ValueError naming what does not fit."""
    if len(set(regions)) != len(regions):
        raise ValueError(f"{where}: regions has duplicate names: {list(regions)}")
    matrix = np.asarray(labels)
    if matrix.ndim != 2:
        raise ValueError(
            f"{where}: {labels_name} must be 2-D (samples, regions), got shape {matrix.shape}"
        )
    if matrix.shape != (n_rows, len(regions)):
        raise ValueError(
            f"{where}: {labels_name} has shape {matrix.shape} but {rows_name} has {n_rows} rows "
            f"and regions has {len(regions)} names; expected ({n_rows}, {len(regions)})"
        )
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError(
            f"{where}: {labels_name} must be binary 0/1, found values {np.unique(matrix)[:10]}"
        )
    return matrix.astype(int)


def single_class_reason(column: np.ndarray) -> str | None:
    """Why a 0/1 column cannot separate positives from negatives, or None when it can."""
    positives = int(column.sum())
    if positives == 0:
        return "no positive samples"
    if positives == len(column):
        return "every sample is positive"
    return None


# --- random-ranking expectations ---------------------------------------------------------------


def first_hit_probabilities(n_items: int, n_relevant: int) -> np.ndarray:
    """P(first relevant item is at rank i), i = 1 … n−R+1, under a uniformly random ranking.

    Equals C(n−i, R−1) / C(n, R); computed by the ratio of consecutive terms,
    (n−i−R+1)/(n−i), so large n needs no huge binomials.
    """
    if not 1 <= n_relevant <= n_items:
        raise ValueError(f"need 1 <= n_relevant <= n_items, got {n_relevant} of {n_items}")
    ranks = np.arange(1, n_items - n_relevant + 1)
    ratios = (n_items - ranks - n_relevant + 1) / (n_items - ranks)
    return (n_relevant / n_items) * np.concatenate(([1.0], np.cumprod(ratios)))


def expected_reciprocal_rank(n_items: int, n_relevant: int, within: int | None = None) -> float:
    """E[1 / rank of the first relevant item] for a random ranking.

    ``within=R`` counts a first hit beyond rank R as 0 (the reference implementation's MRR).
    """
    probabilities = first_hit_probabilities(n_items, n_relevant)
    reciprocal = 1.0 / np.arange(1, len(probabilities) + 1)
    if within is not None:
        reciprocal[within:] = 0.0
    return float(probabilities @ reciprocal)


def expected_average_precision(n_items: int, n_relevant: int) -> float:
    """E[AP] for a random ranking, exactly.

    AP = (1/R) Σ_k rel_k · P@k. With E[rel_k] = R/n and E[rel_j rel_k] = R(R−1)/(n(n−1)) for
    j ≠ k, this sums to ((n−R)·H_n + n(R−1)) / (n(n−1)), H_n the n-th harmonic number.
    """
    if not 1 <= n_relevant <= n_items:
        raise ValueError(f"need 1 <= n_relevant <= n_items, got {n_relevant} of {n_items}")
    if n_items == 1:
        return 1.0
    harmonic = float(np.sum(1.0 / np.arange(1, n_items + 1)))
    n, r = n_items, n_relevant
    return ((n - r) * harmonic + n * (r - 1)) / (n * (n - 1))


def probability_hit_in_top(n_items: int, n_relevant: int, depth: int) -> float:
    """P(at least one relevant item in the top ``depth``) = 1 − C(n−R, t) / C(n, t), t ≤ n."""
    depth = min(depth, n_items)
    return 1.0 - math.comb(n_items - n_relevant, depth) / math.comb(n_items, depth)


# --- ranking and metrics -----------------------------------------------------------------------


def prompt_distances(
    image_embeddings: Any, prompt_embeddings: Any, where: str = "prompt_distances"
) -> np.ndarray:
    """(k, n) Euclidean distances between normalised prompts (rows) and samples (columns)."""
    images = unit_rows(image_embeddings, "image_embeddings", where)
    prompts = unit_rows(prompt_embeddings, "prompt_embeddings", where)
    check_same_dim(images, "image_embeddings", prompts, "prompt_embeddings", where)
    return euclidean_distances(prompts, images)


def query_metrics(
    relevant: np.ndarray, distances: np.ndarray, precision_at: Sequence[int] = DEFAULT_PRECISION_AT
) -> dict[str, float]:
    """All retrieval metrics of one query: ``relevant`` 0/1 and ``distances`` per sample.

    Needs at least one relevant sample. Ties in distance are broken by sample order for the
    rank-based metrics; sklearn's AP treats tied samples as one threshold.
    """
    relevant = np.asarray(relevant).astype(bool)
    n_relevant = int(relevant.sum())
    if n_relevant == 0:
        raise ValueError("query_metrics: no relevant sample, the ranking cannot be scored")
    hits = relevant[np.argsort(distances, kind="stable")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    first_rank = int(np.argmax(hits)) + 1
    metrics = {
        "mrr": 1.0 / first_rank,
        "average_precision": average_precision(relevant, -np.asarray(distances)),
        "r_precision": float(precision[n_relevant - 1]),
        "reference_map": float(precision[:n_relevant].mean()),
        "reference_mrr": 1.0 / first_rank if first_rank <= n_relevant else 0.0,
    }
    for depth in precision_at:
        # Beyond the list's end the precision of the whole list is the only honest value.
        metrics[f"precision_at_{depth}"] = float(precision[min(depth, len(hits)) - 1])
    return metrics


def _expected_query_metrics(
    n_items: int, n_relevant: int, precision_at: Sequence[int]
) -> dict[str, float]:
    base_rate = n_relevant / n_items  # E[P@t] for any depth t, hence also R-precision, ref. mAP
    metrics = {
        "mrr": expected_reciprocal_rank(n_items, n_relevant),
        "average_precision": expected_average_precision(n_items, n_relevant),
        "r_precision": base_rate,
        "reference_map": base_rate,
        "reference_mrr": expected_reciprocal_rank(n_items, n_relevant, within=n_relevant),
    }
    metrics.update({f"precision_at_{depth}": base_rate for depth in precision_at})
    return metrics


def _per_region(
    labels: np.ndarray,
    regions: Sequence[str],
    score_region: Callable[[int, np.ndarray], dict[str, float]],
) -> dict[str, Any]:
    """Apply ``score_region(j, relevant)`` to each region that has both classes; macro-average."""
    per_region, skipped = {}, {}
    for index, region in enumerate(regions):
        reason = single_class_reason(labels[:, index])
        if reason:
            skipped[region] = reason
            continue
        per_region[region] = score_region(index, labels[:, index])
    if skipped:
        logger.info("retrieval: skipped regions %s", skipped)
    overall = {}
    if per_region:
        names = next(iter(per_region.values())).keys()
        overall = {name: float(np.mean([m[name] for m in per_region.values()])) for name in names}
    return {
        "per_region": per_region,
        "overall": overall,
        "skipped_regions": skipped,
        "counts": {
            "n_samples": int(labels.shape[0]),
            "n_relevant": {region: int(labels[:, j].sum()) for j, region in enumerate(regions)},
        },
    }


def retrieval_metrics(
    image_embeddings: Any,
    prompt_embeddings: Any,
    labels: Any,
    regions: Sequence[str],
    precision_at: Sequence[int] = DEFAULT_PRECISION_AT,
) -> dict[str, Any]:
    """Rank samples for each region prompt and score the rankings against ``labels``.

    Returns ``per_region`` {region: {metric: value}}, ``overall`` {metric: macro mean over the
    scored regions}, ``skipped_regions`` {region: reason} (no relevant sample, or all relevant:
    nothing to rank) and ``counts`` (``n_samples``, ``n_relevant`` per region).
    """
    where = "retrieval_metrics"
    distances = prompt_distances(image_embeddings, prompt_embeddings, where)
    if len(regions) != distances.shape[0]:
        raise ValueError(
            f"{where}: prompt_embeddings has {distances.shape[0]} rows but regions has "
            f"{len(regions)} names"
        )
    return ranking_metrics(-distances.T, labels, regions, precision_at)


def ranking_metrics(
    scores: Any,
    labels: Any,
    regions: Sequence[str],
    precision_at: Sequence[int] = DEFAULT_PRECISION_AT,
) -> dict[str, Any]:
    """``retrieval_metrics`` of samples ranked by (n, k) ``scores``, highest first per region
    (e.g. a scan's aggregated patch evidence for each region prompt)."""
    where = "ranking_metrics"
    scores = as_matrix(scores, "scores", where)
    if scores.shape[1] != len(regions):
        raise ValueError(
            f"{where}: scores has {scores.shape[1]} columns but regions has {len(regions)} names"
        )
    labels = check_label_matrix(labels, scores.shape[0], "scores", regions, where)
    too_deep = [depth for depth in precision_at if depth > labels.shape[0]]
    if too_deep:
        logger.debug(
            "%s: precision_at %s exceeds the %d samples; using the whole list",
            where,
            too_deep,
            labels.shape[0],
        )
    return _per_region(
        labels,
        regions,
        lambda j, relevant: query_metrics(relevant, -scores[:, j], precision_at),
    )


def retrieval_random_baseline(
    labels: Any, regions: Sequence[str], precision_at: Sequence[int] = DEFAULT_PRECISION_AT
) -> dict[str, Any]:
    """Exact expectations of every ``retrieval_metrics`` value under a random ranking.

    Same keys and skipped regions as ``retrieval_metrics`` on the same labels.
    """
    labels = np.asarray(labels)
    labels = check_label_matrix(labels, len(labels), "labels", regions, "retrieval_random_baseline")
    n_items = labels.shape[0]
    return _per_region(
        labels,
        regions,
        lambda _, relevant: _expected_query_metrics(n_items, int(relevant.sum()), precision_at),
    )


def permutation_baseline(
    metric_fn: Callable[..., dict],
    embeddings: Any,
    *args: Any,
    n_permutations: int = 100,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Any metric on row-shuffled embeddings: ``mean_and_sem`` over seeded permutations.

    ``metric_fn(shuffled_embeddings, *args, **kwargs)`` must return a (nested) metric dict.
    Shuffling the rows breaks the pairing of embeddings with labels while keeping their
    distribution, an empirical check of the analytic baselines.
    """
    matrix = as_matrix(embeddings, "embeddings", "permutation_baseline")
    if n_permutations < 1:
        raise ValueError(f"permutation_baseline: n_permutations must be >= 1, got {n_permutations}")
    rng = np.random.default_rng(seed)
    results = [
        metric_fn(matrix[rng.permutation(len(matrix))], *args, **kwargs)
        for _ in range(n_permutations)
    ]
    return mean_and_sem(results)
