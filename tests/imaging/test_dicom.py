"""DICOM series as scans: read with the geometry of the NIfTI they were written from, refused
with the reason when they are no volume, and pydicom's own MR files listed, never a crash."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import pytest

from mriclip.datasets import ScanImagesDataset
from mriclip.imaging.dicom import DicomSeriesError
from mriclip.imaging.scan_inputs import UnusableInput, scan_inputs
from mriclip.imaging.validation import build_unlabelled_catalog
from tests.dicom_series import IDENTIFIERS, write_series

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def oblique_volume() -> nib.Nifti1Image:
    """A 20x24x12 volume, axes permuted and flipped, 1.5 x 2 x 3 mm, rotated 20 degrees."""
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 900, size=(20, 24, 12)).astype(np.float32)
    angle = np.radians(20)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    axes = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], dtype=float)  # P, L, S-ish
    affine = nib.affines.from_matvec(rotation @ axes @ np.diag([1.5, 2.0, 3.0]), [12, -30, 40])
    return nib.Nifti1Image(data, affine)


def canonical(image: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    image = nib.as_closest_canonical(image)
    return np.asarray(image.dataobj, dtype=np.float64), image.affine


def only_problem(loaders: dict) -> str:
    (loader,) = loaders.values()
    assert isinstance(loader, UnusableInput)
    with pytest.raises(DicomSeriesError):
        loader()
    return loader.problem


def test_a_series_reads_back_as_the_nifti_it_was_written_from(tmp_path):
    image = oblique_volume()
    write_series(image, tmp_path / "r01")
    loaders = scan_inputs(tmp_path / "r01")
    assert list(loaders) == ["r01/"]
    read = loaders["r01/"]()
    np.testing.assert_allclose(read.affine, image.affine, atol=1e-4)  # slices in image order
    data, affine = canonical(read)
    expected_data, expected_affine = canonical(image)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-4)
    np.testing.assert_allclose(data, expected_data, atol=900 / 60000)
    header = read.header
    assert header["descrip"].tobytes().strip(b"\0") == b""  # nothing of the DICOM header
    assert not any(name.encode() in header.binaryblock for name in IDENTIFIERS)


def test_a_folder_of_several_series_gives_one_scan_per_series(tmp_path):
    write_series(oblique_volume(), tmp_path / "p1", series_number=3, prefix="A")
    write_series(oblique_volume(), tmp_path / "p1", series_number=7, prefix="B")
    loaders = scan_inputs(tmp_path)
    assert sorted(loaders) == ["p1/series3/", "p1/series7/"]
    catalog, problems = build_unlabelled_catalog(loaders)
    assert sorted(catalog["scan_id"]) == ["p1_series3", "p1_series7"]
    assert (catalog["status"] == "ok").all() and problems.empty


def test_a_missing_slice_is_refused(tmp_path):
    write_series(oblique_volume(), tmp_path / "gap", drop_slices=(5,))
    assert "1 slice(s) missing" in only_problem(scan_inputs(tmp_path / "gap"))


def test_mixed_series_in_one_folder_are_refused(tmp_path):
    write_series(oblique_volume(), tmp_path / "mixed", series_number=4, prefix="A")
    write_series(oblique_volume(), tmp_path / "mixed", series_number=4, prefix="B")
    problem = only_problem(scan_inputs(tmp_path / "mixed"))
    assert problem.startswith("mixed series in one folder: 2 series (24 files)")


def test_a_localizer_is_refused(tmp_path):
    write_series(
        oblique_volume(), tmp_path / "loc", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")
    )
    assert only_problem(scan_inputs(tmp_path / "loc")).startswith("a localizer")


def test_a_non_mr_modality_is_refused(tmp_path):
    write_series(oblique_volume(), tmp_path / "ct", modality="CT")
    assert only_problem(scan_inputs(tmp_path / "ct")) == "modality CT is not MR"


def test_a_sheared_stack_gantry_tilt_is_refused(tmp_path):
    write_series(oblique_volume(), tmp_path / "tilt", shear_mm=0.8)
    assert "sheared by 15 degrees (gantry tilt)" in only_problem(scan_inputs(tmp_path / "tilt"))


def test_unreadable_and_stray_files_are_listed_and_the_series_still_read(tmp_path):
    files = write_series(oblique_volume(), tmp_path / "images" / "r02")
    (tmp_path / "images" / "r02" / "notes.txt").write_text("not an image")
    truncated = tmp_path / "images" / "r02" / "IM9999"
    truncated.write_bytes(files[0].read_bytes()[:900])  # cut inside the header
    images = ScanImagesDataset(
        path=str(tmp_path / "images"), dataset="mriclip.datasets.NiftiDataset"
    ).load()
    catalog, problems = build_unlabelled_catalog(images)
    assert catalog.set_index("scan_id").loc["r02", "status"] == "ok"
    listed = dict(zip(problems["item"], problems["problem"], strict=True))
    assert listed["r02/notes.txt"] == "not a DICOM file, in a folder of DICOM files"
    assert listed["r02/IM9999"].startswith("unreadable DICOM file")


def test_a_file_cut_between_its_geometry_tags_is_listed_not_the_series_refused(tmp_path):
    """Cut after Rows and Columns but before PixelSpacing, a file parses without an error
    (pydicom skips the values it was not asked for); it must not make its series lack
    PixelSpacing."""
    files = write_series(oblique_volume(), tmp_path / "images" / "r04")
    header = files[0].read_bytes()
    cut = header.index(b"\x28\x00\x30\x00DS")  # (0028,0030) PixelSpacing, explicit VR LE
    assert header.index(b"\x28\x00\x11\x00US") < cut  # Columns comes before it
    (tmp_path / "images" / "r04" / "IM9998").write_bytes(header[:cut])
    catalog, problems = build_unlabelled_catalog(scan_inputs(tmp_path / "images"))
    assert catalog.set_index("scan_id").loc["r04", "status"] == "ok"
    listed = dict(zip(problems["item"], problems["problem"], strict=True))
    assert listed == {
        "r04/IM9998": "unreadable DICOM file: DicomSeriesError: the file ends before its "
        "pixel data (truncated)"
    }


def test_a_slice_whose_pixel_data_is_cut_short_refuses_its_series(tmp_path):
    files = write_series(oblique_volume(), tmp_path / "r03")
    files[3].write_bytes(files[3].read_bytes()[:-500])
    catalog, problems = build_unlabelled_catalog(scan_inputs(tmp_path))
    assert (
        catalog.set_index("scan_id")
        .loc["r03", "status"]
        .startswith("unreadable or not a 3D volume: a slice's pixel data cannot be decoded")
    )
    assert list(problems["item"]) == ["r03/"]


def test_the_catalog_lists_refused_series_by_scan_id_with_the_reason(tmp_path):
    write_series(oblique_volume(), tmp_path / "ok")
    write_series(oblique_volume(), tmp_path / "ct", modality="CT")
    nib.save(oblique_volume(), tmp_path / "n01.nii.gz")
    catalog, problems = build_unlabelled_catalog(scan_inputs(tmp_path))
    assert sorted(catalog["scan_id"]) == ["n01", "ok"]
    row = problems.set_index("item").loc["ct/"]
    assert row["scan_id"] == "ct" and row["problem"] == "modality CT is not MR"


def test_pydicoms_real_mr_files_are_read_or_listed_never_a_crash(tmp_path):
    """pydicom ships real MR series (16x16 downsamples: three single-slice series, a
    tri-plane localizer, a radial stack) and single MR slices in several transfer syntaxes:
    none is a 3D volume, each is listed with why; none is copied into the repository."""
    series = PYDICOM_FILES / "dicomdirtests" / "98892003"
    single = sorted(PYDICOM_FILES.glob("MR_small*.dcm")) + [PYDICOM_FILES / "MR_truncated.dcm"]
    loaders = {}
    for folder in ("MR1", "MR2", "MR700"):
        loaders.update(scan_inputs(series / folder))
    for path in single:
        loaders.update(scan_inputs(path))
    catalog, problems = build_unlabelled_catalog(loaders)
    assert catalog.empty or (catalog["status"] != "ok").all()
    assert set(problems["item"]) >= set(loaders)
    reasons = dict(zip(problems["item"], problems["problem"], strict=True))
    assert reasons["MR1/series1/"].startswith("mixed series in one folder: 3 series")
    assert reasons["MR700/"].startswith("mixed series: its slices have 7 orientations")
    assert reasons["MR_small/"] == "a single slice, not a volume"
    text = problems.to_csv()
    assert "Doe" not in text and "Peter" not in text  # their patient's name
