"""DICOM series as scans: found in a folder, checked, and read into a NIfTI image in memory.

Headers are read with pydicom (``stop_before_pixels`` and only the geometry tags below, so
names, ids, dates and institutions are never even parsed); voxels with SimpleITK, whose GDCM
decodes the compressed transfer syntaxes pydicom needs extra plugins for, one file at a time
so each slice gets its own rescale slope and intercept. The geometry comes from the headers:
slices are ordered along the normal of their common orientation, the slice step is the
distance between neighbours, and the affine maps the array (column, row, slice) to RAS+
millimetres (DICOM's patient coordinates are LPS). The returned image has a fresh header: no
DICOM value except geometry reaches it. The slice axis runs in the direction the image
numbers grow, so a series written from a NIfTI file reads back on that file's grid.

A series is refused, with the reason, when it is not MR, a localizer, multi-frame, a single
slice, when its slices do not form one volume (sizes, spacings or orientations differ, two
images at one position, a slice missing, uneven spacing) or when its stack is sheared (gantry
tilt). Series are grouped by SeriesInstanceUID; two series that share a series number in one
folder cannot be told apart by name and are refused as mixed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

logger = logging.getLogger(__name__)

#: The only tags read: geometry, grouping and what refuses a series. No identifier among them.
HEADER_TAGS = (
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "ImageType",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
)
LOCALIZER_TYPES = ("LOCALIZER", "SCOUT")
#: Relative tolerance of "the same" orientation, spacing and slice step.
TOLERANCE = 1e-3
#: A step this many times the usual one means slices are missing.
GAP_FACTOR = 1.5
DICOM_FIX = (
    "give mriclip one complete 3D MR series per folder (e.g. export it again from the PACS), "
    "or convert it yourself (dcm2niix) and use the NIfTI file"
)


class DicomSeriesError(ValueError):
    """A DICOM series (or file) that cannot be read as one 3D volume; the message says why."""


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


@dataclass(frozen=True)
class SliceHeader:
    """The geometry of one DICOM file, and what decides whether its series is a volume."""

    path: Path
    series_uid: str  # only to group files; never written anywhere
    series_number: int | None
    instance: int | None  # InstanceNumber: the slice axis follows it
    modality: str
    image_type: tuple[str, ...]
    orientation: np.ndarray | None  # (6,) row and column direction cosines, LPS
    position: np.ndarray | None  # (3,) the first pixel's centre, LPS mm
    pixel_spacing: np.ndarray | None  # (2,) between rows, between columns
    shape: tuple[int, int] | None  # rows, columns; None: the file holds no image
    frames: int
    samples: int


def _floats(value, n: int) -> np.ndarray | None:
    try:
        array = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return array if array.shape == (n,) and np.all(np.isfinite(array)) else None


def read_header(path: Path) -> SliceHeader:
    """The geometry tags of one DICOM file (no pixel data, no other tag is parsed).

    Raises:
        DicomSeriesError: the file says it holds an image but ends before its pixel data.
    """
    import pydicom

    with open(path, "rb") as file:
        ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        # pydicom skips the values of tags it was not asked for, so a file cut inside its
        # header can parse without an error, its later tags (PixelSpacing) simply absent.
        ends_early = file.tell() >= os.fstat(file.fileno()).st_size
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if ends_early and rows is not None and columns is not None:
        raise DicomSeriesError("the file ends before its pixel data (truncated)")
    number, instance = ds.get("SeriesNumber"), ds.get("InstanceNumber")
    return SliceHeader(
        path=Path(path),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        series_number=None if number in (None, "") else int(number),
        instance=None if instance in (None, "") else int(instance),
        modality=str(ds.get("Modality", "")).upper(),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        position=_floats(ds.get("ImagePositionPatient"), 3),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        shape=None if rows is None or columns is None else (int(rows), int(columns)),
        frames=int(ds.get("NumberOfFrames") or 1),
        samples=int(ds.get("SamplesPerPixel") or 1),
    )


def _first_problem(headers: Sequence[SliceHeader]) -> str | None:
    """Why the files of one series cannot be a volume, before their geometry is compared."""
    first = headers[0]
    if first.modality != "MR":
        return f"modality {first.modality or 'unknown'} is not MR"
    if any(kind in part for kind in LOCALIZER_TYPES for part in first.image_type):
        return "a localizer (ImageType " + "\\".join(first.image_type) + ")"
    if any(h.frames > 1 for h in headers):
        return "multi-frame (enhanced) DICOM, which mriclip does not read"
    if any(h.samples != 1 for h in headers):
        return "colour images (SamplesPerPixel > 1), not an MR volume"
    if any(h.orientation is None or h.position is None or h.pixel_spacing is None
           for h in headers):  # fmt: skip
        return "lacks ImageOrientationPatient, ImagePositionPatient or PixelSpacing"
    if len(headers) < 2:
        return "a single slice, not a volume"
    if len({h.shape for h in headers}) > 1:
        return "mixed series: its slices differ in size (rows x columns)"
    if not all(np.allclose(h.pixel_spacing, first.pixel_spacing, rtol=TOLERANCE) for h in headers):
        return "mixed series: its slices differ in pixel spacing"
    if not all(np.allclose(h.orientation, first.orientation, atol=TOLERANCE) for h in headers):
        count = len({tuple(np.round(h.orientation, 3)) for h in headers})
        return f"mixed series: its slices have {count} orientations (a multi-planar localizer?)"
    return None


def order_slices(headers: Sequence[SliceHeader]) -> tuple[list[SliceHeader], np.ndarray]:
    """The slices of one series ordered along their normal (in the direction their
    InstanceNumbers grow, where they have them), and the slice step (LPS mm).

    Raises:
        DicomSeriesError: the files do not form one evenly spaced, unsheared volume.
    """
    problem = _first_problem(headers)
    if problem:
        raise DicomSeriesError(problem)
    row, column = headers[0].orientation[:3], headers[0].orientation[3:]
    normal = np.cross(row, column)
    ordered = sorted(headers, key=lambda h: float(h.position @ normal))
    depths = np.array([float(h.position @ normal) for h in ordered])
    steps = np.diff(depths)
    in_plane = max(float(np.min(headers[0].pixel_spacing)), 1e-6)
    if np.any(steps < TOLERANCE * in_plane):
        positions = len(set(np.round(depths, 3)))
        raise DicomSeriesError(
            f"several images at one slice position ({positions} positions for {len(ordered)} "
            "images: multi-echo or repeated?)"
        )
    usual = float(np.median(steps))
    gaps = steps > GAP_FACTOR * usual
    if np.any(gaps):
        missing = int(np.sum(np.round(steps[gaps] / usual) - 1))
        raise DicomSeriesError(
            f"{missing} slice(s) missing (a step of {steps.max():.3g} mm where the series has "
            f"{usual:.3g} mm)"
        )
    if steps.max() - steps.min() > max(TOLERANCE * usual, 1e-3):
        raise DicomSeriesError(
            f"inconsistent slice spacing ({steps.min():.4g} to {steps.max():.4g} mm)"
        )
    offsets = np.diff(np.stack([h.position for h in ordered]), axis=0)
    shear = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    if np.any(shear > TOLERANCE * usual + 1e-3):
        angle = np.degrees(np.arctan2(float(shear.max()), usual))
        raise DicomSeriesError(
            f"the stack is sheared by {angle:.2g} degrees (gantry tilt), which mriclip does "
            "not correct"
        )
    instances = [h.instance for h in ordered]
    if None not in instances and instances[0] > instances[-1]:
        ordered = ordered[::-1]  # the slice axis runs as the scanner numbered the images
    step = (ordered[-1].position - ordered[0].position) / (len(ordered) - 1)
    return ordered, step


def series_affine(first: SliceHeader, step: np.ndarray) -> np.ndarray:
    """RAS+ affine of the array (column, row, slice) of a series whose first slice is
    ``first`` and whose slices are ``step`` (LPS mm) apart."""
    row_dir, column_dir = first.orientation[:3], first.orientation[3:]
    between_rows, between_columns = first.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * between_columns  # along a row: the column index grows
    lps[:3, 1] = column_dir * between_rows
    lps[:3, 2] = step
    lps[:3, 3] = first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def read_voxels(path: Path) -> np.ndarray:
    """One slice's stored values after its rescale slope and intercept, (columns, rows)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)  # (1, rows, columns) or (rows, columns)
    return np.asarray(array, dtype=np.float32).reshape(array.shape[-2:]).T


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder: its files, and why it is refused (None: usable).

    Args:
        headers: the geometry of each of its files (:func:`read_header`).
        problem: why it cannot be read as one volume, or None; then ``headers`` are ordered.
        step: the slice step (LPS mm) of a usable series.
    """

    headers: tuple[SliceHeader, ...]
    problem: str | None = None
    step: np.ndarray | None = None

    @classmethod
    def checked(cls, headers: Sequence[SliceHeader], problem: str | None = None) -> DicomSeries:
        """The series of ``headers``, ordered when usable, else with its problem."""
        if problem is not None:
            return cls(tuple(headers), problem)
        try:
            ordered, step = order_slices(headers)
        except DicomSeriesError as error:
            return cls(tuple(headers), str(error))
        return cls(tuple(ordered), None, step)

    def load(self) -> nib.Nifti1Image:
        """The series as a 3D float32 NIfTI image (RAS+ affine, nothing else in its header).

        Raises:
            DicomSeriesError: the series is refused, or a slice's pixels do not fit its header.
        """
        if self.problem is not None:
            raise DicomSeriesError(self.problem)
        rows, columns = self.headers[0].shape
        slices = []
        for header in self.headers:
            try:
                voxels = read_voxels(header.path)
            except RuntimeError as error:  # SimpleITK's errors: their last line says what
                reason = str(error).strip().splitlines()[-1]
                raise DicomSeriesError(
                    f"a slice's pixel data cannot be decoded: {reason}"
                ) from None
            if voxels.shape != (columns, rows):
                raise DicomSeriesError(
                    f"a slice holds {voxels.shape[1]}x{voxels.shape[0]} pixels where its header "
                    f"says {rows}x{columns}"
                )
            slices.append(voxels)
        affine = series_affine(self.headers[0], self.step)
        return nib.Nifti1Image(np.stack(slices, axis=-1), affine)

    def file_sha256(self) -> str:
        """SHA-256 of the series' files, in slice order (the preprocessing cache's key)."""
        digest = hashlib.sha256()
        for header in self.headers:
            digest.update(header.path.read_bytes())
        return digest.hexdigest()
