"""One test per bad input: each is raised with a clear message or listed in the problems table."""

import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mriclip.datasets import NiftiDataset
from mriclip.imaging.lesion_table import collect_lesions
from mriclip.imaging.preprocessing import preprocess_scan
from mriclip.imaging.problems import InputDataError
from mriclip.imaging.validation import GridRule, build_nifti_catalog
from tests.conftest import REGIONS, preprocessing_config

COLUMNS = {
    "scan_id": "scan_id",
    "patient_id": "patient_id",
    "lesion_id": "lesion_id",
    "region": "region",
    "regions": "regions",
}


def catalog(images, labels, scans, on_invalid="skip"):
    return build_nifti_catalog(images, labels, scans, COLUMNS, on_invalid)


def status_of(table, scan_id):
    return table.set_index("scan_id").loc[scan_id, "status"]


def test_clean_cohort_has_no_problems(raw_cohort):
    images, labels, scans, _ = raw_cohort
    table, problems = catalog(images, labels, scans)
    assert problems.empty
    assert (table["status"] == "ok").all()
    row = table.set_index("scan_id").loc["S0"]
    assert row["shape"] == "40x48x40" and row["spacing"] == "2x2x2" and row["orientation"] == "RAS"
    assert row["patient_id"] == "P0" and len(row["sha256"]) == 64
    volume = images["S0.nii.gz"]().get_fdata()
    assert row["intensity_min"] == pytest.approx(volume.min())


def _raise_on_load():
    raise EOFError("Compressed file ended before the end-of-stream marker was reached")


def test_unreadable_file_is_listed(raw_cohort):
    images, labels, scans, _ = raw_cohort
    images["S1.nii.gz"] = _raise_on_load
    table, problems = catalog(images, labels, scans)
    assert "unreadable" in status_of(table, "S1")
    assert problems.set_index("scan_id").loc["S1", "item"] == "S1.nii.gz"


def test_non_3d_is_listed_but_singleton_4d_accepted(raw_cohort):
    images, labels, scans, _ = raw_cohort
    data = images["S1.nii.gz"]().get_fdata()
    images["S1.nii.gz"] = lambda: nib.Nifti1Image(np.stack([data, data], -1), np.eye(4) * 2)
    images["S2.nii.gz"] = lambda: nib.Nifti1Image(data[..., None], np.diag([2.0, 2, 2, 1]))
    table, _ = catalog(images, labels, scans)
    assert "not a 3D volume" in status_of(table, "S1")
    assert status_of(table, "S2") == "ok"


def test_nan_voxels_are_listed(raw_cohort):
    images, labels, scans, _ = raw_cohort
    data = images["S2.nii.gz"]().get_fdata()
    data[3, 3, 3] = np.nan
    data[4, 4, 4] = np.inf
    images["S2.nii.gz"] = lambda: nib.Nifti1Image(data, np.diag([2.0, 2, 2, 1]))
    table, problems = catalog(images, labels, scans)
    assert status_of(table, "S2") == "2 NaN/inf voxel(s)"
    assert "S2" in set(problems["scan_id"])


def test_label_on_another_grid_is_listed(raw_cohort):
    images, labels, scans, _ = raw_cohort
    label = labels["S3.nii.gz"]()
    labels["S3.nii.gz"] = lambda: nib.Nifti1Image(label.get_fdata(), np.diag([1.0, 1, 1, 1]))
    labels["S4.nii.gz"] = lambda: nib.Nifti1Image(np.zeros((10, 10, 10)), np.diag([2.0, 2, 2, 1]))
    table, _ = catalog(images, labels, scans)
    assert "does not match image grid" in status_of(table, "S3")
    assert "(10, 10, 10) does not match image grid (40, 48, 40)" in status_of(table, "S4")


