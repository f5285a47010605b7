"""Scan-level probabilities calibrated on held-out scans: the validation fold's scans are
scored exactly as test and new scans are (patch grid, prompts, aggregation), each target's
Platt map is fitted on them (:mod:`mriclip.evaluation.calibration`), and the record travels in
the model bundle, so inference applies it too."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mriclip.evaluation.calibration import (
    apply_calibration,
    expected_calibration_error,
    fit_calibration,
)
from mriclip.evaluation.embedding import embed_patches, label_matrix, scan_patches
from mriclip.evaluation.prompts import REGIONS_TARGET, prompt_texts
from mriclip.evaluation.scan_scoring import ScanScorer, probability_columns, score_columns
from mriclip.models.clip import ClipModel
from mriclip.models.factory import embed_texts
from mriclip.training.samples import VolumeSource, spatial_shape

logger = logging.getLogger(__name__)


def target_labels(scan_sentences: pd.DataFrame, scan_ids, spec: Mapping, target: str) -> np.ndarray:
    """(n, K) 0/1 truth of a target's classes for the scans ``scan_ids`` (rows of
    ``scan_sentences``): the scan's lesion regions for the region target, else its value of
    the target's column."""
    scan_rows = scan_sentences.set_index("scan_id").loc[list(scan_ids)]
    classes = spec["targets"][target]["classes"]
    if target == REGIONS_TARGET:
        return label_matrix(scan_rows["regions"].fillna("").tolist(), classes)
    values = scan_rows[spec["targets"][target]["column"]].astype(str).to_numpy()
    return (values[:, None] == np.array(classes)[None, :]).astype(int)


def scan_scores(
    model: ClipModel,
    scan_ids: list[str],
    volumes: Mapping,
    spec: Mapping,
    patch_size: int,
    scoring: Mapping,
    prompt_settings: Mapping,
) -> pd.DataFrame:
    """One row of ``prob_<class>`` columns per scan, scored as the evaluation scores test
    scans. ``volumes`` maps scan ids to arrays or to loaders of them."""
    texts = prompt_texts(spec)
    vectors = embed_texts(model, list(texts["text"])).numpy()
    scorer = ScanScorer.from_settings(
        spec, texts, vectors, float(model.logit_scale.detach()), scoring, prompt_settings
    )
    source = VolumeSource(volumes)  # arrays, or the catalog's partition loaders
    rows = []
    for scan_id in scan_ids:
        volume = np.asarray(source[scan_id])
        size = min(patch_size, *spatial_shape(volume))
        starts = scan_patches(volume, size, scoring["stride"], scoring["min_foreground_fraction"])
        embeddings = embed_patches(
            model, volume, starts, size, scoring["batch_size"], scoring["mixed_precision_cpu"]
        )
        probabilities, evidence = scorer.patch_probabilities(embeddings)
        scores, _ = scorer.scan_scores(probabilities, evidence)
        rows.append({"scan_id": scan_id, **score_columns(spec, scores)})
    return pd.DataFrame(rows)


def fit_scan_calibration(
    model: ClipModel,
    held_out: pd.DataFrame,
    volumes: Mapping,
    spec: Mapping,
    patch_size: int,
    evaluation: Mapping,
) -> dict | None:
    """The calibration record (``evaluation.calibration``; None when switched off or without
    held-out scans) fitted on the ``scan_sentences`` rows ``held_out``, with each target's
    held-out ECE before and after."""
    settings = evaluation["calibration"]
    if settings["method"] == "none":
        return None
    held_out = held_out[held_out["scan_id"].isin(set(volumes))]
    if held_out.empty:
        logger.warning("calibration: no held-out scans (alignment.fold: null); left out")
        return None
    scores = scan_scores(
        model, list(held_out["scan_id"]), volumes, spec, patch_size,
        evaluation["scan_scoring"], evaluation["prompts"],
    )  # fmt: skip
    columns = probability_columns(spec)
    names = {
        target: [columns[(target, value)] for value in spec["targets"][target]["classes"]]
        for target in spec["targets"]
    }
    truth = {target: target_labels(held_out, held_out["scan_id"], spec, target) for target in names}
    record = fit_calibration(
        {target: (scores[names[target]].to_numpy(), truth[target]) for target in names}, names
    )
    calibrated = apply_calibration(scores, record)
    n_bins = settings["n_bins"]
    for target, fitted in record["targets"].items():
        fitted["held_out_ece_before"] = expected_calibration_error(
            scores[names[target]].to_numpy(), truth[target], n_bins
        )
        fitted["held_out_ece_after"] = expected_calibration_error(
            calibrated[names[target]].to_numpy(), truth[target], n_bins
        )
    record["n_held_out_scans"] = len(held_out)
    logger.info("calibration on %d held-out scans: %s", len(held_out), record["targets"])
    return record
