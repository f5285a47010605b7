"""Folders of partitions (one file per scan) that kedro-viz can preview, and that may be
empty or absent, such as extra unlabelled scans."""

from __future__ import annotations

from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets import partitions
from kedro_datasets._typing import ImagePreview


class PartitionedDataset(partitions.PartitionedDataset):
    """``partitions.PartitionedDataset`` with a kedro-viz preview: its first partition's."""

    def preview(self, **preview_args: Any) -> ImagePreview:
        """The preview of the first partition (e.g. one scan's middle slices)."""
        # the parent's load (not OptionalPartitionedDataset's): no partitions is an error here;
        # each loader is the bound ``load`` of the partition's dataset object
        loaders = partitions.PartitionedDataset.load(self)
        first = loaders[min(loaders)].__self__
        if not hasattr(first, "preview"):
            raise DatasetError(f"{type(first).__name__} partitions of {self} have no preview")
        return first.preview(**preview_args)


class OptionalPartitionedDataset(PartitionedDataset):
    """Like ``partitions.PartitionedDataset``, but no folder or no files loads as ``{}``."""

    def load(self) -> dict:
        if not self._filesystem.exists(self._normalized_path) or not self._list_partitions():
            return {}
        return super().load()
