"""inference: a trained model (clip_model) applied to new scans, images only."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.inference import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.catalog_new_scans,
                ["clip_model", "inference_images", "inference_scans", "params:data_engineering"],
                ["inference_catalog", "inference_catalog_problems"],
                name="catalog_new_scans",
                tags=["validation"],
            ),
            Node(
                nodes.predict_new_scans,
                [
                    "clip_model",
                    "inference_images",
                    "inference_catalog",
                    "inference_catalog_problems",
                    "params:inference",
                    "params:evaluation",
                ],
                [
                    "scan_predictions",
                    "scan_embeddings",
                    "query_results",
                    "evidence_maps",
                    "inference_problems",
                ],
                name="predict_new_scans",
                tags=["gpu"],
            ),
        ],
        namespace="inference",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
