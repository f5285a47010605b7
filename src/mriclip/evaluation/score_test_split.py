"""The test scans' zero-shot scores: per patch and per scan, every class's probability and the
lesion evidence, for each model stage and variant, and reading them back by target."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mriclip.evaluation.calibration import apply_calibration
from mriclip.evaluation.embedding_tables import (
    embedding_matrix,
    logit_scale,
    select_embeddings,
    stage_prompts,
)
from mriclip.evaluation.scan_scoring import ScanScorer, probability_columns, score_columns

#: The columns of a patch-score row that describe the patch (the probabilities follow).
PATCH_COLUMNS = ["scan_id", "stage", "variant", "patch", "x", "y", "z", "patch_size", "key", "cut"]


def score_test_scans(
    patch_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    zero_shot_spec: dict,
    clip_model: dict,
    params: dict,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per patch and per scan, every class's zero-shot probability and the lesion evidence,
    for each stage and variant (``evaluation.prompts`` and ``evaluation.scan_scoring``). The
    aligned model's scan probabilities are calibrated as inference calibrates them (the
    bundle's calibration); the uncalibrated ones stay beside them as ``raw_prob_<class>``."""
    scoring, prompts = params["scan_scoring"], params["prompts"]
    columns = probability_columns(zero_shot_spec)
    patch_tables, scan_rows = [], []
    for (stage, variant), group in patch_embeddings.groupby(["stage", "variant"], sort=False):
        rows, vectors = stage_prompts(prompt_embeddings, stage)
        scorer = ScanScorer.from_settings(
            zero_shot_spec, rows, vectors, logit_scale(rows), scoring, prompts
        )
        for scan_id, patches in group.groupby("scan_id", sort=False):
            embeddings = embedding_matrix(patches, "image")
            probabilities, evidence = scorer.patch_probabilities(embeddings)
            table = patches[PATCH_COLUMNS].assign(lesion_evidence=evidence)
            for name, target in zero_shot_spec["targets"].items():
                for index, value in enumerate(target["classes"]):
                    table[columns[(name, value)]] = probabilities[name][:, index]
            patch_tables.append(table)
            scores, any_lesion = scorer.scan_scores(probabilities, evidence)
            scan_rows.append(
                {"scan_id": scan_id, "stage": stage, "variant": variant,
                 "prob_any_lesion": any_lesion, **score_columns(zero_shot_spec, scores)}
            )  # fmt: skip
    scans = pd.DataFrame(scan_rows)
    names = list(columns.values())
    raw = scans[names].rename(columns=lambda name: f"raw_{name}")
    aligned = scans["stage"] == "aligned"
    calibration = clip_model.get("inference", {}).get("calibration")
    scans.loc[aligned, names] = apply_calibration(scans.loc[aligned, names], calibration)
    return pd.concat(patch_tables, ignore_index=True), pd.concat([scans, raw], axis=1)


def scan_probabilities(
    test_scan_scores: pd.DataFrame,
    spec: dict,
    target: str,
    stage: str,
    variant: str,
    prefix: str = "",
) -> tuple[pd.DataFrame, np.ndarray]:
    """A stage and variant's scans and their (calibrated; ``prefix="raw_"``: uncalibrated)
    probabilities of ``target``'s classes."""
    columns = probability_columns(spec)
    rows = select_embeddings(test_scan_scores, stage, variant)
    names = [prefix + columns[(target, value)] for value in spec["targets"][target]["classes"]]
    return rows, rows[names].to_numpy(dtype=np.float64)
