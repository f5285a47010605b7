"""evaluation: zero-shot classification, retrieval, baselines and figures on the test split,
each metric beside its lesion-ablated control."""

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
                    "preprocessed_labels",
                    "lesion_ablated_volumes",
                    "lesion_table",
                    "params:sentences",
                    "params:regions",
                    "params:alignment",
                    "params:evaluation",
                    "params:seed",
                ],
                [
                    "test_embeddings",
                    "train_embeddings",
                    "test_patch_embeddings",
                    "prompt_embeddings",
                    "zero_shot_spec",
                ],
                name="embed_for_evaluation",
                tags=["gpu"],
            ),
            Node(
                nodes.score_test_scans,
                [
                    "test_patch_embeddings",
                    "prompt_embeddings",
                    "zero_shot_spec",
                    "clip_model",
                    "params:evaluation",
                ],
                ["test_patch_scores", "test_scan_scores"],
                name="score_test_scans",
                tags=["metrics"],
            ),
            Node(
                nodes.zero_shot_evaluation,
                [
                    "test_embeddings",
                    "train_embeddings",
                    "prompt_embeddings",
                    "test_scan_scores",
                    "test_patch_scores",
                    "zero_shot_spec",
                    "scan_sentences",
                    "params:regions",
                    "params:evaluation",
                    "params:seed",
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
                    "test_scan_scores",
                    "zero_shot_spec",
                    "scan_sentences",
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
                    "test_scan_scores",
                    "test_patch_scores",
                    "zero_shot_spec",
                    "scan_sentences",
                    "alignment_history",
                    "preprocessed_volumes",
                    "preprocessed_labels",
                    "lesion_ablated_volumes",
                    "params:regions",
                    "params:evaluation",
                    "params:seed",
                ],
                [
                    "tsne_figure",
                    "roc_figure",
                    "training_curves_figure",
                    "retrieval_grid_figure",
                    "evidence_figure",
                ],
                name="evaluation_figures",
                tags=["figures"],
            ),
        ],
        namespace="evaluation",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
