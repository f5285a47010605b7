"""Kedro dataset for an export folder (kedro-datasets has none for a folder of files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from mriclip.packaging.export import CONFIG, write_files


class ModelExportDataset(AbstractDataset):
    """A folder on local disk written whole: ``save`` takes ``{relative path: bytes}`` and
    replaces the folder's files with them; ``load`` gives the folder's path (for
    ``mriclip.Predictor.from_export``).

    Args:
        path: the folder, e.g. ``data/06_models/export``.
        metadata: any, for kedro-viz and plugins.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> str:
        if not (self._path / CONFIG).is_file():
            raise DatasetError(
                f"{self._path} holds no export: run `kedro run --pipeline export` first"
            )
        return str(self._path)

    def save(self, data: Mapping[str, bytes]) -> None:
        write_files(data, self._path)

    def _exists(self) -> bool:
        return (self._path / CONFIG).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
