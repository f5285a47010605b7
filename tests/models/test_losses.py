"""Contrastive losses against straightforward per-pair Python computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mriclip.models.losses import clip_loss, positive_mask_from_keys, siglip_loss


def random_embeddings(n: int = 6, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=1)
    text = F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=1)
    return image, text


def loop_clip_loss(image, text, scale, positives) -> float:
    """Mean over rows and over columns of -sum_p target_p log softmax_p, averaged both ways."""
    n = len(image)
    logits = [[scale * float(image[i] @ text[j]) for j in range(n)] for i in range(n)]

    def direction(score) -> float:
        total = 0.0
        for i in range(n):
            log_norm = math.log(sum(math.exp(score(i, j)) for j in range(n)))
            matches = [j for j in range(n) if positives(i, j)]
            total += -sum(score(i, j) - log_norm for j in matches) / len(matches)
        return total / n

    image_to_text = direction(lambda i, j: logits[i][j])
    text_to_image = direction(lambda i, j: logits[j][i])
    return (image_to_text + text_to_image) / 2


def loop_siglip_loss(image, text, scale, bias, positives) -> float:
    n = len(image)
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if positives(i, j) else -1.0
            logit = scale * float(image[i] @ text[j]) + bias
            total += -math.log(1 / (1 + math.exp(-label * logit)))
    return total / n


def diagonal(i: int, j: int) -> bool:
    return i == j


def test_clip_loss_matches_per_pair_computation():
    image, text = random_embeddings()
    loss = clip_loss(image, text, torch.tensor(7.0, dtype=torch.float64))
    assert loss.item() == pytest.approx(loop_clip_loss(image, text, 7.0, diagonal), rel=1e-12)


def test_label_aware_clip_loss_matches_per_pair_computation():
    image, text = random_embeddings()
    keys = ["a", "b", "a", ("x", "y"), ("y", "x"), "c"]
    mask = positive_mask_from_keys(keys)
    loss = clip_loss(image, text, torch.tensor(5.0, dtype=torch.float64), mask)
    expected = loop_clip_loss(image, text, 5.0, lambda i, j: bool(mask[i, j]))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_label_aware_with_distinct_keys_equals_plain_clip_loss():
    image, text = random_embeddings()
    scale = torch.tensor(3.0, dtype=torch.float64)
    mask = positive_mask_from_keys(["a", "b", "c", "d", ("e",), ("e", "f")])
    assert torch.equal(mask, torch.eye(6, dtype=torch.bool))
    assert clip_loss(image, text, scale, mask).item() == pytest.approx(
        clip_loss(image, text, scale).item(), rel=1e-12
    )


@pytest.mark.parametrize("label_aware", [False, True])
def test_siglip_loss_matches_per_pair_computation(label_aware):
    image, text = random_embeddings()
    mask = positive_mask_from_keys(["a", "b", "a", "c", "d", "b"]) if label_aware else None
    positives = (lambda i, j: bool(mask[i, j])) if label_aware else diagonal
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    loss = siglip_loss(image, text, scale, bias, mask)
    expected = loop_siglip_loss(image, text, 10.0, -3.0, positives)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_perfectly_aligned_embeddings_give_low_loss():
    aligned = torch.eye(8, dtype=torch.float64)
    image, text = random_embeddings(n=8, dim=8)
    scale = torch.tensor(100.0, dtype=torch.float64)
    bias = torch.tensor(-10.0, dtype=torch.float64)
    assert clip_loss(aligned, aligned, scale).item() < 1e-6
    assert clip_loss(image, text, scale).item() > 1.0
    assert siglip_loss(aligned, aligned, scale, bias).item() < 1e-2
    assert siglip_loss(image, text, scale, bias).item() > 1.0


def test_positive_mask_treats_label_sets_as_sets_and_is_symmetric():
    mask = positive_mask_from_keys(["frontal", ("a", "b"), ["b", "a", "a"], "frontal", "(a, b)"])
    expected = torch.tensor(
        [
            [1, 0, 0, 1, 0],
            [0, 1, 1, 0, 0],
            [0, 1, 1, 0, 0],
            [1, 0, 0, 1, 0],
            [0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)
