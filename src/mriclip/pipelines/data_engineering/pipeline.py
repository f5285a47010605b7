"""data_engineering: NIfTI catalog + validation, preprocessing, sentences, patient-level splits."""

from kedro.pipeline import Node, Pipeline

from mriclip.pipelines.data_engineering import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.select_input,
                [
                    "raw_images",
                    "raw_labels",
                    "raw_scans",
                    "bids_dataset",
                    "params:data_engineering",
                ],
                ["input_images", "input_labels", "input_scans", "input_problems"],
                name="select_input",
            ),
            Node(
                nodes.catalog_scans,
                ["input_images", "input_labels", "input_scans", "params:data_engineering"],
                ["nifti_catalog", "image_problems"],
                name="catalog_scans",
                tags=["validation"],
            ),
            Node(
                nodes.validate_lesions,
                [
                    "input_scans",
                    "raw_lesions",
                    "nifti_catalog",
                    "params:regions",
                    "params:data_engineering",
                ],
                ["validated_lesions", "lesion_problems"],
                name="validate_lesions",
                tags=["validation"],
            ),
            Node(
                nodes.preprocess_volumes,
                [
                    "input_images",
                    "input_labels",
                    "nifti_catalog",
                    "validated_lesions",
                    "preprocessing_cache",
                    "params:data_engineering",
                ],
                [
                    "preprocessed_volumes",
                    "preprocessed_labels",
                    "preprocessing_report",
                    "lesion_table",
                    "preprocessing_problems",
                ],
                name="preprocess_volumes",
                tags=["slow"],
            ),
            Node(
                nodes.template_sentences,
                [
                    "input_scans",
                    "validated_lesions",
                    "preprocessing_report",
                    "params:regions",
                    "params:sentences",
                    "params:data_engineering",
                ],
                ["scan_sentences", "region_prompts"],
                name="template_sentences",
            ),
            Node(
                nodes.split_patients,
                ["scan_sentences", "params:seed", "params:data_engineering"],
                "splits",
                name="split_patients",
            ),
            Node(
                nodes.record_preprocessing_settings,
                "params:data_engineering",
                "preprocessing_settings",
                name="record_preprocessing_settings",
            ),
            Node(
                nodes.record_sequence_settings,
                "params:data_engineering",
                "sequence_settings",
                name="record_sequence_settings",
            ),
            Node(
                nodes.make_lesion_ablated_twins,
                [
                    "input_images",
                    "raw_ablated_images",
                    "preprocessed_volumes",
                    "preprocessed_labels",
                    "preprocessing_report",
                    "nifti_catalog",
                    "splits",
                    "preprocessing_cache",
                    "lesion_ablated_cache",
                    "params:data_engineering",
                ],
                ["lesion_ablated_volumes", "ablation_report"],
                name="make_lesion_ablated_twins",
                tags=["controls"],
            ),
            Node(
                nodes.gather_problems,
                ["input_problems", "image_problems", "lesion_problems", "preprocessing_problems"],
                "catalog_problems",
                name="gather_problems",
                tags=["validation"],
            ),
        ],
        namespace="data_engineering",
        prefix_datasets_with_namespace=False,  # names are catalog entries: group only
    )
