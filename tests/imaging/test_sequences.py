"""Multi-sequence scans: file names, shared grids, missing sequences, the channel stack."""

from functools import partial

import nibabel as nib
import numpy as np
import pytest

from mriclip.datasets import ScanStore
from mriclip.imaging.collection import ScanSource, preprocess_collection, scan_files
from mriclip.imaging.preprocessing import preprocess_scan
from mriclip.imaging.validation import build_nifti_catalog
from mriclip.pipelines.data_engineering.nodes import select_input
from mriclip.pipelines.pretraining.nodes import preprocess_unlabelled
from tests.conftest import _loaded, make_raw_cohort, preprocessing_config

COLUMNS = {"scan_id": "scan_id", "patient_id": "patient_id"}
SEQUENCES = ["t1", "t2"]
CONFIG = preprocessing_config(target_spacing=(4.0, 4.0, 4.0), target_shape=(24, 24, 24))


@pytest.fixture
def two_sequences():
    """Each scan of the raw cohort as t1 (the image) and t2 (its square root: another
    contrast of the same voxels)."""
    images, labels, scans, _ = make_raw_cohort(["P0", "P1", "P2"])
    sequences = {}
    for name, load in images.items():
        image = load()
        t2 = np.sqrt(np.clip(image.get_fdata(), 0, None)).astype(np.float32)
        sequences[name.replace(".nii.gz", "_t1.nii.gz")] = load
        sequences[name.replace(".nii.gz", "_t2.nii.gz")] = partial(
            _loaded, nib.Nifti1Image(t2, image.affine)
        )
    return sequences, labels, scans


def catalog(images, labels, scans, missing="duplicate", on_invalid="skip"):
    return build_nifti_catalog(images, labels, scans, COLUMNS, on_invalid, None, SEQUENCES, missing)


def test_sequences_of_a_scan_are_catalogued_in_order(two_sequences):
    table, problems = catalog(*two_sequences)
    assert problems.empty and (table["status"] == "ok").all()
    row = table.set_index("scan_id").loc["S1"]
    assert row["image_file"] == "S1_t1.nii.gz"
    assert row["sequence_files"] == "S1_t1.nii.gz;S1_t2.nii.gz"


def test_a_sequence_on_another_grid_is_listed_and_resampled_onto_the_first(two_sequences, tmp_path):
    images, labels, scans = two_sequences
    t2 = images["S0_t2.nii.gz"]()
    # The same voxels stored flipped along the first axis: another grid, the same world.
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = t2.shape[0] - 1
    flipped = nib.Nifti1Image(np.asarray(t2.dataobj)[::-1].copy(), t2.affine @ flip)
    images["S0_t2.nii.gz"] = partial(_loaded, flipped)
    table, problems = catalog(images, labels, scans)
    assert status_of(table, "S0") == "ok"
    note = problems.set_index("item").loc["S0_t2.nii.gz"]
    assert note["stage"] == "sequences" and "resampled" in note["fix"]
    assert "differs" in note["problem"]

    store = ScanStore(str(tmp_path / "store"))
    row = table.set_index("scan_id").loc["S0"]
    files = row["sequence_files"].split(";")
    source = ScanSource("S0", images[files[0]], labels["S0.nii.gz"], (images[files[1]],))
    done = preprocess_collection([source], CONFIG, store, 1, None)
    stack = done.loaders("volume")["S0"]()
    image = images["S0_t1.nii.gz"]()
    expected, _, _ = preprocess_scan(
        image, image.get_fdata(), None, CONFIG, [np.asarray(t2.dataobj)]
    )
    assert stack.shape == (2, 24, 24, 24)
    np.testing.assert_allclose(stack, expected, atol=1e-4)


