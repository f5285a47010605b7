"""tuning: an Optuna study over temperature, learning rates, accumulation, loss, ..."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.alignment.pipeline import FOLD_INPUTS
from mriclip.pipelines.tuning import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.tune_alignment,
                {
                    **FOLD_INPUTS,
                    "optuna_storage": "optuna_storage",
                    "alignment": "params:alignment",
                    "params": "params:tuning",
                    "seed": "params:seed",
                },
                [
                    "best_params",
                    "tuned_alignment_parameters",
                    "trials_table",
                    "optimization_history_figure",
                    "param_importances_figure",
                    "parallel_coordinate_figure",
                ],
                name="tune_alignment",
                tags=["gpu", "slow", "training", "figures"],
            ),
        ],
        namespace="tuning",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
