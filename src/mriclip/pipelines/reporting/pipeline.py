"""reporting: one self-contained HTML report (tables + figures) of a run."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.reporting import nodes

#: The node's inputs: its argument names are the catalog names, plus its own parameters.
REPORT_INPUTS = [
    "nifti_catalog",
    "catalog_problems",
    "scan_sentences",
    "splits",
    "lesion_table",
    "zero_shot_metrics",
    "retrieval_metrics",
    "baseline_metrics",
    "alignment_history",
    "pretraining_summary",
    "tsne_figure",
    "roc_figure",
    "training_curves_figure",
    "retrieval_grid_figure",
    "evidence_figure",
    "reconstruction_figure",
    "parameters",
    "run_metadata",
]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.render_report,
                {**{name: name for name in REPORT_INPUTS}, "reporting": "params:reporting"},
                "report",
                name="render_report",
                tags=["report"],
            )
        ],
        namespace="reporting",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
