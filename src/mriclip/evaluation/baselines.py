"""Supervised references on frozen embeddings: a linear probe and fusion classifiers.

Each returns the zero-shot metric dict shape (``zero_shot.zero_shot_metrics``) computed on the
test split, so supervised and zero-shot numbers sit in one table, plus ``method``.

Fusion classifiers take each sample's own sentence embedding. That sentence *states the
sample's regions*, so a model that reads it at test time is an oracle-ish upper reference, not
a fair competitor to zero-shot image-only classification. The results say so in
``uses_sample_text`` and ``caveat``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from mriclip.evaluation.embedding import label_matrix
from mriclip.evaluation.embedding_tables import embedding_matrix, primary_level, select_embeddings
from mriclip.evaluation.retrieval import as_matrix, check_label_matrix, single_class_reason
from mriclip.evaluation.zero_shot import DEFAULT_TOP_K, zero_shot_metrics

logger = logging.getLogger(__name__)

ORACLE_CAVEAT = (
    "uses each test sample's own sentence, which states its regions: an upper reference, "
    "not comparable to image-only zero-shot classification"
)


def _checked_split(
    features: Any,
    labels: Any,
    regions: Sequence[str],
    features_name: str,
    labels_name: str,
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    matrix = as_matrix(features, features_name, where)
    labels = check_label_matrix(labels, len(matrix), features_name, regions, where, labels_name)
    return matrix, labels


def _untrainable_regions(train_labels: np.ndarray, regions: Sequence[str]) -> dict[str, str]:
    reasons = {
        region: single_class_reason(train_labels[:, index]) for index, region in enumerate(regions)
    }
    return {region: f"training labels: {reason}" for region, reason in reasons.items() if reason}


def _test_metrics(
    scores: np.ndarray,
    test_labels: np.ndarray,
    regions: Sequence[str],
    untrainable: dict[str, str],
    top_k: Sequence[int],
    method: str,
) -> dict[str, Any]:
    """Zero-shot-shaped metrics; a region the model never saw both classes of gets no AUC."""
    metrics = zero_shot_metrics(scores, test_labels, regions, top_k)
    for region, reason in untrainable.items():
        metrics["per_region"].pop(region, None)
        metrics["skipped_regions"].setdefault(region, reason)
    aucs = [values["auc"] for values in metrics["per_region"].values()]
    if aucs:
        metrics["overall"]["auc_macro"] = float(np.mean(aucs))
    else:
        metrics["overall"].pop("auc_macro", None)
        metrics["skipped_metrics"]["auc_macro"] = "no region is trainable and testable"
    metrics["method"] = method
    return metrics


def linear_probe(
    train_X: Any,
    train_Y: Any,
    test_X: Any,
    test_Y: Any,
    regions: Sequence[str],
    C: float = 1.0,
    seed: int = 0,
    max_iter: int = 1000,
    standardize: bool = True,
    top_k: Sequence[int] = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """One-vs-rest logistic regression (class_weight="balanced") on frozen embeddings.

    ``standardize`` z-scores features first (fitted on train), since unit-norm embeddings have
    tiny per-feature scales that make ``C`` hard to interpret. Scores are per-region
    probabilities. Returns the zero-shot metric keys plus ``method`` = "linear_probe".
    """
    where = "linear_probe"
    train_X, train_Y = _checked_split(train_X, train_Y, regions, "train_X", "train_Y", where)
    test_X, test_Y = _checked_split(test_X, test_Y, regions, "test_X", "test_Y", where)
    if train_X.shape[1] != test_X.shape[1]:
        raise ValueError(
            f"{where}: train_X has {train_X.shape[1]} features but test_X has {test_X.shape[1]}"
        )
    untrainable = _untrainable_regions(train_Y, regions)
    classifier = LogisticRegression(
        C=C, class_weight="balanced", max_iter=max_iter, random_state=seed
    )
    steps = [StandardScaler(), classifier] if standardize else [classifier]
    model = OneVsRestClassifier(make_pipeline(*steps))
    with warnings.catch_warnings():
        # sklearn warns about constant label columns; we list them in skipped_regions instead.
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        model.fit(train_X, train_Y)
    scores = model.predict_proba(test_X)
    return _test_metrics(scores, test_Y, regions, untrainable, top_k, "linear_probe")


class EarlyFusion(nn.Module):
    """concat(image, text) → Linear(hidden) → ReLU → Dropout → BatchNorm → Linear(regions)."""

    def __init__(
        self, image_dim: int, text_dim: int, n_regions: int, hidden: int = 128, dropout: float = 0.2
    ):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(image_dim + text_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, n_regions),
        )

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([image, text], dim=1))


def _branch(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.BatchNorm1d(hidden)
    )


class LateFusion(nn.Module):
    """Per modality Linear(hidden) → ReLU → Dropout → BatchNorm; concat → Linear(regions)."""

    def __init__(
        self, image_dim: int, text_dim: int, n_regions: int, hidden: int = 64, dropout: float = 0.2
    ):
        super().__init__()
        self.image_branch = _branch(image_dim, hidden, dropout)
        self.text_branch = _branch(text_dim, hidden, dropout)
        self.head = nn.Linear(2 * hidden, n_regions)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.image_branch(image), self.text_branch(text)], dim=1))


def _batches(n_samples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one joins the previous one (BatchNorm needs
    at least two samples in training mode)."""
    batches = list(torch.randperm(n_samples, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def _positive_weights(train_labels: np.ndarray) -> torch.Tensor:
    """n_negative / n_positive per region, so rare regions weigh as much as common ones."""
    positives = train_labels.sum(axis=0)
    negatives = len(train_labels) - positives
    weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def _fit_fusion(
    kind: str,
    model_class: type[nn.Module],
    train_image: Any,
    train_text: Any,
    train_Y: Any,
    test_image: Any,
    test_text: Any,
    test_Y: Any,
    regions: Sequence[str],
    hidden: int,
    dropout: float,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    top_k: Sequence[int],
) -> dict[str, Any]:
    where = kind
    train_image, train_Y = _checked_split(
        train_image, train_Y, regions, "train_image", "train_Y", where
    )
    test_image, test_Y = _checked_split(test_image, test_Y, regions, "test_image", "test_Y", where)
    train_text = as_matrix(train_text, "train_text", where)
    test_text = as_matrix(test_text, "test_text", where)
    for name, text, image in (("train", train_text, train_image), ("test", test_text, test_image)):
        if len(text) != len(image):
            raise ValueError(
                f"{where}: {name}_text has {len(text)} rows but {name}_image has {len(image)}"
            )
    if train_image.shape[1] != test_image.shape[1] or train_text.shape[1] != test_text.shape[1]:
        raise ValueError(f"{where}: train and test embeddings differ in dimension")
    if len(train_image) < 2:
        raise ValueError(f"{where}: need at least 2 training samples for BatchNorm")
    if epochs < 1:
        raise ValueError(f"{where}: epochs must be >= 1, got {epochs}")

    tensors = {  # copies: the embeddings may be read-only arrays (parquet-backed)
        name: torch.tensor(array, dtype=torch.float32)
        for name, array in (
            ("train_image", train_image),
            ("train_text", train_text),
            ("train_Y", train_Y),
            ("test_image", test_image),
            ("test_text", test_text),
        )
    }
    # A private RNG scope: the result depends on ``seed`` only, and callers' torch RNG state
    # (model init and dropout draw from the global generator) is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(
            train_image.shape[1], train_text.shape[1], len(regions), hidden=hidden, dropout=dropout
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=_positive_weights(train_Y))
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            epoch_loss = 0.0
            for batch in _batches(len(train_image), batch_size, generator):
                optimizer.zero_grad()
                logits = model(tensors["train_image"][batch], tensors["train_text"][batch])
                loss = loss_fn(logits, tensors["train_Y"][batch])
                loss.backward()
                optimizer.step()
                epoch_loss += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            scores = torch.sigmoid(model(tensors["test_image"], tensors["test_text"]))
    final_loss = epoch_loss / len(train_image)
    logger.info("%s: %d epochs, final training loss %.4f", kind, epochs, final_loss)
    metrics = _test_metrics(
        scores.double().numpy(),
        test_Y,
        regions,
        _untrainable_regions(train_Y, regions),
        top_k,
        kind,
    )
    metrics.update(final_train_loss=final_loss, uses_sample_text=True, caveat=ORACLE_CAVEAT)
    return metrics


FUSION_MODELS = {"early_fusion": (EarlyFusion, 128), "late_fusion": (LateFusion, 64)}


def fusion_classifier(
    kind: str,
    train_image: Any,
    train_text: Any,
    train_Y: Any,
    test_image: Any,
    test_text: Any,
    test_Y: Any,
    regions: Sequence[str],
    hidden: int | None = None,
    dropout: float = 0.2,
    epochs: int = 50,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
    top_k: Sequence[int] = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Early fusion (``EarlyFusion``, default hidden 128) or late fusion (``LateFusion``,
    ``hidden`` = each modality branch's width, default 64), trained with AdamW and
    class-weighted BCE-with-logits.

    ORACLE-ISH: reads each test sample's own sentence, which states its label (see module doc).
    Returns the zero-shot metric keys computed on test plus ``method`` = ``kind``,
    ``final_train_loss``, ``uses_sample_text`` = True and ``caveat``. Deterministic by ``seed``.
    """
    if kind not in FUSION_MODELS:
        raise ValueError(f"unknown fusion kind {kind!r}; choose one of {sorted(FUSION_MODELS)}")
    model_class, default_hidden = FUSION_MODELS[kind]
    return _fit_fusion(
        kind,
        model_class,
        train_image,
        train_text,
        train_Y,
        test_image,
        test_text,
        test_Y,
        regions,
        hidden or default_hidden,
        dropout,
        epochs,
        lr,
        weight_decay,
        batch_size,
        seed,
        top_k,
    )


def frozen_embedding_baselines(
    train_embeddings: pd.DataFrame,
    test_embeddings: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """The linear probe and both fusion classifiers, trained on the training items'
    embeddings and tested on the test items' (the aligned model, original scans), at
    ``params["primary_level"]`` (the scan level when the test items have none of it).
    ``params``: also ``probe_C`` and ``fusion`` (the fusion classifiers' settings)."""
    level = primary_level(test_embeddings, params["primary_level"])
    train, test = (
        select_embeddings(train_embeddings, level=level),
        select_embeddings(test_embeddings, level=level),
    )
    train_y, test_y = label_matrix(train["key"], regions), label_matrix(test["key"], regions)
    fusion = {**params["fusion"], "seed": seed}
    return {
        "level": level,
        "linear_probe": linear_probe(
            embedding_matrix(train, "image"),
            train_y,
            embedding_matrix(test, "image"),
            test_y,
            regions,
            C=params["probe_C"],
            seed=seed,
        ),
        **{
            kind: fusion_classifier(
                kind,
                embedding_matrix(train, "image"),
                embedding_matrix(train, "text"),
                train_y,
                embedding_matrix(test, "image"),
                embedding_matrix(test, "text"),
                test_y,
                regions,
                **fusion,
            )
            for kind in ("early_fusion", "late_fusion")
        },
    }
