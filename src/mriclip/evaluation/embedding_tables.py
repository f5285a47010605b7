"""The embedding tables the evaluation pipeline saves (one row per item, columns
``image_0..``/``text_0..`` beside ``stage``, ``variant``, ``level``, ``scan_id``): selecting
rows and reading the vectors, shared by the evaluation nodes and the benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def patient_ids(scan_sentences: pd.DataFrame) -> dict[str, str]:
    """scan_id -> patient_id (as text), for patient-level bootstrap resampling."""
    return dict(
        zip(scan_sentences["scan_id"], scan_sentences["patient_id"].astype(str), strict=True)
    )
