"""Modality-gap shift for frozen embeddings: alignment at inference time, without training.

Contrastive training leaves image and text embeddings in two separate cones; the gap vector
g = mean(image) − mean(text) measures the offset. Shifting text by +λg/2 and images by −λg/2
(then renormalising) moves the two clouds toward each other: λ = 1 makes their means meet
(before renormalisation), λ = 0 changes nothing, negative λ pushes them apart. g must come from
the training split only, or the shift would peek at the evaluation data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mriclip.evaluation.retrieval import as_matrix, check_same_dim, unit_rows
from mriclip.evaluation.summary import metrics_table
from mriclip.evaluation.zero_shot import DEFAULT_TOP_K, evaluate_zero_shot

logger = logging.getLogger(__name__)

DEFAULT_LAMBDAS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def modality_gap(image_train: Any, text_train: Any) -> np.ndarray:
    """g = mean(image_train) − mean(text_train), a (d,) vector; pass training embeddings only."""
    where = "modality_gap"
    images = as_matrix(image_train, "image_train", where)
    texts = as_matrix(text_train, "text_train", where)
    check_same_dim(images, "image_train", texts, "text_train", where)
    return images.mean(axis=0) - texts.mean(axis=0)


def shift_embeddings(
    image: Any, text: Any, gap: Any, lam: float, renormalise: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(image − λg/2, text + λg/2), rows renormalised to unit length unless told otherwise.

    ``text`` may be per-sample sentence embeddings or the region prompt embeddings.
    """
    where = "shift_embeddings"
    images = as_matrix(image, "image", where)
    texts = as_matrix(text, "text", where)
    gap = np.asarray(gap, dtype=float)
    if gap.shape != (images.shape[1],):
        raise ValueError(f"{where}: gap has shape {gap.shape}, expected ({images.shape[1]},)")
    check_same_dim(images, "image", texts, "text", where)
    images = images - lam * gap / 2
    texts = texts + lam * gap / 2
    if not renormalise:
        return images, texts
    return unit_rows(images, "shifted image", where), unit_rows(texts, "shifted text", where)


def zero_shot_gap_sweep(
    image_train: Any,
    text_train: Any,
    image_eval: Any,
    prompt_embeddings: Any,
    labels: Any,
    regions: Sequence[str],
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    logit_scale: float | None = None,
    top_k: Sequence[int] = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Zero-shot metrics of ``image_eval`` against shifted prompts for each λ.

    g comes from the training embeddings alone. Returns ``gap_norm`` (|g|) and ``by_lambda``
    {f"{λ:g}": zero-shot metric dict}; λ = 0 is the unshifted result.
    """
    gap = modality_gap(image_train, text_train)
    by_lambda = {}
    for lam in lambdas:
        shifted_images, shifted_prompts = shift_embeddings(image_eval, prompt_embeddings, gap, lam)
        by_lambda[f"{lam:g}"] = evaluate_zero_shot(
            shifted_images, shifted_prompts, labels, regions, logit_scale, top_k
        )
    logger.info("modality gap |g| = %.4f; swept lambda over %s", np.linalg.norm(gap), lambdas)
    return {"gap_norm": float(np.linalg.norm(gap)), "by_lambda": by_lambda}


def gap_sweep_table(sweep: dict[str, Any]) -> pd.DataFrame:
    """``metrics_table`` rows of every λ of a ``zero_shot_gap_sweep`` result, with a λ column."""
    tables = [
        metrics_table(metrics, task="zero_shot").assign(gap_lambda=float(lam))
        for lam, metrics in sweep["by_lambda"].items()
    ]
    return pd.concat(tables, ignore_index=True)
