"""A BIDS dataset read with pybids into the file layout's images, labels and scans table."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mriclip.datasets import BIDSDataset
from mriclip.imaging.bids import read_bids
from mriclip.imaging.problems import InputDataError
from tests.bids_trees import ANATOMICAL, describe, nibabel_tree, save, write_tsv

PARAMS = {
    "suffix": "T1w",
    "datatype": "anat",
    "derivatives": "derivatives",
    "labels": {"desc": "lesion", "suffix": "mask"},
}
COLUMNS = {"scan_id": "scan_id", "patient_id": "patient_id"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    nibabel_tree(root)
    return root


def test_each_subject_session_image_is_a_scan_with_its_clinical_row(tree):
    found = read_bids(BIDSDataset(path=str(tree)).load(), PARAMS, COLUMNS, "skip")
    scans = found.scans.set_index("scan_id")
    assert sorted(scans.index) == ["sub-01_ses-1", "sub-01_ses-2", "sub-02", "sub-05", "sub-06"]
    assert sorted(found.images) == [f"{scan_id}.nii.gz" for scan_id in sorted(scans.index)]
    assert scans.loc["sub-01_ses-2", "patient_id"] == "sub-01"
    assert scans.loc["sub-01_ses-2", "session_id"] == "ses-2"
    assert scans.loc["sub-01_ses-1", "age"] == 30 and scans.loc["sub-01_ses-2", "age"] == 31
    assert scans.loc["sub-01_ses-2", "sex"] == "F"  # from participants.tsv
    assert scans.loc["sub-01_ses-2", "regions"] == "frontal;parietal"  # the session's value
    assert pd.isna(scans.loc["sub-02", "age"])  # n/a is missing
    assert pd.isna(scans.loc["sub-02", "session_id"])
    assert scans.loc["sub-02", "bids_image"] == "sub-02/anat/sub-02_T1w.nii.gz"
    # the real anatomy arrives unchanged through the loaders
    image = found.images["sub-01_ses-1.nii.gz"]()
    reference = nib.load(ANATOMICAL)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), reference.get_fdata())
    np.testing.assert_allclose(image.affine, reference.affine)


def test_lesion_masks_come_from_the_derivatives_folder(tree):
    found = read_bids(BIDSDataset(path=str(tree)).load(), PARAMS, COLUMNS, "skip")
    assert list(found.labels) == ["sub-02.nii.gz"]
    assert found.scans.set_index("scan_id").loc["sub-02", "bids_label"] == (
        "derivatives/lesions/sub-02/anat/sub-02_desc-lesion_mask.nii.gz"
    )
    label = np.asanyarray(found.labels["sub-02.nii.gz"]().dataobj)
    assert set(np.unique(label)) == {0, 1} and (label == 1).sum() == 123  # the r=3 ball
    without = read_bids(
        BIDSDataset(path=str(tree)).load(), {**PARAMS, "labels": None}, COLUMNS, "skip"
    )
    assert without.labels == {} and without.scans["bids_label"].isna().all()


def test_subjects_without_a_usable_image_are_listed(tree):
    found = read_bids(BIDSDataset(path=str(tree)).load(), PARAMS, COLUMNS, "skip")
    problems = found.problems.set_index("item")
    assert set(problems["stage"]) == {"bids"}
    assert problems.loc["participants.tsv: sub-03", "problem"] == (
        "participant has no anat/*_T1w.nii.gz image"
    )
    assert problems.loc["participants.tsv: sub-04", "problem"] == (
        "participant has no anat/*_T1w.nii.gz image"
    )
    assert problems.loc["sub-07/anat/sub-07_T1w.nii.gz", "problem"] == (
        "subject sub-07 is not in participants.tsv"
    )
    assert problems.loc[
        "derivatives/lesions/sub-04/anat/sub-04_desc-lesion_mask.nii.gz", "problem"
    ] == ("lesion label map without a matching image")
    assert len(problems) == 4
    with pytest.raises(InputDataError, match=r"4 problem\(s\) in the input data \(bids\)"):
        read_bids(BIDSDataset(path=str(tree)).load(), PARAMS, COLUMNS, "raise")


def test_a_missing_or_unindexable_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputDataError, match="BIDS dataset folder .* does not exist"):
        read_bids(BIDSDataset(path=str(tmp_path / "absent")).load(), PARAMS, COLUMNS, "skip")
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(InputDataError, match="it has no dataset_description.json"):
        read_bids(BIDSDataset(path=str(tmp_path)).load(), PARAMS, COLUMNS, "skip")
    describe(tmp_path, "no derivative description")
    (tmp_path / "derivatives" / "lesions" / "dataset_description.json").unlink()
    with pytest.raises(InputDataError, match=r"derivatives dataset\(s\) \['lesions'\] in"):
        read_bids(BIDSDataset(path=str(tmp_path)).load(), PARAMS, COLUMNS, "skip")


def test_pybids_refusals_name_the_folder(tmp_path):
    """pybids' JSONDecodeError on a broken description names neither file nor folder."""
    describe(tmp_path, "broken derivative description")
    (tmp_path / "derivatives" / "lesions" / "dataset_description.json").write_text("{bad")
    with pytest.raises(InputDataError, match=f"pybids cannot index the BIDS dataset '{tmp_path}'"):
        read_bids(BIDSDataset(path=str(tmp_path)).load(), PARAMS, COLUMNS, "skip")


def test_repeated_rows_are_listed_and_a_missing_session_value_keeps_the_participants(tmp_path):
    describe(tmp_path, "repeated rows")
    save(tmp_path, "01", "1", "T1w", nib.load(ANATOMICAL))
    write_tsv(
        tmp_path / "participants.tsv",
        [{"participant_id": "sub-01", "age": 40}, {"participant_id": "sub-01", "age": 99}],
    )
    write_tsv(
        tmp_path / "sub-01" / "sub-01_sessions.tsv",
        [{"session_id": "ses-1", "age": None}, {"session_id": "ses-1", "age": 98}],
    )
    found = read_bids(BIDSDataset(path=str(tmp_path)).load(), PARAMS, COLUMNS, "skip")
    assert found.scans.set_index("scan_id").loc["sub-01_ses-1", "age"] == 40
    assert sorted(found.problems["item"]) == [
        "participants.tsv row 3",
        "sub-01/sub-01_sessions.tsv row 3",
    ]
    assert set(found.problems["problem"]) == {
        "duplicate participant_id (the first row is used)",
        "duplicate session_id (the first row is used)",
    }
