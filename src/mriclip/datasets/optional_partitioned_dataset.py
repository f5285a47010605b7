"""A folder of partitions that may be empty or absent, such as extra unlabelled scans."""

from __future__ import annotations

from kedro_datasets.partitions import PartitionedDataset


class OptionalPartitionedDataset(PartitionedDataset):
    """Like ``partitions.PartitionedDataset``, but no folder or no files loads as ``{}``."""

    def load(self) -> dict:
        if not self._filesystem.exists(self._normalized_path) or not self._list_partitions():
            return {}
        return super().load()