def test_scan_without_row_and_row_without_scan(raw_cohort):
    images, labels, scans, _ = raw_cohort
    scans = pd.concat(
        [scans[scans["scan_id"] != "S5"], pd.DataFrame([{"scan_id": "GHOST", "patient_id": "P9"}])]
    )
    table, problems = catalog(images, labels, scans)
    assert status_of(table, "S5") == "scan has no row in scans.csv"
    ghost = problems.set_index("scan_id").loc["GHOST"]
    assert ghost["problem"] == "row has no image file"
    assert "images/GHOST.nii.gz" in ghost["fix"]


def test_duplicate_ids_are_listed(raw_cohort):
    images, labels, scans, _ = raw_cohort
    scans = pd.concat([scans, scans[scans["scan_id"] == "S0"]], ignore_index=True)
    images["S0.nii"] = images["S0.nii.gz"]
    table, problems = catalog(images, labels, scans)
    assert status_of(table, "S0") == "ambiguous or incomplete scans.csv row"
    texts = " ".join(problems["problem"])
    assert "duplicate scan_id 'S0'" in texts and "duplicate image for scan 'S0'" in texts


def test_missing_required_columns_raise_with_names(raw_cohort):
    images, labels, scans, _ = raw_cohort
    with pytest.raises(InputDataError, match=r"lacks required column\(s\) \['patient_id'\]"):
        catalog(images, labels, scans.rename(columns={"patient_id": "subject"}))


def test_on_invalid_raise_lists_every_problem(raw_cohort):
    images, labels, scans, _ = raw_cohort
    images["S1.nii.gz"] = _raise_on_load
    images["readme.txt"] = lambda: None
    with pytest.raises(InputDataError) as error:
        catalog(images, labels, scans, on_invalid="raise")
    message = str(error.value)
    assert "S1.nii.gz: unreadable" in message and "readme.txt: image file is not .nii" in message
    assert "on_invalid: skip" in message


def test_bad_on_invalid_value_is_an_error(raw_cohort):
    images, labels, scans, _ = raw_cohort
    with pytest.raises(ValueError, match="on_invalid must be 'raise' or 'skip'"):
        catalog(images, labels, scans, on_invalid="ignore")


def test_unknown_region_and_orphan_lesion(raw_cohort):
    images, labels, scans, lesions = raw_cohort
    table, _ = catalog(images, labels, scans)
    lesions = pd.concat(
        [
            lesions,
            pd.DataFrame(
                [
                    {"scan_id": "S0", "lesion_id": 3, "region": "Brainstem"},
                    {"scan_id": "NOPE", "lesion_id": 1, "region": "frontal"},
                ]
            ),
        ],
        ignore_index=True,
    )
    kept, problems = collect_lesions(scans, lesions, table, REGIONS, COLUMNS)
    assert len(kept) == 12
    by_problem = problems.set_index("problem")
    assert by_problem.loc["unknown region 'brainstem'", "item"] == "lesions.csv row 14"
    assert by_problem.loc["lesion of a scan that does not exist", "scan_id"] == "NOPE"
    with pytest.raises(InputDataError, match="unknown region 'brainstem'"):
        collect_lesions(scans, lesions, table, REGIONS, COLUMNS, on_invalid="raise")


def test_regions_column_replaces_lesion_table(raw_cohort):
    images, labels, scans, _ = raw_cohort
    table, _ = catalog(images, labels, scans)
    scans = scans.assign(regions=["frontal;occipital", "", "temporal", None, "frontal", "x"])
    kept, problems = collect_lesions(scans, pd.DataFrame(), table, REGIONS, COLUMNS)
    assert kept.groupby("scan_id")["region"].apply(list).to_dict() == {
        "S0": ["frontal", "occipital"],
        "S2": ["temporal"],
        "S4": ["frontal"],
    }
    assert problems["problem"].tolist() == ["unknown region 'x'"]


