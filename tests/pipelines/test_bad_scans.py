"""No scan can stall or end a data_engineering run: a volume with extreme values, one with
inf and one whose preprocessing outlasts the time limit are each listed, and every other
scan's outputs are exactly those of a run without them. Too few usable scans stop the run at
the catalog with a summary."""

import multiprocessing
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mriclip.imaging.triage import TooFewScansError
from mriclip.pipelines.data_engineering.pipeline import create_pipeline
from tests.conftest import make_raw_cohort
from tests.pipelines.helpers import load_parameters, run_in_memory
from tests.pipelines.test_data_engineering import engineering_inputs

PATIENTS = [f"P{i}" for i in range(9)]


class SlowInWorker:
    """A scan loader that hangs (sleeps) in a preprocessing worker, not in the catalog."""

    def __init__(self, load, seconds: float) -> None:
        self.load, self.seconds = load, seconds

    def __call__(self):
        if multiprocessing.parent_process() is not None:
            time.sleep(self.seconds)
        return self.load()


def with_data(load, change):
    image = load()
    data = change(np.asarray(image.dataobj).astype(np.float32))
    return lambda: nib.Nifti1Image(data, image.affine)


def extreme(data):
    data[10:14, 10:14, 10:14] = 3.0e30  # data bytes overwritten: floats out of all range
    return data


def infinite(data):
    data[20, 20, 20] = np.inf
    return data


def engineering(workers: int, timeout_s: float) -> dict:
    parameters = load_parameters("test")["data_engineering"]
    return {"data_engineering": {**parameters, "workers": workers, "scan_timeout_s": timeout_s}}


@pytest.fixture(scope="module")
def clean_run():
    return run_in_memory(create_pipeline(), engineering_inputs(*make_raw_cohort(PATIENTS)))


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_and_stuck_scans_are_listed_and_the_others_unchanged(clean_run, workers):
    images, labels, scans, lesions = make_raw_cohort(PATIENTS)
    images["S1.nii.gz"] = with_data(images["S1.nii.gz"], extreme)
    images["S2.nii.gz"] = with_data(images["S2.nii.gz"], infinite)
    images["S3.nii.gz"] = SlowInWorker(images["S3.nii.gz"], 120.0)
    tick = time.monotonic()
    out = run_in_memory(
        create_pipeline(),
        engineering_inputs(images, labels, scans, lesions),
        overrides=engineering(workers, timeout_s=4.0),
    )
    assert time.monotonic() - tick < 100  # the stuck scan did not hold the run for 120 s
    problems = out["catalog_problems"].set_index("scan_id")
    assert problems.loc["S1", "problem"].startswith("64 voxel(s) beyond +-1e+06")
    assert problems.loc["S1", "stage"] == "nifti_catalog"  # before any registration
    assert problems.loc["S2", "problem"] == "1 NaN/inf voxel(s)"
    stuck = problems.loc["S3"]
    assert stuck["stage"] == "preprocessing"
    assert stuck["problem"].startswith("preprocessing took too long: ended after 4.")
    assert "data_engineering.scan_timeout_s" in stuck["fix"]
    others = [f"S{i}" for i in range(len(PATIENTS)) if i not in (1, 2, 3)]
    assert sorted(out["preprocessed_volumes"]) == others
    for scan_id in others:
        for name in ("preprocessed_volumes", "preprocessed_labels"):
            np.testing.assert_array_equal(out[name][scan_id](), clean_run[name][scan_id]())
    assert set(out["splits"]["scan_id"]) == set(others)
    pd.testing.assert_frame_equal(
        out["lesion_table"],
        clean_run["lesion_table"][clean_run["lesion_table"]["scan_id"].isin(others)].reset_index(
            drop=True
        ),
    )


def test_a_multi_sequence_folder_read_without_sequences_stops_at_the_catalog():
    images, labels, scans, lesions = make_raw_cohort(PATIENTS)
    files = {}
    for name, load in images.items():
        scan_id = name.removesuffix(".nii.gz")
        files.update({f"{scan_id}_t1.nii.gz": load, f"{scan_id}_flair.nii.gz": load})
    with pytest.raises(TooFewScansError) as raised:
        run_in_memory(create_pipeline(), engineering_inputs(files, labels, scans, lesions))
    message = str(raised.value)
    assert "0 of 18 scan(s) read are usable" in message
    assert "the splits need at least 3" in message
    assert "set data_engineering.sequences: [t1, flair]" in message
    assert "the file looks like sequence" in message  # not "add a row to scans.csv"
