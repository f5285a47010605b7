import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from mriclip.imaging.problems import InputDataError
from mriclip.pipelines.data_engineering.pipeline import create_pipeline
from mriclip.splits import in_split
from tests.pipelines.helpers import load_parameters, run_in_memory


def run(raw_cohort):
    return run_in_memory(create_pipeline(), engineering_inputs(*raw_cohort))


def engineering_inputs(images, labels, scans, lesions, ablated_images=None) -> dict:
    """The pipeline's raw inputs; no raw twins by default (user data: the controls inpaint
    the labelled lesions)."""
    return {
        "raw_images": images,
        "raw_labels": labels,
        "raw_scans": scans,
        "raw_lesions": lesions,
        "raw_ablated_images": ablated_images or {},
    }


def test_pipeline_writes_every_named_output(raw_cohort):
    out = run(raw_cohort)
    assert (out["nifti_catalog"]["status"] == "ok").all()
    assert out["catalog_problems"].empty
    assert list(out["catalog_problems"].columns) == ["stage", "scan_id", "item", "problem", "fix"]
    # loaders, saved lazily one at a time by the catalog: the node holds no volume
    volumes = {scan_id: load() for scan_id, load in out["preprocessed_volumes"].items()}
    labels = {scan_id: load() for scan_id, load in out["preprocessed_labels"].items()}
    assert sorted(volumes) == sorted(labels) == [f"S{i}" for i in range(6)]
    assert all(v.shape == (32, 32, 32) and v.dtype == np.float32 for v in volumes.values())
    report = out["preprocessing_report"]
    assert set(report["output_shape"]) == {"32x32x32"}
    lesions = out["lesion_table"]
    assert len(lesions) == 12
    test_scans = set(in_split(out["splits"], "test")["scan_id"])
    assert set(out["lesion_ablated_volumes"]) == test_scans
    assert set(out["ablation_report"]["method"]) == {"inpainted"}
    for scan_id, load_twin in out["lesion_ablated_volumes"].items():  # loaders, saved lazily
        twin = load_twin()
        lesion = labels[scan_id] > 0
        assert not np.array_equal(twin[lesion], volumes[scan_id][lesion])  # lesions filled
        far = ~ndimage.binary_dilation(lesion, iterations=8)
        np.testing.assert_array_equal(twin[far], volumes[scan_id][far])  # the rest untouched
    assert out["preprocessing_settings"]["target_shape"] == [32, 32, 32]
    assert out["sequence_settings"] == {"sequences": None, "missing_sequences": "duplicate"}
    for lesion in lesions.itertuples():  # centres lie inside their own lesion on the new grid
        centre = tuple(int(round(c)) for c in (lesion.center_x, lesion.center_y, lesion.center_z))
        assert labels[lesion.scan_id][centre] == lesion.lesion_id


def test_sentences_prompts_and_splits(raw_cohort):
    out = run(raw_cohort)
    sentences = out["scan_sentences"].set_index("scan_id")
    assert sentences.loc["S0", "regions"] == "frontal;temporal"
    assert sentences.loc["S0", "sentence"].startswith("The age of the subject is 40.")
    assert (
        "Additionally, a lesion is present in the temporal area." in sentences.loc["S0", "sentence"]
    )
    assert out["region_prompts"]["occipital"] == "There is a lesion in the occipital section."
    splits = out["splits"]
    sides = splits.groupby("patient_id")["split"].nunique()
    assert (sides == 1).all()
    assert set(splits["split"]) == {"train", "test"}


def test_skipped_scan_is_listed_and_absent_downstream(raw_cohort):
    images, labels, scans, lesions = raw_cohort

    def broken():
        raise OSError("truncated")

    images["S3.nii.gz"] = broken
    out = run_in_memory(create_pipeline(), engineering_inputs(images, labels, scans, lesions))
    problems = out["catalog_problems"]
    assert problems.loc[problems["scan_id"] == "S3", "stage"].tolist() == ["nifti_catalog"]
    assert "S3" not in out["preprocessed_volumes"]
    assert "S3" not in set(out["scan_sentences"]["scan_id"])
    assert "S3" not in set(out["splits"]["scan_id"])
    assert isinstance(out["lesion_table"], pd.DataFrame)


def test_no_input_at_all_names_both_routes():
    """A project without data/01_raw/images and scans.csv (both optional for BIDS users)."""
    empty = pd.DataFrame()
    inputs = {"raw_images": {}, "raw_labels": {}, "raw_scans": empty, "raw_lesions": empty}
    with pytest.raises(InputDataError, match=r"No input data: raw_images \(data/01_raw/images\)"):
        run_in_memory(create_pipeline(), inputs)
    parameters = load_parameters("test")["data_engineering"]
    with pytest.raises(ValueError, match="data_engineering.source must be 'files' or 'bids'"):
        run_in_memory(
            create_pipeline(),
            inputs,
            overrides={"data_engineering": {**parameters, "source": "dicom"}},
        )


def test_twins_that_fail_are_listed_and_the_run_goes_on(raw_cohort):
    images, labels, scans, lesions = raw_cohort

    def truncated():
        raise OSError("unexpected end of gzip file")

    twins = {name: truncated for name in images}
    out = run_in_memory(
        create_pipeline(), engineering_inputs(images, labels, scans, lesions, twins)
    )
    report = out["ablation_report"]
    assert len(report) and report["method"].str.contains("unexpected end of gzip file").all()
    assert not out["lesion_ablated_volumes"]  # no twin made from a failed read
