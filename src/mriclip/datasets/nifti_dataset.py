"""Kedro dataset for NIfTI volumes (kedro-datasets has none)."""

from __future__ import annotations

import gzip
from typing import Any

import nibabel as nib
import numpy as np
from kedro.io.core import DatasetError
from kedro_datasets._typing import ImagePreview

from mriclip.datasets._fsspec_base import FsspecVersionedDataset
from mriclip.datasets.previews import volume_preview
from mriclip.imaging.nifti_io import NiftiSpacingError, image_from_bytes


class NiftiDataset(FsspecVersionedDataset):
    """Loads and saves one NIfTI-1/2 file (``.nii`` or ``.nii.gz``) on any fsspec filesystem.

    ``load`` returns a ``nibabel`` image with its affine and header; the voxel array is read
    eagerly so the file handle is closed. ``.gz`` paths are written gzip-compressed.

    Example catalog entry, one file per scan::

        raw_images:
          type: partitions.PartitionedDataset
          path: data/01_raw/images
          dataset: mriclip.datasets.NiftiDataset
    """

    DEFAULT_SAVE_ARGS: dict[str, Any] = {"compresslevel": 6}

    def __init__(self, *, save_args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}

    def _load_existing(self) -> nib.Nifti1Image:
        load_path = self.load_path
        with self._fs.open(load_path, mode="rb") as handle:
            raw = handle.read()
        try:
            return image_from_bytes(raw, compressed=load_path.endswith(".gz"))
        except NiftiSpacingError as error:
            raise DatasetError(
                f"NIfTI file '{load_path}': {error}. Set the true voxel sizes in the header "
                "(e.g. nibabel header.set_zooms) or re-export the file from the converter."
            ) from error
        except Exception as error:
            raise DatasetError(
                f"Cannot read NIfTI file '{load_path}': {error}. The file is corrupt, truncated "
                "or not NIfTI; re-export it from the scanner/converter or remove it."
            ) from error

    def save(self, data: nib.Nifti1Image) -> None:
        save_path = self.save_path
        raw = data.to_bytes()
        if save_path.endswith(".gz"):
            raw = gzip.compress(raw, compresslevel=self._save_args["compresslevel"])
        self._write_bytes(save_path, raw)

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "save_args": self._save_args}

    def preview(self) -> ImagePreview:
        """Middle sagittal, coronal and axial slices as a base64 PNG, for kedro-viz."""
        volume = np.asanyarray(nib.as_closest_canonical(self.load()).dataobj)
        # a 4D file shows its first volume
        return volume_preview(volume[(slice(None),) * 3 + (0,) * (volume.ndim - 3)])
