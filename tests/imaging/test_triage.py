"""Too few usable scans stop the run at the catalog with a summary that names the fix."""

import pandas as pd
import pytest

from mriclip.imaging.problems import PROBLEM_COLUMNS
from mriclip.imaging.triage import (
    TooFewScansError,
    commonest_problems,
    naming_hints,
    no_row_fix,
    require_enough_scans,
)

SCAN_IDS = {"P001_S1", "P001_S2", "P002_S1"}
MULTI_SEQUENCE = [f"{s}_{q}.nii.gz" for s in sorted(SCAN_IDS) for q in ("flair", "t1", "t2")]


def test_a_sequence_file_is_not_told_to_become_a_row():
    assert no_row_fix("P001_S1_t1", SCAN_IDS).startswith(
        "the file looks like sequence 't1' of scan 'P001_S1'"
    )
    assert "data_engineering.sequences" in no_row_fix("P001_S1_t1", SCAN_IDS)
    assert no_row_fix("P009_S1", SCAN_IDS) == "add a row with scan_id 'P009_S1' to scans.csv"


def test_naming_patterns_are_recognised():
    [hint] = naming_hints(MULTI_SEQUENCE, SCAN_IDS, None)
    assert "9 image file(s) are named <scan_id>_<sequence>.nii.gz for 3 scan id(s)" in hint
    assert "data_engineering.sequences: [t1, t2, flair]" in hint  # the usual order, t1 first
    assert naming_hints(MULTI_SEQUENCE, SCAN_IDS, ["t1", "t2"]) == []  # already set
    [bids] = naming_hints(["sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"], set(), None)
    assert "data_engineering.source: bids" in bids and "['T1w']" in bids
    [dicom] = naming_hints(["series1/IM0001", "series1/IM0002.dcm"], set(), None)
    assert dicom.startswith("2 file(s) look like DICOM") and "dcm2niix" in dicom
    assert naming_hints(["P001_S1.nii.gz"], SCAN_IDS, None) == []


def problem_rows(*rows):
    return pd.DataFrame([dict(zip(PROBLEM_COLUMNS, row, strict=True)) for row in rows])


def test_problems_are_grouped_by_kind_commonest_first():
    problems = problem_rows(
        *[
            ("nifti_catalog", f"S{i}", f"S{i}.nii.gz", f"{i + 1} NaN/inf voxel(s)", "re-export")
            for i in range(3)
        ],
        ("nifti_catalog", "S9", "S9.nii.gz", "constant volume: every voxel is 0", "re-export it"),
    )
    lines = commonest_problems(problems)
    assert lines == [
        "- 3 x 1 NaN/inf voxel(s) (e.g. S0.nii.gz) -> re-export",
        "- 1 x constant volume: every voxel is 0 (e.g. S9.nii.gz) -> re-export it",
    ]
    assert commonest_problems(problems, shown=1)[-1] == "- and 1 more kind(s) of problem"


def test_too_few_usable_patients_stop_with_a_summary():
    catalog = pd.DataFrame(
        {
            "scan_id": [f.removesuffix(".nii.gz") for f in MULTI_SEQUENCE],
            "patient_id": None,
            "status": "scan has no row in scans.csv",
        }
    )
    problems = problem_rows(
        *[
            (
                "nifti_catalog",
                sid,
                f"{sid}.nii.gz",
                "scan has no row in scans.csv",
                no_row_fix(sid, SCAN_IDS),
            )
            for sid in catalog["scan_id"]
        ]  # fmt: skip
    )
    settings = {"source": "files", "sequences": None}
    with pytest.raises(TooFewScansError) as raised:
        require_enough_scans(
            catalog, problems, 9, "the splits need at least 9", MULTI_SEQUENCE, SCAN_IDS, settings
        )
    message = str(raised.value)
    assert message.startswith(
        "data_engineering stopped at the catalog: 0 of 9 scan(s) read are usable (0 patient(s)), "
        "and the splits need at least 9."
    )
    assert "Hint: 9 image file(s) are named <scan_id>_<sequence>.nii.gz" in message
    assert "Commonest problems (9 in all):\n- 9 x scan has no row in scans.csv" in message
    enough = catalog.assign(status="ok", patient_id=[f"P{i}" for i in range(9)])
    require_enough_scans(enough, problems, 9, "", MULTI_SEQUENCE, SCAN_IDS, settings)
