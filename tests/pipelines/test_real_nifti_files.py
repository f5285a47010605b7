"""data_engineering on the real NIfTI files nibabel ships (read from the installed package,
never copied here): the run completes and every unusable file is listed with its reason."""

from pathlib import Path

import nibabel
import pandas as pd
import pytest

from mriclip.datasets import NiftiDataset, ScanStore
from mriclip.imaging.problems import InputDataError
from mriclip.pipelines.data_engineering.nodes import preprocess_volumes
from mriclip.pipelines.data_engineering.pipeline import create_pipeline
from tests.pipelines.helpers import load_parameters, run_in_memory

NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"

# scan id -> (nibabel file, what validation must say about it; None = usable)
FILES = {
    "r00": ("anatomical.nii", None),
    "r01": ("reoriented_anat_moved.nii", None),
    "r02": ("resampled_anat_moved.nii", "NaN/inf voxel(s)"),
    "r03": ("example4d.nii.gz", "expected a 3D volume, got shape (128, 96, 24, 2)"),
    "r04": ("functional.nii", "expected a 3D volume, got shape (17, 21, 3, 20)"),
    "r05": ("example_nifti2.nii.gz", "expected a 3D volume, got shape (32, 20, 12, 2)"),
    # 4x5x7 voxels of 1x3x2 mm: 4 mm along x, one voxel of the test grid's 4 mm
    "r06": ("standard.nii.gz", "field of view too small for the target grid: extent 4x15x14 mm"),
    # the usable anatomy twice more, so four patients are enough for the test's splits
    "r07": ("anatomical.nii", None),
    "r08": ("reoriented_anat_moved.nii", None),
}


def real_inputs():
    images, rows = {}, []
    for number, (scan_id, (name, _)) in enumerate(FILES.items()):
        extension = ".nii.gz" if name.endswith(".gz") else ".nii"
        images[scan_id + extension] = NiftiDataset(filepath=str(NIBABEL_DATA / name)).load
        rows.append(
            {
                "scan_id": scan_id,
                "patient_id": f"p{number}",
                "age": 30 + number,
                "sex": "female",
                "regions": "frontal;cerebellar",
            }
        )
    rows.append(
        {"scan_id": "r99", "patient_id": "p99", "age": 50, "sex": "male", "regions": "temporal"}
    )
    return {
        "raw_images": images,
        "raw_labels": {},
        "raw_scans": pd.DataFrame(rows),
        "raw_lesions": pd.DataFrame(),
    }


def test_every_nibabel_file_is_used_or_listed_with_its_reason():
    out = run_in_memory(create_pipeline(), real_inputs())
    problems = out["catalog_problems"]
    catalog_problems = problems[problems["stage"] == "nifti_catalog"].set_index("scan_id")
    for scan_id, (name, reason) in FILES.items():
        if reason is None:
            assert scan_id in out["preprocessed_volumes"], name
            assert out["preprocessed_volumes"][scan_id]().shape == (32, 32, 32)
        else:
            assert reason in catalog_problems.loc[scan_id, "problem"], name
            assert scan_id not in out["preprocessed_volumes"]
    assert catalog_problems.loc["r99", "problem"] == "row has no image file"
    assert "choose a finer" in catalog_problems.loc["r06", "fix"]
    assert set(out["preprocessing_report"]["scan_id"]) == {"r00", "r01", "r07", "r08"}
    assert set(out["splits"]["scan_id"]) == {"r00", "r01", "r07", "r08"}
    # lesions from the regions column are named by scan and region, never "nan"
    centres = problems[problems["stage"] == "lesion_centres"]
    assert set(centres["item"]) == {
        f"{region} lesion of {scan_id}"
        for scan_id in ("r00", "r01", "r07", "r08")
        for region in ("frontal", "cerebellar")
    }
    assert not problems["item"].str.contains("nan").any()
    sentences = out["scan_sentences"].set_index("scan_id")
    assert "cerebellar" in sentences.loc["r00", "sentence"]


def test_on_invalid_raise_stops_with_the_full_list():
    parameters = load_parameters("test")["data_engineering"]
    with pytest.raises(InputDataError) as raised:
        run_in_memory(
            create_pipeline(),
            real_inputs(),
            overrides={"data_engineering": {**parameters, "on_invalid": "raise"}},
        )
    message = str(raised.value)
    assert message.startswith("6 problem(s) in the input data (nifti_catalog)")
    for scan_id in ("r02", "r03", "r04", "r05", "r06"):
        assert f"- {scan_id}.nii" in message
    assert "scans.csv scan_id 'r99'" in message


def test_a_scan_that_fails_in_preprocessing_is_a_problem_row_and_the_run_goes_on(tmp_path):
    """standard.nii.gz past validation (as before the field-of-view rule) makes MONAI's resize
    divide by zero; that scan becomes a problem naming the error, the others go on."""
    parameters = load_parameters("test")["data_engineering"]
    # Registration would refuse it first, with a message of its own (test_registration).
    parameters["preprocessing"]["registration"] = "none"
    names = {"r00": "anatomical.nii", "r06": "standard.nii.gz"}
    images = {
        f"{scan_id}.nii": NiftiDataset(filepath=str(NIBABEL_DATA / name)).load
        for scan_id, name in names.items()
    }
    catalog = pd.DataFrame(
        {
            "scan_id": list(names),
            "image_file": list(images),
            "label_file": None,
            "sequence_files": None,
            "status": "ok",
        }
    )
    lesions = pd.DataFrame({"scan_id": ["r06"], "lesion_id": [None], "region": ["frontal"]})
    cache = ScanStore(str(tmp_path))
    volumes, _, report, _, problems = preprocess_volumes(
        images, {}, catalog, lesions, cache, parameters
    )
    assert list(volumes) == ["r00"] and report["scan_id"].tolist() == ["r00"]
    failed = problems.set_index("scan_id").loc["r06"]
    assert failed["stage"] == "preprocessing" and failed["item"] == "r06.nii"
    assert failed["problem"].startswith("preprocessing failed: RuntimeError: applying transform")
    assert "caused by ZeroDivisionError: division by zero" in failed["problem"]
    with pytest.raises(InputDataError, match="r06.nii: preprocessing failed"):
        preprocess_volumes(
            images, {}, catalog, lesions, cache, {**parameters, "on_invalid": "raise"}
        )
