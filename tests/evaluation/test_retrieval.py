"""Retrieval metrics: a hand-worked ranking, sklearn AP, perfect and shuffled embeddings,
and the random-ranking formulas against exhaustive enumeration and Monte Carlo."""

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mriclip.evaluation.retrieval import (
    expected_average_precision,
    expected_reciprocal_rank,
    permutation_baseline,
    query_metrics,
    retrieval_metrics,
    retrieval_random_baseline,
)

REGIONS = ["frontal", "parietal", "temporal", "occipital", "cerebellar"]


def unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def hand_worked_case():
    """Five items on the unit circle at angles 0.1 … 0.5 rad (item i at 0.1·(i+1)).

    Prompt "near" sits at angle 0, so it ranks the items 0,1,2,3,4; prompt "far" sits at π and
    ranks them 4,3,2,1,0. Relevance in rank order is 0 1 0 1 0 for "near" (items 1 and 3) and
    0 0 1 1 0 for "far" (items 2 and 1). The rows are handed over shuffled.
    """
    angles = 0.1 * np.arange(1, 6)
    items = np.column_stack([np.cos(angles), np.sin(angles)])
    prompts = np.array([[1.0, 0.0], [-1.0, 0.0]])
    labels = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [0, 0]])
    shuffle = np.array([3, 0, 4, 1, 2])
    return items[shuffle], prompts, labels[shuffle]


# R = 2 for both. near: first hit at rank 2; hits at ranks 2 and 4.
NEAR = {
    "mrr": 1 / 2,
    "average_precision": (1 / 2 + 2 / 4) / 2,
    "r_precision": 1 / 2,  # P@2
    "reference_map": (0 + 1 / 2) / 2,  # mean of P@1, P@2
    "reference_mrr": 1 / 2,  # first hit at rank 2 <= R
    "precision_at_1": 0.0,
    "precision_at_3": 1 / 3,
    "precision_at_5": 2 / 5,
}
# far: first hit at rank 3; hits at ranks 3 and 4.
FAR = {
    "mrr": 1 / 3,
    "average_precision": (1 / 3 + 2 / 4) / 2,
    "r_precision": 0.0,
    "reference_map": 0.0,
    "reference_mrr": 0.0,  # first hit at rank 3 > R = 2
    "precision_at_1": 0.0,
    "precision_at_3": 1 / 3,
    "precision_at_5": 2 / 5,
}


def test_hand_worked_five_item_ranking():
    items, prompts, labels = hand_worked_case()
    metrics = retrieval_metrics(items, prompts, labels, ["near", "far"], precision_at=(1, 3, 5))
    assert metrics["per_region"]["near"] == pytest.approx(NEAR)
    assert metrics["per_region"]["far"] == pytest.approx(FAR)
    assert metrics["overall"] == pytest.approx({k: (NEAR[k] + FAR[k]) / 2 for k in NEAR})
    assert metrics["counts"] == {"n_samples": 5, "n_relevant": {"near": 2, "far": 2}}


def test_average_precision_matches_sklearn_and_the_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        relevant = rng.random(30) < 0.3
        relevant[rng.integers(30)] = True
        distances = rng.random(30)
        metrics = query_metrics(relevant, distances)
        assert metrics["average_precision"] == pytest.approx(
            average_precision_score(relevant, -distances)
        )
        hits = relevant[np.argsort(distances)]
        precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        assert metrics["average_precision"] == pytest.approx(precision_at_hits.mean())


def test_perfect_embeddings_score_one():
    rng = np.random.default_rng(1)
    prompts = unit(rng.normal(size=(5, 16)))
    region_index = np.tile(np.arange(5), 6)
    metrics = retrieval_metrics(prompts[region_index], prompts, np.eye(5)[region_index], REGIONS)
    for region_metrics in [*metrics["per_region"].values(), metrics["overall"]]:
        # P@10 of a region with 6 relevant items cannot exceed 6/10.
        expected = {k: 0.6 if k == "precision_at_10" else 1.0 for k in region_metrics}
        assert region_metrics == pytest.approx(expected)


def test_regions_without_contrast_are_skipped():
    items, prompts, labels = hand_worked_case()
    labels[:, 1] = 0
    metrics = retrieval_metrics(items, prompts, labels, ["near", "far"], precision_at=(1,))
    assert metrics["skipped_regions"] == {"far": "no positive samples"}
    assert list(metrics["per_region"]) == ["near"]
    labels[:, 1] = 1
    metrics = retrieval_metrics(items, prompts, labels, ["near", "far"], precision_at=(1,))
    assert metrics["skipped_regions"] == {"far": "every sample is positive"}


