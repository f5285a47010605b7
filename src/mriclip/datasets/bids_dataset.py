"""A BIDS dataset folder as a catalog entry (kedro-datasets has none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from mriclip.datasets.nifti_dataset import NiftiDataset
from mriclip.imaging.bids import BidsRoot


def nifti_loader(file: str):
    """A loader of one NIfTI file (module level, so a BidsRoot pickles for parallel runners)."""
    return NiftiDataset(filepath=str(file)).load


class BIDSDataset(AbstractDataset[None, BidsRoot]):
    """Loads a BIDS root folder lazily (read-only): nothing is indexed or read until
    ``mriclip.imaging.bids.read_bids`` asks, so a project on the file layout pays nothing for
    an absent folder. Images then load through ``NiftiDataset``, with its checks. pybids
    needs the folder on local disk::

        bids_dataset:
          type: mriclip.datasets.BIDSDataset
          path: data/01_raw/bids
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> BidsRoot:
        return BidsRoot(self._path, loader=nifti_loader)

    def save(self, data: None) -> None:
        raise DatasetError("BIDSDataset is read-only: mriclip never writes into a BIDS dataset")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
