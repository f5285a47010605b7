"""Writing DICOM MR series at test time (pydicom), from a NIfTI image, with identifiers that
tests then search every output for."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: Identifiers written into every test series: no output may contain them.
PATIENT_NAME = "Zyxwvut^Quorra"
PATIENT_ID = "PHI-ID-8675309"
IDENTIFIERS = (PATIENT_NAME, "Zyxwvut", "Quorra", PATIENT_ID, "ACC-55501", "Hospital Xanadu")


def _ds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")[:16]


def write_series(
    image: nib.Nifti1Image,
    folder: Path,
    *,
    series_number: int = 3,
    modality: str = "MR",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M"),
    series_uid: str | None = None,
    drop_slices: tuple[int, ...] = (),
    shear_mm: float = 0.0,
    prefix: str = "IM",
) -> list[Path]:
    """One DICOM file per slice (third axis) of ``image``, with its voxels (16 bits with a
    rescale slope: within 1/120000 of the range) and geometry (LPS). ``drop_slices`` leaves
    slices out (a gap); ``shear_mm`` shifts each slice sideways by that much per slice (a
    gantry tilt). Returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    data = np.asarray(image.dataobj, dtype=np.float64)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    column_spacing, row_spacing = np.linalg.norm(lps[:3, :2], axis=0)
    row_dir, column_dir = lps[:3, 0] / column_spacing, lps[:3, 1] / row_spacing
    low, high = float(data.min()), float(data.max())
    slope = (high - low) / 60000 or 1.0
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    written = []
    for k in range(data.shape[2]):
        if k in drop_slices:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = "19700101"
        ds.AccessionNumber = "ACC-55501"
        ds.InstitutionName = "Hospital Xanadu"
        ds.StudyDate = ds.SeriesDate = "20240229"
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality = modality
        ds.ImageType = list(image_type)
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        position = lps[:3, 3] + k * lps[:3, 2] + k * shear_mm * row_dir
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *column_dir)]
        ds.PixelSpacing = [_ds(row_spacing), _ds(column_spacing)]
        ds.SliceThickness = _ds(float(np.linalg.norm(lps[:3, 2])))
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(low)
        stored = np.round((data[:, :, k].T - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
        ds.PixelData = np.clip(stored, 0, 65535).astype("<u2").tobytes()
        path = folder / f"{prefix}{k + 1:04d}"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