def test_mismatched_shapes_raise_naming_the_arrays():
    items, prompts, labels = hand_worked_case()
    with pytest.raises(ValueError, match="labels has shape"):
        retrieval_metrics(items, prompts, labels[:4], ["near", "far"])
    with pytest.raises(ValueError, match="prompt_embeddings has 2 rows but regions has 1"):
        retrieval_metrics(items, prompts, labels, ["near"])
    with pytest.raises(ValueError, match="image_embeddings has dimension 3"):
        retrieval_metrics(np.ones((5, 3)), prompts, labels, ["near", "far"])


def literal_expected_mrr(n, r):
    """The textbook form: sum_{i=1}^{n-R+1} (1/i) C(n-i, R-1) / C(n, R)."""
    return sum((1 / i) * math.comb(n - i, r - 1) / math.comb(n, r) for i in range(1, n - r + 2))


@pytest.mark.parametrize(("n", "r"), [(1, 1), (5, 1), (5, 2), (7, 7), (40, 3), (300, 20)])
def test_expected_mrr_equals_the_binomial_formula(n, r):
    assert expected_reciprocal_rank(n, r) == pytest.approx(literal_expected_mrr(n, r), rel=1e-12)


@pytest.mark.parametrize(("n", "r"), [(5, 1), (5, 2), (6, 3), (8, 5)])
def test_random_baseline_matches_exhaustive_enumeration(n, r):
    """Every placement of R relevant items among n is equally likely under a random ranking."""
    placements = []
    for positions in itertools.combinations(range(n), r):
        relevant = np.zeros(n, bool)
        relevant[list(positions)] = True
        placements.append(query_metrics(relevant, np.arange(n), precision_at=(1, 3)))
    exact = {key: np.mean([p[key] for p in placements]) for key in placements[0]}
    labels = np.zeros((n, 2), int)
    labels[:r, 0] = 1
    labels[0, 1] = 1
    baseline = retrieval_random_baseline(labels, ["a", "b"], precision_at=(1, 3))
    assert baseline["per_region"]["a"] == pytest.approx(exact)
    assert expected_average_precision(n, r) == pytest.approx(exact["average_precision"])


def test_expected_mrr_and_ap_match_monte_carlo():
    """n = 60, R = 4, 20000 random rankings, scored independently of query_metrics.

    4 standard errors of the Monte Carlo mean bound a false alarm at ~1e-4 (and the seed
    fixes the draw, so the test cannot flake).
    """
    n, r, draws = 60, 4, 20000
    rng = np.random.default_rng(7)
    # Ranks (1-based, ascending) of the R relevant items in each random ranking.
    ranks = np.sort(np.argsort(rng.random((draws, n)), axis=1)[:, :r] + 1, axis=1)
    samples = {
        "mrr": 1 / ranks[:, 0],
        "average_precision": (np.arange(1, r + 1) / ranks).mean(axis=1),
    }
    for key, expected in (
        ("mrr", expected_reciprocal_rank(n, r)),
        ("average_precision", expected_average_precision(n, r)),
    ):
        values = samples[key]
        assert abs(values.mean() - expected) < 4 * values.std(ddof=1) / np.sqrt(draws), key


def test_shuffled_embeddings_land_on_the_random_baseline():
    rng = np.random.default_rng(2)
    prompts = unit(rng.normal(size=(3, 8)))
    region_index = rng.integers(0, 3, 45)
    images = unit(prompts[region_index] + 0.5 * rng.normal(size=(45, 8)))
    labels = np.eye(3, dtype=int)[region_index]
    regions = REGIONS[:3]
    shuffled = permutation_baseline(
        retrieval_metrics, images, prompts, labels, regions, n_permutations=120, seed=5
    )
    baseline = retrieval_random_baseline(labels, regions)
    # Same 4-standard-error bound as above, per averaged metric.
    for metric, expected in baseline["overall"].items():
        stats = shuffled["overall"][metric]
        assert abs(stats["mean"] - expected) < 4 * stats["sem"], metric
    real = retrieval_metrics(images, prompts, labels, regions)["overall"]
    assert real["average_precision"] > baseline["overall"]["average_precision"] + 0.2
