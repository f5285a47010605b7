"""demo_data: the phantom cohort, written where a user's own data would go (data/01_raw)."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.demo_data import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.generate_phantom_cohort,
                ["params:demo_data", "raw_scans_on_disk"],
                ["raw_images", "raw_labels", "raw_scans", "raw_lesions", "raw_ablated_images"],
                name="generate_phantom_cohort",
                tags=["slow"],
            )
        ],
        namespace="demo_data",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
