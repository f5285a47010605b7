"""evaluation: zero-shot classification, retrieval, baselines and figures on the test split."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.evaluation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.embed_for_evaluation,
                [
                    "clip_model",
                    "pretrained_encoder",
                    "scan_sentences",
                    "splits",
                    "preprocessed_volumes",
                    "lesion_table",
                    "region_prompts",
                    "params:sentences",
                    "params:regions",
                    "params:alignment",
                    "params:seed",
                ],
                ["test_embeddings", "train_embeddings", "prompt_embeddings"],
                name="embed_for_evaluation",
                tags=["gpu"],
            ),
            Node(
                nodes.zero_shot_evaluation,
                [
                    "test_embeddings",
                    "train_embeddings",
                    "prompt_embeddings",
                    "params:regions",
                    "params:evaluation",
                ],
                "zero_shot_metrics",
                name="zero_shot_evaluation",
                tags=["metrics"],
            ),
            Node(
                nodes.retrieval_evaluation,
                [
                    "test_embeddings",
                    "prompt_embeddings",
                    "params:regions",
                    "params:evaluation",
                    "params:seed",
                ],
                "retrieval_metrics",
                name="retrieval_evaluation",
                tags=["metrics"],
            ),
            Node(
                nodes.baseline_evaluation,
                [
                    "train_embeddings",
                    "test_embeddings",
                    "params:regions",
                    "params:evaluation",
                    "params:seed",
                ],
                "baseline_metrics",
                name="baseline_evaluation",
                tags=["metrics"],
            ),
            Node(
                nodes.evaluation_figures,
                [
                    "test_embeddings",
                    "prompt_embeddings",
                    "alignment_history",
                    "preprocessed_volumes",
                    "params:regions",
                    "params:evaluation",
                    "params:seed",
                ],
                ["tsne_figure", "roc_figure", "training_curves_figure", "retrieval_grid_figure"],
                name="evaluation_figures",
                tags=["figures"],
            ),
        ],
        namespace="evaluation",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
