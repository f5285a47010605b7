"""Kedro dataset for model bundles: ``{"config": ..., "state_dict": ...}`` dictionaries."""

from __future__ import annotations

import io

import torch
from kedro.io.core import DatasetError

from mriclip.datasets._fsspec_base import FsspecVersionedDataset


class TorchCheckpointDataset(FsspecVersionedDataset):
    """Saves a dict of tensors, numbers, strings, lists and dicts with ``torch.save`` and loads
    it back with ``weights_only=True``, so a checkpoint can never run arbitrary pickled code.
    Modules are not stored: nodes pass bundles that hold the config to rebuild a model."""

    def _load_existing(self) -> dict:
        load_path = self.load_path
        with self._fs.open(load_path, mode="rb") as handle:
            try:
                return torch.load(handle, map_location="cpu", weights_only=True)
            except Exception as error:
                raise DatasetError(
                    f"Cannot load checkpoint '{load_path}' safely (weights_only=True): {error}"
                ) from error

    def save(self, data: dict) -> None:
        if not isinstance(data, dict):
            raise DatasetError(
                f"TorchCheckpointDataset stores dicts, got {type(data).__name__}; pass "
                "{'config': ..., 'state_dict': module.state_dict()} instead of a module"
            )
        buffer = io.BytesIO()
        torch.save(data, buffer)
        self._write_bytes(self.save_path, buffer.getvalue())
