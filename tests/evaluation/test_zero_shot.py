"""Zero-shot scores and metrics against sklearn, hand-worked cases and exact random baselines."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mriclip.evaluation.retrieval import permutation_baseline
from mriclip.evaluation.zero_shot import (
    evaluate_zero_shot,
    zero_shot_metrics,
    zero_shot_random_baseline,
    zero_shot_scores,
)

REGIONS = ["frontal", "parietal", "temporal", "occipital", "cerebellar"]


def unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def noisy_cohort(n=60, dim=8, noise=1.0, seed=0):
    """Image embeddings near their region's prompt; one-hot lesion-level labels."""
    rng = np.random.default_rng(seed)
    prompts = unit(rng.normal(size=(len(REGIONS), dim)))
    region_index = rng.integers(0, len(REGIONS), n)
    images = unit(prompts[region_index] + noise * rng.normal(size=(n, dim)))
    return images, prompts, np.eye(len(REGIONS), dtype=int)[region_index]


def leaves(tree):
    for value in tree.values():
        if isinstance(value, dict):
            yield from leaves(value)
        else:
            yield value


def test_scores_are_cosines_and_softmax_rows_sum_to_one():
    images, prompts, _ = noisy_cohort()
    scaled = 3.0 * images  # cosine must not depend on the vectors' lengths
    cosine = zero_shot_scores(scaled, prompts)
    np.testing.assert_allclose(cosine, images @ prompts.T, atol=1e-12)
    probabilities = zero_shot_scores(images, prompts, logit_scale=1.351)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    expected = np.exp(1.351 * cosine) / np.exp(1.351 * cosine).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected)


def test_aucs_match_sklearn():
    images, prompts, labels = noisy_cohort()
    scores = zero_shot_scores(images, prompts)
    metrics = zero_shot_metrics(scores, labels, REGIONS)
    for index, region in enumerate(REGIONS):
        expected = roc_auc_score(labels[:, index], scores[:, index])
        assert metrics["per_region"][region]["auc"] == pytest.approx(expected)
    assert metrics["overall"]["auc_macro"] == pytest.approx(
        np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in range(len(REGIONS))])
    )
    assert metrics["overall"]["auc_micro_pooled"] == pytest.approx(
        roc_auc_score(labels.ravel(), scores.ravel())
    )