def test_mismatched_grids_are_caught_even_with_equal_shapes(two_sequences):
    images, labels, scans = two_sequences
    t2 = images["S2_t2.nii.gz"]()
    shifted = nib.Nifti1Image(np.asarray(t2.dataobj), t2.affine @ np.diag([1.5, 1, 1, 1]))
    images["S2_t2.nii.gz"] = partial(_loaded, shifted)
    _, problems = catalog(images, labels, scans)
    assert list(problems["item"]) == ["S2_t2.nii.gz"]


def status_of(table, scan_id):
    return table.set_index("scan_id").loc[scan_id, "status"]


def test_missing_sequence_is_duplicated_and_listed(two_sequences):
    images, labels, scans = two_sequences
    del images["S1_t2.nii.gz"]
    table, problems = catalog(images, labels, scans, missing="duplicate")
    row = table.set_index("scan_id").loc["S1"]
    assert row["status"] == "ok"
    assert scan_files(row_tuple(table, "S1")) == ["S1_t1.nii.gz", "S1_t1.nii.gz"]
    listed = problems.set_index("scan_id").loc["S1"]
    assert "missing sequence(s) ['t2']" in listed["problem"] and "duplicate" in listed["fix"]


def test_missing_first_sequence_takes_the_next_as_reference(two_sequences):
    images, labels, scans = two_sequences
    del images["S1_t1.nii.gz"]
    table, _ = catalog(images, labels, scans, missing="duplicate")
    assert scan_files(row_tuple(table, "S1")) == ["S1_t2.nii.gz", "S1_t2.nii.gz"]


def test_missing_sequence_skips_the_scan_when_asked(two_sequences):
    images, labels, scans = two_sequences
    del images["S1_t2.nii.gz"]
    table, problems = catalog(images, labels, scans, missing="skip")
    assert "missing sequence(s) ['t2']" in status_of(table, "S1")
    assert status_of(table, "S0") == "ok"
    assert problems.set_index("scan_id").loc["S1", "stage"] == "nifti_catalog"
    with pytest.raises(ValueError, match="missing sequence"):
        catalog(images, labels, scans, missing="skip", on_invalid="raise")


def test_a_file_of_no_listed_sequence_is_listed(two_sequences):
    images, labels, scans = two_sequences
    images["S0_pd.nii.gz"] = images["S0_t2.nii.gz"]
    _, problems = catalog(*(images, labels, scans))
    assert "names no sequence" in problems.set_index("item").loc["S0_pd.nii.gz", "problem"]


def test_bad_missing_sequences_parameter_is_named(two_sequences):
    with pytest.raises(ValueError, match="missing_sequences"):
        catalog(*two_sequences, missing="drop")


def row_tuple(table, scan_id):
    return next(table[table["scan_id"] == scan_id].itertuples())


def test_sequences_with_a_bids_source_are_refused_naming_the_parameter():
    params = {"source": "bids", "sequences": SEQUENCES}
    with pytest.raises(ValueError, match="data_engineering.sequences"):
        select_input({}, {}, None, None, params)


def test_unlabelled_scans_for_pretraining_follow_the_sequences_too(two_sequences, tmp_path):
    images, _, _ = two_sequences
    del images["S2_t2.nii.gz"]
    params = {
        "sequences": SEQUENCES,
        "missing_sequences": "skip",
        "on_invalid": "skip",
        "preprocessing": CONFIG.__dict__,
        "workers": 1,
        "dask_scheduler": None,
        "max_abs_intensity": 1e6,
        "scan_timeout_s": 120,
    }
    volumes, problems = preprocess_unlabelled(images, ScanStore(str(tmp_path)), params)
    assert sorted(volumes) == ["unlabelled_S0", "unlabelled_S1"]
    stack = volumes["unlabelled_S0"]()
    assert stack.shape == (2, 24, 24, 24)
    t1, _, _ = preprocess_scan(images["S0_t1.nii.gz"](), images["S0_t1.nii.gz"]().get_fdata(),
                               None, CONFIG)  # fmt: skip
    np.testing.assert_allclose(stack[0], t1, atol=1e-5)
    assert "S2" in set(problems["scan_id"])
