"""The reporting pipeline: one node from the run's catalog entries to the HTML report."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mriclip.evaluation.retrieval import retrieval_metrics, retrieval_random_baseline
from mriclip.evaluation.zero_shot import evaluate_zero_shot, zero_shot_random_baseline
from mriclip.pipelines.reporting.pipeline import REPORT_INPUTS, create_pipeline
from tests.pipelines.helpers import run_in_memory

REGIONS = ["frontal", "parietal", "temporal", "occipital", "cerebellar"]
FIGURES = [
    "tsne_figure",
    "roc_figure",
    "training_curves_figure",
    "retrieval_grid_figure",
    "evidence_figure",
]


def inputs() -> dict:
    rng = np.random.default_rng(3)
    labels = np.eye(len(REGIONS), dtype=int)[np.arange(12) % len(REGIONS)]
    prompts = rng.normal(size=(len(REGIONS), 6))
    images = labels @ prompts + rng.normal(size=(12, 6))
    scan_ids = [f"S{i}" for i in range(12)]
    regions = [REGIONS[i % len(REGIONS)] for i in range(12)]
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    return {
        "nifti_catalog": pd.DataFrame({"scan_id": scan_ids, "status": "ok"}),
        "catalog_problems": pd.DataFrame(columns=["stage", "scan_id", "item", "problem", "fix"]),
        "scan_sentences": pd.DataFrame(
            {
                "scan_id": scan_ids,
                "patient_id": [f"P{i // 2}" for i in range(12)],
                "regions": regions,
                "n_lesions": 1,
            }
        ),
        "splits": pd.DataFrame(
            {
                "scan_id": scan_ids,
                "patient_id": [f"P{i // 2}" for i in range(12)],
                "split": ["train"] * 8 + ["test"] * 4,
                "fold": [0, 0, 1, 1] * 2 + [-1] * 4,
            }
        ),
        "lesion_table": pd.DataFrame({"scan_id": scan_ids, "lesion_id": 1, "region": regions}),
        "zero_shot_metrics": {
            "scan_level": {
                "model": evaluate_zero_shot(images, prompts, labels, REGIONS),
                "random": zero_shot_random_baseline(labels, REGIONS),
            }
        },
        "retrieval_metrics": {
            "scan_level": {
                "model": retrieval_metrics(images, prompts, labels, REGIONS),
                "random": retrieval_random_baseline(labels, REGIONS),
            }
        },
        "baseline_metrics": {},
        "alignment_history": pd.DataFrame(
            {
                "step": [1, 2],
                "loss": [2.0, 1.5],
                "temperature": [0.07, 0.06],
                "val_loss": [np.nan, 1.8],
            }
        ),
        "pretraining_summary": {},
        # A figure reaches the node as a live Figure in memory, as PNG bytes from the catalog.
        **{name: figure for name in FIGURES},
        "reconstruction_figure": None,
        "run_metadata": {"save_version": "2026-01-01T00.00.00.000Z", "versions": {}},
    }


def test_node_reads_the_documented_catalog_entries():
    pipeline = create_pipeline()
    assert [node.name for node in pipeline.nodes] == ["reporting.render_report"]
    assert pipeline.inputs() == {*REPORT_INPUTS, "params:reporting"}
    assert pipeline.outputs() == {"report"}


def test_pipeline_writes_the_html_report():
    run_inputs = inputs()
    report = run_in_memory(create_pipeline(), run_inputs)["report"]
    model = run_inputs["zero_shot_metrics"]["scan_level"]["model"]
    assert report.startswith("<!DOCTYPE html>")
    auc = model["overall"]["auc_macro"]
    assert f"zero-shot macro AUC {auc:.3f} (lesion-ablated n/a, random 0.500)" in report
    assert report.count("data:image/png;base64,") == len(FIGURES)
    assert "mriclip run report" in report  # the title from parameters_reporting.yml
    assert "<h3>alignment</h3>" in report
