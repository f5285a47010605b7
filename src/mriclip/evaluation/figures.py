"""The evaluation's figures from its tables: t-SNE before and after alignment, scan-level ROC
curves, training curves, a retrieval example grid and lesion evidence maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mriclip.evaluation.embedding_tables import (
    ORIGINAL,
    embedding_matrix,
    primary_level,
    select_embeddings,
)
from mriclip.evaluation.evidence_panels import evidence_panels
from mriclip.evaluation.plots import (
    evidence_figure,
    retrieval_grid,
    roc_curves,
    training_curves,
    tsne_before_after,
)
from mriclip.evaluation.scan_calibration import target_labels
from mriclip.evaluation.score_test_split import scan_probabilities
from mriclip.training.samples import VolumeSource, reference_channel


def evaluation_figures(
    test_embeddings: pd.DataFrame,
    test_scan_scores: pd.DataFrame,
    test_patch_scores: pd.DataFrame,
    zero_shot_spec: dict,
    scan_sentences: pd.DataFrame,
    alignment_history: pd.DataFrame,
    preprocessed_volumes: dict,
    preprocessed_labels: dict,
    lesion_ablated_volumes: dict,
    regions: list[str],
    params: dict,
    seed: int,
) -> tuple[Figure, Figure, Figure, Figure, Figure]:
    """t-SNE before/after (at the primary level), scan-level ROC curves and retrieval example
    grid of the spec's first target (the regions when the cohort has lesions), training curves
    and lesion evidence maps of a few test scans beside their true label maps (scans with
    lesions first)."""
    level = primary_level(test_embeddings, params["primary_level"])
    after = select_embeddings(test_embeddings, level=level)
    before = select_embeddings(test_embeddings, "initial", level=level)
    first_region = [key.split(";")[0] or "none" for key in after["key"]]
    tsne = tsne_before_after(
        embedding_matrix(before, "image"),
        embedding_matrix(before, "text"),
        embedding_matrix(after, "image"),
        embedding_matrix(after, "text"),
        first_region,
        regions=[*regions, "none"],
        seed=seed,
    )
    # the regions, or without lesion information the first clinical target
    target = next(iter(zero_shot_spec["targets"]))
    classes = zero_shot_spec["targets"][target]["classes"]
    rows, scores = scan_probabilities(test_scan_scores, zero_shot_spec, target, "aligned",
                                      ORIGINAL)  # fmt: skip
    labels = target_labels(scan_sentences, rows["scan_id"], zero_shot_spec, target)
    roc = roc_curves(scores, labels, classes)
    curves = training_curves(alignment_history)
    volumes = VolumeSource(preprocessed_volumes)

    def middle_slice(index: int) -> np.ndarray:
        volume = reference_channel(np.asarray(volumes[rows["scan_id"][index]]))
        return np.rot90(volume[:, :, volume.shape[2] // 2])

    grid = retrieval_grid(
        scores,
        classes,
        middle_slice,
        top_k=min(params["grid_top_k"], len(rows)),
        labels=labels,
        sample_ids=rows["scan_id"].tolist(),
    )
    with_lesions = [sid for sid, y in zip(rows["scan_id"], labels, strict=True) if y.any()]
    shown = (with_lesions or list(rows["scan_id"]))[: params["n_figure_scans"]]
    evidence = evidence_figure(
        evidence_panels(
            test_patch_scores[test_patch_scores["stage"] == "aligned"],
            volumes,
            VolumeSource(lesion_ablated_volumes),
            VolumeSource(preprocessed_labels),
            shown,
        )
    )
    return tsne, roc, curves, grid, evidence
