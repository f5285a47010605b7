"""A folder of per-scan results kept between runs (e.g. preprocessed volumes with the
fingerprint of what made them), as a catalog entry."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str, get_protocol_and_path

from mriclip.datasets.array_dataset import MemmapArrayDataset

RECORD_FILE = "record.json"


class ScanStore:
    """``<path>/<scan_id>/<name>.npy`` arrays and ``<path>/<scan_id>/record.json``, on any
    fsspec filesystem. An entry is written whole: the old one is removed first and the record
    comes last, so a record always describes the arrays beside it, even after a crash.

    It pickles (workers in other processes or on a Dask cluster write into it); local paths
    are made absolute so every process means the same folder.
    """

    def __init__(
        self,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        protocol, root = get_protocol_and_path(path)
        self._protocol = protocol
        self._root = os.path.abspath(root) if protocol == "file" else root.rstrip("/")
        self._options = {"credentials": credentials, "fs_args": fs_args}
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))

    def _path(self, *parts: str) -> str:
        return str(PurePosixPath(self._root, *parts))

    def record(self, scan_id: str) -> dict | None:
        """The entry's record, or None when the scan has no complete entry."""
        try:
            with self._fs.open(self._path(scan_id, RECORD_FILE), mode="r") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None

    def write(self, scan_id: str, arrays: dict[str, np.ndarray], record: dict) -> None:
        entry = self._path(scan_id)
        if self._fs.exists(entry):
            self._fs.rm(entry, recursive=True)
        for name, array in arrays.items():
            self._array(scan_id, name).save(array)
        self._fs.makedirs(entry, exist_ok=True)
        with self._fs.open(self._path(scan_id, RECORD_FILE), mode="w") as handle:
            json.dump(record, handle)

    def loader(self, scan_id: str, name: str) -> Callable[[], np.ndarray]:
        """A loader of one stored array (memory-mapped on local disk), like a partition's."""
        return self._array(scan_id, name).load

    def exists(self) -> bool:
        return self._fs.exists(self._root)

    def retain(self, scan_ids: Iterable[str]) -> None:
        """Remove every entry but those of ``scan_ids``, so the store never outgrows the
        collection it caches."""
        keep = set(scan_ids)
        if not self.exists():
            return
        for entry in self._fs.ls(self._root, detail=False):
            if PurePosixPath(entry).name not in keep:
                self._fs.rm(entry, recursive=True)

    def _array(self, scan_id: str, name: str) -> MemmapArrayDataset:
        filepath = get_filepath_str(
            PurePosixPath(self._path(scan_id, f"{name}.npy")), self._protocol
        )
        return MemmapArrayDataset(filepath=filepath, **self._options)

    def __repr__(self) -> str:
        return f"ScanStore({get_filepath_str(PurePosixPath(self._root), self._protocol)!r})"


class ScanStoreDataset(AbstractDataset[None, ScanStore]):
    """Loads a :class:`ScanStore` on ``path``; nodes write into it as they work, which a
    dataset saved once after the node returns cannot do. Nothing else needs to read it:
    delete the folder to start afresh::

        preprocessing_cache:
          type: mriclip.datasets.ScanStoreDataset
          path: data/02_intermediate/preprocessing_cache
    """

    def __init__(
        self,
        *,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._store = ScanStore(path, credentials, fs_args)
        self._path = path
        self.metadata = metadata

    def load(self) -> ScanStore:
        return self._store

    def save(self, data: None) -> None:
        raise DatasetError("ScanStoreDataset is written through the ScanStore its load returns")

    def _exists(self) -> bool:
        return self._store.exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
