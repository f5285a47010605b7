"""Voxels no preprocessing can use are found by the catalog, before any registration, and the
scan is named with the fix."""

import nibabel as nib
import numpy as np
import pytest

from mriclip.imaging.intensity import intensity_problem
from mriclip.imaging.validation import build_nifti_catalog, build_unlabelled_catalog
from tests.imaging.test_validation import COLUMNS, status_of


def test_intensity_problems():
    volume = np.zeros((4, 4, 4), np.float32)
    volume[1, 1, 1] = 100.0
    assert intensity_problem(volume, 1e6) is None
    assert intensity_problem(volume, None) is None
    extreme = volume.copy()
    extreme[2, 2, 2], extreme[3, 3, 3] = 3e30, -1e7
    problem = intensity_problem(extreme, 1e6)
    assert problem.startswith("2 voxel(s) beyond +-1e+06 (min -1e+07, max 3e+30)")
    assert intensity_problem(extreme, None) is None  # no bound asked
    assert intensity_problem(np.full((4, 4, 4), 7, np.int16), 1e6).startswith(
        "constant volume: every voxel is 7"
    )
    with_inf = volume.copy()
    with_inf[0, 0, 0] = np.inf
    assert intensity_problem(with_inf, 1e6) == "1 NaN/inf voxel(s)"
    # integer data at their type's ends: no overflow in the bound check
    assert intensity_problem(np.array([[[-32768, 32767]]], np.int16), 1e6) is None
    assert intensity_problem(np.array([[[-32768, 32767]]], np.int16), 1e4).startswith("2 voxel")


def replace(images, name, change):
    image = images[name]()
    data = change(np.asarray(image.dataobj).copy())
    images[name] = lambda: nib.Nifti1Image(data, image.affine)


def test_extreme_constant_and_infinite_scans_are_listed_with_their_fix(raw_cohort):
    images, labels, scans, _ = raw_cohort

    def extreme(data):
        data[10:12, 10:12, 10:12] = 1e30
        return data

    def infinite(data):
        data[5, 5, 5] = -np.inf
        return data

    replace(images, "S1.nii.gz", extreme)
    replace(images, "S2.nii.gz", lambda data: np.zeros_like(data))
    replace(images, "S3.nii.gz", infinite)
    table, problems = build_nifti_catalog(
        images, labels, scans, COLUMNS, "skip", max_abs_intensity=1e6
    )
    assert status_of(table, "S1").startswith("8 voxel(s) beyond +-1e+06")
    assert status_of(table, "S2").startswith("constant volume: every voxel is 0")
    assert status_of(table, "S3") == "1 NaN/inf voxel(s)"
    assert [status_of(table, s) for s in ("S0", "S4", "S5")] == ["ok"] * 3
    fixes = problems.set_index("scan_id")["fix"]
    assert "data_engineering.max_abs_intensity" in fixes["S1"]
    assert "holds no image" in fixes["S2"] and "NaN/inf" in fixes["S3"]
    assert list(problems.set_index("scan_id").loc[["S1", "S2", "S3"], "item"]) == [
        "S1.nii.gz",
        "S2.nii.gz",
        "S3.nii.gz",
    ]


def test_new_and_unlabelled_scans_get_the_same_checks(raw_cohort):
    images, *_ = raw_cohort
    replace(images, "S4.nii.gz", lambda data: data * 1e9)
    table, problems = build_unlabelled_catalog(images, "skip", None, 1e6)
    assert "beyond +-1e+06" in status_of(table, "S4")
    assert (table.set_index("scan_id").drop("S4")["status"] == "ok").all()
    with pytest.raises(ValueError, match="S4.nii.gz: .*beyond"):
        build_unlabelled_catalog(images, "raise", None, 1e6)
