"""Thin node of the reporting pipeline: catalog inputs in, HTML out."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from mriclip.reporting.render import render_report as render_html


def render_report(
    nifti_catalog: pd.DataFrame,
    catalog_problems: pd.DataFrame,
    scan_sentences: pd.DataFrame,
    splits: pd.DataFrame,
    lesion_table: pd.DataFrame,
    zero_shot_metrics: dict,
    retrieval_metrics: dict,
    baseline_metrics: dict,
    alignment_history: pd.DataFrame,
    pretraining_summary: dict,
    tsne_figure: bytes | Figure,
    roc_figure: bytes | Figure,
    training_curves_figure: bytes | Figure,
    retrieval_grid_figure: bytes | Figure,
    evidence_figure: bytes | Figure,
    reconstruction_figure: bytes | Figure,
    parameters: dict,
    run_metadata: dict,
    reporting: dict,
) -> str:
    """The run's HTML report; ``reporting`` holds title, settings_shown and decimals."""
    return render_html(
        nifti_catalog=nifti_catalog,
        catalog_problems=catalog_problems,
        scan_sentences=scan_sentences,
        splits=splits,
        lesion_table=lesion_table,
        zero_shot_metrics=zero_shot_metrics,
        retrieval_metrics=retrieval_metrics,
        baseline_metrics=baseline_metrics,
        alignment_history=alignment_history,
        pretraining_summary=pretraining_summary,
        figures={
            "training_curves": training_curves_figure,
            "roc": roc_figure,
            "tsne": tsne_figure,
            "retrieval_grid": retrieval_grid_figure,
            "evidence": evidence_figure,
            "reconstruction": reconstruction_figure,
        },
        parameters=parameters,
        run_metadata=run_metadata,
        **reporting,
    )
