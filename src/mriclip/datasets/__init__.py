"""Kedro datasets that kedro-datasets lacks: NIfTI volumes, DICOM series folders, BIDS
folders, memory-mapped arrays, checkpoints, model exports, optional tables, folders of
scans with kedro-viz previews, per-scan stores."""

from mriclip.datasets.array_dataset import MemmapArrayDataset
from mriclip.datasets.bids_dataset import BIDSDataset
from mriclip.datasets.checkpoint_dataset import TorchCheckpointDataset
from mriclip.datasets.figure_dataset import FigurePNGDataset
from mriclip.datasets.model_export_dataset import ModelExportDataset
from mriclip.datasets.nifti_dataset import NiftiDataset
from mriclip.datasets.optional_csv_dataset import OptionalCSVDataset
from mriclip.datasets.optional_json_dataset import OptionalJSONDataset
from mriclip.datasets.optional_partitioned_dataset import (
    OptionalPartitionedDataset,
    PartitionedDataset,
)
from mriclip.datasets.optuna_storage_dataset import OptunaStorageDataset
from mriclip.datasets.scan_images_dataset import ScanImagesDataset
from mriclip.datasets.scan_store import ScanStore, ScanStoreDataset

__all__ = [
    "BIDSDataset",
    "FigurePNGDataset",
    "MemmapArrayDataset",
    "ModelExportDataset",
    "NiftiDataset",
    "OptionalCSVDataset",
    "OptionalJSONDataset",
    "OptionalPartitionedDataset",
    "OptunaStorageDataset",
    "PartitionedDataset",
    "ScanImagesDataset",
    "ScanStore",
    "ScanStoreDataset",
    "TorchCheckpointDataset",
]
