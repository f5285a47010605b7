"""Contrastive losses over a batch of N paired, L2-normalised image and text embeddings.

Row ``i`` of ``image_emb`` and of ``text_emb`` come from the same sample. Both losses take an
optional ``positive_mask`` (N x N bool, diagonal True) marking which image/text pairs count as
matching; without it only the diagonal does. :func:`positive_mask_from_keys` builds it from the
samples' sentences or label sets, so that with few classes the many in-batch samples sharing a
positive's text are not pushed apart as negatives ("label-aware" targets).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["clip_loss", "nt_xent_loss", "positive_mask_from_keys", "siglip_loss"]


def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    positive_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE: mean of the image->text and text->image cross entropies.

    Logits are ``logit_scale * image_emb @ text_emb.T`` (``logit_scale`` = 1 / temperature).
    With ``positive_mask`` each row's target is a distribution spread uniformly over its
    positives instead of one-hot (multi-positive soft targets). We chose soft targets over
    dropping the other positives from the softmax denominator because the loss stays a proper
    cross entropy, reduces exactly to plain InfoNCE when all keys differ, and is minimised by
    giving identical texts identical scores, which is what their identical embeddings imply.
    """
    logits = logit_scale * image_emb @ text_emb.T
    if positive_mask is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    image_to_text = _soft_cross_entropy(logits, positive_mask)
    text_to_image = _soft_cross_entropy(logits.T, positive_mask.T)
    return (image_to_text + text_to_image) / 2


def _soft_cross_entropy(logits: torch.Tensor, positive_mask: torch.Tensor) -> torch.Tensor:
    targets = positive_mask.to(logits.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def siglip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    positive_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP: a binary logistic loss on every image/text pair, summed and divided by N.

    Logits are ``logit_scale * image_emb @ text_emb.T + logit_bias``; labels are +1 for
    positives (the diagonal, or ``positive_mask``) and -1 otherwise.
    """
    logits = logit_scale * image_emb @ text_emb.T + logit_bias
    if positive_mask is None:
        positive_mask = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    signs = positive_mask.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def nt_xent_loss(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over N pairs of L2-normalised view embeddings.

    Each of the 2N views has its other view as the positive and the other 2N - 2 views as
    negatives (itself excluded); the loss is the mean cross entropy over all 2N views.
    """
    views = torch.cat([view_a, view_b])
    n = view_a.shape[0]
    logits = views @ views.T / temperature
    itself = torch.eye(2 * n, dtype=torch.bool, device=views.device)
    logits = logits.masked_fill(itself, float("-inf"))
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(views.device)
    return F.cross_entropy(logits, partners)


def positive_mask_from_keys(
    keys: Sequence[str | Collection[Hashable]], device: torch.device | str | None = None
) -> torch.Tensor:
    """N x N bool mask, True where samples ``i`` and ``j`` have the same key.

    A key is a sentence (``str``) or a label set (tuple, list, set or frozenset; compared as
    sets, so order and repeats do not matter). The diagonal is always True.
    """
    normalised = [key if isinstance(key, str) else frozenset(key) for key in keys]
    ids: dict[Hashable, int] = {}
    codes = torch.tensor([ids.setdefault(key, len(ids)) for key in normalised], device=device)
    return codes[:, None] == codes[None, :]