def test_hand_worked_top_k_and_class_mrr_with_multi_label_and_unlabelled_rows():
    regions = ["a", "b", "c"]
    scores = np.array(
        [
            [0.9, 0.5, 0.1],  # true a, ranked 1st
            [0.2, 0.8, 0.7],  # true a, ranked 3rd
            [0.3, 0.2, 0.1],  # true b and c: best true region ranked 2nd
            [0.1, 0.2, 0.9],  # true c, ranked 1st
            [0.5, 0.4, 0.3],  # no region: cannot be hit, left out
        ]
    )
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]])
    overall = zero_shot_metrics(scores, labels, regions, top_k=(1, 2))["overall"]
    assert overall["top1_accuracy"] == pytest.approx(2 / 4)
    assert overall["top2_accuracy"] == pytest.approx(3 / 4)
    assert overall["class_mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1) / 4)
    counts = zero_shot_metrics(scores, labels, regions)["counts"]
    assert counts["n_samples_without_region"] == 1


def test_perfect_embeddings_score_one():
    rng = np.random.default_rng(1)
    prompts = unit(rng.normal(size=(5, 16)))
    region_index = np.tile(np.arange(5), 4)
    metrics = evaluate_zero_shot(prompts[region_index], prompts, np.eye(5)[region_index], REGIONS)
    assert all(m["auc"] == 1.0 for m in metrics["per_region"].values())
    assert metrics["overall"] == pytest.approx(
        {
            "auc_macro": 1,
            "auc_micro_pooled": 1,
            "top1_accuracy": 1,
            "top3_accuracy": 1,
            "class_mrr": 1,
        }
    )


def test_single_class_region_is_skipped_with_reason_and_no_nan():
    images, prompts, labels = noisy_cohort()
    labels[:, 2] = 0  # no temporal lesion in this fold
    metrics = evaluate_zero_shot(images, prompts, labels, REGIONS)
    assert "temporal" not in metrics["per_region"]
    assert metrics["skipped_regions"] == {"temporal": "no positive samples"}
    kept = [metrics["per_region"][r]["auc"] for r in REGIONS if r != "temporal"]
    assert metrics["overall"]["auc_macro"] == pytest.approx(np.mean(kept))
    assert not any(isinstance(v, float) and np.isnan(v) for v in leaves(metrics))


def test_metric_without_support_is_listed_not_nan():
    metrics = zero_shot_metrics(np.ones((3, 2)), np.zeros((3, 2)), ["a", "b"])
    assert metrics["overall"] == {}
    assert set(metrics["skipped_metrics"]) == {
        "auc_macro",
        "auc_micro_pooled",
        "top1_accuracy",
        "top3_accuracy",
        "class_mrr",
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda E, P, Y: zero_shot_metrics(E @ P.T, Y[:-1], REGIONS), "labels has shape"),
        (lambda E, P, Y: zero_shot_metrics(E @ P.T, Y, REGIONS[:4]), "scores has 5 columns"),
        (lambda E, P, Y: zero_shot_scores(E[:, :4], P), "image_embeddings has dimension 4"),
        (lambda E, P, Y: zero_shot_metrics(E @ P.T, 2 * Y, REGIONS), "labels must be binary"),
        (lambda E, P, Y: evaluate_zero_shot(E, P[:4], Y, REGIONS), "prompt_embeddings has 4"),
    ],
)
def test_bad_shapes_raise_naming_the_arrays(call, message):
    images, prompts, labels = noisy_cohort()
    with pytest.raises(ValueError, match=message):
        call(images, prompts, labels)


def test_random_top_k_baseline_matches_exhaustive_enumeration():
    """Average over every ordering of 5 regions: the exact value of a random ranking."""
    n_regions = 5
    labels = np.array([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 0, 0]])
    baseline = zero_shot_random_baseline(labels, REGIONS, top_k=(1, 3))["overall"]
    hits = {1: [], 3: []}
    reciprocal = []
    for row in labels[labels.sum(axis=1) > 0]:
        for order in itertools.permutations(range(n_regions)):
            ranked = row[list(order)]
            first = int(np.argmax(ranked)) + 1
            reciprocal.append(1 / first)
            for k in hits:
                hits[k].append(first <= k)
    assert baseline["top1_accuracy"] == pytest.approx(np.mean(hits[1]))
    assert baseline["top3_accuracy"] == pytest.approx(np.mean(hits[3]))
    assert baseline["class_mrr"] == pytest.approx(np.mean(reciprocal))
    assert baseline["auc_macro"] == baseline["auc_micro_pooled"] == 0.5


def test_shuffled_embeddings_land_on_the_random_baseline():
    """60 seeded permutations; 4 standard errors of their mean bound a false alarm at ~1e-4."""
    images, prompts, labels = noisy_cohort(n=80, noise=0.5)
    shuffled = permutation_baseline(
        evaluate_zero_shot, images, prompts, labels, REGIONS, n_permutations=60, seed=3
    )
    baseline = zero_shot_random_baseline(labels, REGIONS)["overall"]
    for metric in ("auc_macro", "auc_micro_pooled", "top1_accuracy", "class_mrr"):
        stats = shuffled["overall"][metric]
        assert abs(stats["mean"] - baseline[metric]) < 4 * stats["sem"], metric
    # The unshuffled embeddings are far above it, so the test can tell the two apart.
    assert evaluate_zero_shot(images, prompts, labels, REGIONS)["overall"]["auc_macro"] > 0.8