def test_no_lesion_information_is_an_empty_table_and_one_note(raw_cohort):
    """Lesion information is optional: most public cohorts have none."""
    images, labels, scans, _ = raw_cohort
    table, _ = catalog(images, labels, scans)
    kept, problems = collect_lesions(scans, pd.DataFrame(), table, REGIONS, COLUMNS, "raise")
    assert kept.empty and list(kept.columns) == ["scan_id", "lesion_id", "region"]
    assert len(problems) == 1
    assert problems.loc[0, "item"] == "lesions.csv"
    assert problems.loc[0, "problem"].startswith("no lesion information")


def test_zero_or_nan_spacing_is_listed_with_the_header_fix(raw_cohort, tmp_path):
    """Files whose stored spacing is 0 or NaN and no sform, read as the catalog reads them
    (nibabel alone would take the 0 for 1 mm), and in-memory images with such an affine."""
    images, labels, scans, _ = raw_cohort
    data = images["S1.nii.gz"]().get_fdata().astype(np.float32)
    for scan_id, zooms in {"S1": (2.0, 0.0, 2.0), "S2": (2.0, 2.0, np.nan)}.items():
        image = nib.Nifti1Image(data, None)
        image.header.set_qform(None, code=0)
        image.header.set_sform(None, code=0)
        image.header["pixdim"][1:4] = zooms
        path = tmp_path / f"{scan_id}.nii.gz"
        path.write_bytes(gzip.compress(image.to_bytes()))
        images[path.name] = NiftiDataset(filepath=str(path)).load
    flat = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    flat._affine = np.diag([2.0, 2.0, 0.0, 1.0])  # as a loader might hand it over
    images["S3.nii.gz"] = lambda: flat
    table, problems = catalog(images, {}, scans)
    for scan_id, stored in {"S1": "2x0x2", "S2": "2x2xnan"}.items():
        status = status_of(table, scan_id)
        assert str(tmp_path / f"{scan_id}.nii.gz") in status
        assert f"header voxel spacing (pixdim) {stored} mm has a zero or NaN size" in status
    assert status_of(table, "S3") == "voxel spacing 2x2x0 mm has a zero or NaN size"
    fixes = problems.set_index("scan_id")["fix"]
    assert all("set_zooms" in fixes[scan_id] for scan_id in ("S1", "S2", "S3"))
    assert status_of(table, "S0") == "ok"


def test_field_of_view_rule_matches_what_preprocessing_can_hold(raw_cohort):
    """A slab of the head 2 target voxels thick is rejected (and would crash the resize); one
    4 voxels thick, the rule's limit, passes and preprocesses to the target shape."""
    images, labels, scans, _ = raw_cohort
    volume = images["S0.nii.gz"]().get_fdata()
    config = preprocessing_config(
        target_spacing=(4.0, 4.0, 4.0), target_shape=(32, 32, 32), registration="none"
    )
    grid = GridRule(config.target_spacing, min_extent_voxels=4)
    slabs = {"S1": volume[:, :, 16:20], "S2": volume[:, :, 16:24]}  # 8 and 16 mm thick
    for scan_id, slab in slabs.items():
        images[f"{scan_id}.nii.gz"] = lambda slab=slab: nib.Nifti1Image(
            slab, np.diag([2, 2, 2, 1.0])
        )
        del labels[f"{scan_id}.nii.gz"]
    table, problems = build_nifti_catalog(images, labels, scans, COLUMNS, "skip", grid)
    assert status_of(table, "S1") == (
        "field of view too small for the target grid: extent 80x96x8 mm is 20x24x2 voxels of "
        "4x4x4 mm, fewer than data_engineering.min_extent_voxels=4 along an axis"
    )
    assert status_of(table, "S2") == "ok"
    assert problems["scan_id"].tolist() == ["S1"]
    with pytest.raises(RuntimeError, match="Resized"):
        preprocess_scan(images["S1.nii.gz"](), slabs["S1"], None, config)
    out, _, _ = preprocess_scan(images["S2.nii.gz"](), slabs["S2"], None, config)
    assert out.shape == (32, 32, 32) and np.isfinite(out).all()
