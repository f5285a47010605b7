"""Modality-gap shift: g from training data only, identity at λ = 0, unit norm, mean movement."""

import numpy as np
import pytest

from mriclip.evaluation.modality_gap import (
    gap_sweep_table,
    modality_gap,
    shift_embeddings,
    zero_shot_gap_sweep,
)
from mriclip.evaluation.zero_shot import evaluate_zero_shot

REGIONS = ["frontal", "parietal", "temporal"]


def unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def gapped_embeddings(n=40, dim=6, seed=0):
    """Images and texts in two offset cones (the modality gap), labels shared."""
    rng = np.random.default_rng(seed)
    offset = np.zeros(dim)
    offset[0] = 2.0
    prompts_raw = rng.normal(size=(len(REGIONS), dim))
    region_index = np.arange(n) % len(REGIONS)
    images = unit(prompts_raw[region_index] + offset + 0.5 * rng.normal(size=(n, dim)))
    texts = unit(prompts_raw[region_index] - offset + 0.1 * rng.normal(size=(n, dim)))
    prompts = unit(prompts_raw - offset)
    return images, texts, prompts, np.eye(len(REGIONS), dtype=int)[region_index]


def test_gap_is_the_difference_of_training_means():
    images, texts, _, _ = gapped_embeddings()
    np.testing.assert_allclose(modality_gap(images, texts), images.mean(0) - texts.mean(0))


def test_lambda_zero_is_the_identity_on_unit_vectors():
    images, texts, _, _ = gapped_embeddings()
    shifted_images, shifted_texts = shift_embeddings(images, texts, modality_gap(images, texts), 0)
    np.testing.assert_allclose(shifted_images, images)
    np.testing.assert_allclose(shifted_texts, texts)


@pytest.mark.parametrize("lam", [-1.0, 0.3, 1.0])
def test_shifted_vectors_are_unit_norm(lam):
    images, texts, _, _ = gapped_embeddings()
    for shifted in shift_embeddings(images, texts, modality_gap(images, texts), lam):
        np.testing.assert_allclose(np.linalg.norm(shifted, axis=1), 1.0)


@pytest.mark.parametrize("lam", [-0.5, 0.5, 1.0])
def test_means_move_by_half_lambda_gap_before_renormalising(lam):
    images, texts, _, _ = gapped_embeddings()
    gap = modality_gap(images, texts)
    shifted_images, shifted_texts = shift_embeddings(images, texts, gap, lam, renormalise=False)
    np.testing.assert_allclose(shifted_texts.mean(0) - texts.mean(0), lam * gap / 2)
    np.testing.assert_allclose(shifted_images.mean(0) - images.mean(0), -lam * gap / 2)
    # The remaining gap is (1 − λ)·g: at λ = 1 the two means meet.
    np.testing.assert_allclose(
        shifted_images.mean(0) - shifted_texts.mean(0), (1 - lam) * gap, atol=1e-12
    )


def test_sweep_uses_training_gap_only_and_lambda_zero_is_the_plain_result():
    images, texts, prompts, labels = gapped_embeddings()
    train, held_out = slice(0, 30), slice(30, 40)
    sweep = zero_shot_gap_sweep(
        images[train],
        texts[train],
        images[held_out],
        prompts,
        labels[held_out],
        REGIONS,
        lambdas=(0.0, 1.0),
    )
    assert sweep["gap_norm"] == pytest.approx(
        np.linalg.norm(modality_gap(images[train], texts[train]))
    )
    assert sweep["by_lambda"]["0"] == evaluate_zero_shot(
        images[held_out], prompts, labels[held_out], REGIONS
    )
    # Changing the held-out embeddings must not change the gap that is applied.
    other = zero_shot_gap_sweep(
        images[train],
        texts[train],
        -images[held_out],
        prompts,
        labels[held_out],
        REGIONS,
        lambdas=(0.0,),
    )
    assert other["gap_norm"] == sweep["gap_norm"]
    table = gap_sweep_table(sweep)
    assert set(table["gap_lambda"]) == {0.0, 1.0}
    assert {"metric", "region", "value"} <= set(table.columns)


def test_gap_dimension_mismatch_is_named():
    images, texts, _, _ = gapped_embeddings()
    with pytest.raises(ValueError, match="text_train has dimension 5"):
        modality_gap(images, texts[:, :5])
    with pytest.raises(ValueError, match="gap has shape"):
        shift_embeddings(images, texts, np.zeros(3), 0.5)
