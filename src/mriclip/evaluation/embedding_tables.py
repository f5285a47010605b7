"""The embedding tables the evaluation pipeline saves (one row per item, columns
``image_0..``/``text_0..`` beside ``stage``, ``variant``, ``level``, ``scan_id``): selecting
rows and reading the vectors, shared by the evaluation and the benchmarks. The prompt table
has a row per prompt and stage (``text_<i>`` columns and the stage's ``logit_scale``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mriclip.evaluation.prompts import REGIONS_TARGET, class_embeddings

#: The ``variant`` of rows embedded from the test scans as they are, and from their
#: lesion-ablated twins (the controls).
ORIGINAL, ABLATED = "original", "lesion_ablated"


def embedding_matrix(table: pd.DataFrame, prefix: str) -> np.ndarray:
    """The ``<prefix>_<i>`` columns as a float64 matrix, one row per table row."""
    return table.filter(regex=f"^{prefix}_\\d+$").to_numpy(dtype=np.float64)


def select_embeddings(
    table: pd.DataFrame, stage: str = "aligned", variant: str = ORIGINAL, level: str | None = None
) -> pd.DataFrame:
    """The rows of one model stage (``aligned`` | ``initial``), variant and (optionally) level."""
    keep = (table["stage"] == stage) & (table["variant"] == variant)
    if level is not None:
        keep &= table["level"] == level
    return table[keep].reset_index(drop=True)


def primary_level(test_embeddings: pd.DataFrame, level: str) -> str:
    """``level`` when the test embeddings have rows of it, else ``scan`` (every scan has)."""
    return level if (test_embeddings["level"] == level).any() else "scan"


def patient_ids(scan_sentences: pd.DataFrame) -> dict[str, str]:
    """scan_id -> patient_id (as text), for patient-level bootstrap resampling."""
    return dict(
        zip(scan_sentences["scan_id"], scan_sentences["patient_id"].astype(str), strict=True)
    )


def stage_prompts(prompt_embeddings: pd.DataFrame, stage: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One stage's prompt rows and their text embeddings."""
    rows = prompt_embeddings[prompt_embeddings["stage"] == stage].reset_index(drop=True)
    return rows, embedding_matrix(rows, "text")


def logit_scale(stage_prompts: pd.DataFrame) -> float:
    """The logit scale of the model that embedded these prompts (one stage's rows)."""
    return float(stage_prompts["logit_scale"].iloc[0])


def region_prompts(prompt_embeddings: pd.DataFrame, stage: str, ensemble: bool) -> np.ndarray:
    """One stage's class embeddings of the regions target (its positive prompts)."""
    rows, vectors = stage_prompts(prompt_embeddings, stage)
    return class_embeddings(rows, vectors, REGIONS_TARGET, "positive", ensemble)
