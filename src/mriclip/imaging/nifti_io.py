"""NIfTI files read from their bytes, with the checks nibabel leaves out: the voxel array read
in full (a truncated file fails here, not later) and a header whose voxel sizes are zero or NaN
refused. The catalog's NIfTI dataset and the Predictor's file inputs both read through it."""

from __future__ import annotations

import gzip
import io
from copy import deepcopy
from pathlib import Path

import nibabel as nib
import numpy as np


class NiftiSpacingError(ValueError):
    """The header gives no usable voxel size."""


def _require_spacing(raw: bytes, image_class: type) -> None:
    """Raise when the stored voxel sizes (pixdim) hold a zero or NaN and no sform overrides
    them: nibabel silently reads such a zero as 1 mm, so the scan would get a wrong size."""
    header = image_class.header_class.from_fileobj(io.BytesIO(raw), check=False)
    zooms = np.asarray(header["pixdim"][1:4], dtype=float)
    if not np.all(zooms > 0) and not int(header["sform_code"]):
        raise NiftiSpacingError(
            f"header voxel spacing (pixdim) {'x'.join(f'{z:.3g}' for z in zooms)} mm has a zero "
            "or NaN size and no sform gives the geometry (nibabel would read a zero as 1 mm)"
        )


def image_from_bytes(raw: bytes, compressed: bool) -> nib.Nifti1Image:
    """Parse NIfTI-1 or NIfTI-2 bytes and read the voxel array into memory."""
    if compressed:
        raw = gzip.decompress(raw)
    errors = []
    for image_class in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            image = image_class.from_bytes(raw)
        except Exception as error:  # noqa: BLE001 - try the next NIfTI flavour
            errors.append(f"{image_class.__name__}: {error}")
            continue
        _require_spacing(raw, image_class)
        data = np.asanyarray(image.dataobj)  # forces a full read: truncation fails here
        return image_class(data, image.affine, header=deepcopy(image.header))
    raise ValueError("; ".join(errors))


def read_nifti(path: str | Path) -> nib.Nifti1Image:
    """The NIfTI file at ``path`` (``.nii`` or ``.nii.gz``), read in full."""
    path = Path(path)
    return image_from_bytes(path.read_bytes(), compressed=path.name.endswith(".gz"))
