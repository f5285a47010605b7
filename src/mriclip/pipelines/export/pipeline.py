"""export: clip_model as a folder that runs without the project (model_export)."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.export import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.export_model,
                [
                    "clip_model",
                    "zero_shot_metrics",
                    "retrieval_metrics",
                    "splits",
                    "lesion_table",
                    "params:evaluation",
                ],
                "model_export",
                name="export_model",
            ),
        ],
        namespace="export",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
