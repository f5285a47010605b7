"""Thin node of the export pipeline; the work is in mriclip.packaging."""

from __future__ import annotations

import pandas as pd

from mriclip.packaging.export import bundle_settings, export_files
from mriclip.packaging.model_card import render_model_card


def export_model(
    clip_model: dict,
    zero_shot_metrics: dict,
    retrieval_metrics: dict,
    splits: pd.DataFrame,
    lesion_table: pd.DataFrame,
    evaluation: dict,
) -> dict[str, bytes]:
    """The export's files: weights, config.json (with the evaluation's scan scoring and
    prompt settings), tokenizer files and a model card of this run's test metrics."""
    card = render_model_card(
        bundle_settings(clip_model), zero_shot_metrics, retrieval_metrics, splits, lesion_table
    )
    scoring = {"scan_scoring": evaluation["scan_scoring"], "prompts": evaluation["prompts"]}
    return export_files(clip_model, scoring, card)
