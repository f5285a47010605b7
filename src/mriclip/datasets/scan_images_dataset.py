"""A folder of scans as NIfTI files and DICOM series folders (kedro-datasets has neither)."""

from __future__ import annotations

from pathlib import Path

from mriclip.datasets.optional_partitioned_dataset import OptionalPartitionedDataset
from mriclip.imaging.scan_inputs import dicom_scans, holds_dicom


class ScanImagesDataset(OptionalPartitionedDataset):
    """Like :class:`OptionalPartitionedDataset` of ``NiftiDataset`` partitions (file name ->
    loader; saving writes NIfTI files), plus, on local disk, one loader per DICOM series in
    the folder's subfolders (``mriclip.imaging.scan_inputs``: a subfolder holding DICOM
    files is one scan per series, keyed ``<folder>/`` or ``<folder>/series<N>/``). The
    files of such a subfolder are not partitions of their own.

    Example catalog entry::

        raw_images:
          type: mriclip.datasets.ScanImagesDataset
          path: data/01_raw/images
          dataset: mriclip.datasets.NiftiDataset
    """

    def load(self) -> dict:
        loaders = super().load()
        root = Path(self._path)
        if self._protocol != "file" or not root.is_dir():
            return loaders
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir() or not holds_dicom(folder):
                continue
            prefix = f"{folder.name}/"
            loaders = {key: load for key, load in loaders.items() if not key.startswith(prefix)}
            loaders.update(dicom_scans(folder))
        return loaders
