"""Kedro dataset for uncompressed NumPy arrays that load memory-mapped."""

from __future__ import annotations

import io

import numpy as np
from kedro.io.core import DatasetError
from kedro_datasets._typing import ImagePreview

from mriclip.datasets._fsspec_base import FsspecVersionedDataset
from mriclip.datasets.previews import volume_preview


class MemmapArrayDataset(FsspecVersionedDataset):
    """One ``.npy`` file. On a local filesystem ``load`` returns a read-only memory-mapped
    array, so a training loop touches only the voxels it crops and never decodes NIfTI."""

    def _load_existing(self) -> np.ndarray:
        load_path = self.load_path
        try:
            if self._protocol == "file":
                return np.load(load_path, mmap_mode="r", allow_pickle=False)
            with self._fs.open(load_path, mode="rb") as handle:
                return np.load(handle, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DatasetError(f"Cannot read array file '{load_path}': {error}") from error

    def save(self, data: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(data), allow_pickle=False)
        self._write_bytes(self.save_path, buffer.getvalue())

    def preview(self) -> ImagePreview:
        """Middle slices of the (preprocessed, RAS-ordered) volume, for kedro-viz."""
        return volume_preview(self.load())
