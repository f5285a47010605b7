"""pretraining: AMAES-style masked-autoencoder pretraining of the 3D image encoder."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.pretraining import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.preprocess_unlabelled,
                ["unlabelled_images", "unlabelled_preprocessing_cache", "params:data_engineering"],
                ["unlabelled_volumes", "unlabelled_problems"],
                name="preprocess_unlabelled",
                tags=["slow"],
            ),
            Node(
                nodes.pretrain_encoder,
                [
                    "preprocessed_volumes",
                    "unlabelled_volumes",
                    "splits",
                    "params:pretraining",
                    "params:seed",
                ],
                ["pretrained_encoder", "pretraining_history", "pretraining_summary"],
                name="pretrain_encoder",
                tags=["gpu", "slow", "training"],
            ),
            Node(
                nodes.plot_reconstructions,
                [
                    "pretrained_encoder",
                    "preprocessed_volumes",
                    "splits",
                    "params:pretraining",
                    "params:seed",
                ],
                "reconstruction_figure",
                name="plot_reconstructions",
                tags=["gpu", "figures"],
            ),
        ],
        namespace="pretraining",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
