"""alignment: CLIP training of the 3D image encoder and the BERT text encoder."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.alignment import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.train_clip_model,
                [
                    "scan_sentences",
                    "splits",
                    "preprocessed_volumes",
                    "preprocessed_labels",
                    "lesion_table",
                    "region_prompts",
                    "pretrained_encoder",
                    "preprocessing_settings",
                    "params:sentences",
                    "params:regions",
                    "params:alignment",
                    "params:evaluation",
                    "params:seed",
                ],
                ["clip_model", "alignment_history"],
                name="train_clip_model",
                tags=["gpu", "slow", "training"],
            )
        ],
        namespace="alignment",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
