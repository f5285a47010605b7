"""alignment: CLIP training of the 3D image encoder and the BERT text encoder."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.alignment import nodes

#: What training on a fold reads: ``FoldInputs`` field -> dataset. The tuning pipeline's
#: trials read the same.
FOLD_INPUTS = {
    "scan_sentences": "scan_sentences",
    "splits": "splits",
    "preprocessed_volumes": "preprocessed_volumes",
    "preprocessed_labels": "preprocessed_labels",
    "lesion_table": "lesion_table",
    "region_prompts": "region_prompts",
    "pretrained_encoder": "pretrained_encoder",
    "sentences": "params:sentences",
    "regions": "params:regions",
}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.train_clip_model,
                {
                    **FOLD_INPUTS,
                    "preprocessing_settings": "preprocessing_settings",
                    "sequence_settings": "sequence_settings",
                    "params": "params:alignment",
                    "evaluation": "params:evaluation",
                    "seed": "params:seed",
                },
                ["clip_model", "alignment_history"],
                name="train_clip_model",
                tags=["gpu", "slow", "training"],
            )
        ],
        namespace="alignment",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
