"""A JSON document that may never have been saved, such as a skipped pipeline's summary."""

from __future__ import annotations

from typing import Any

from kedro_datasets.json import JSONDataset


class OptionalJSONDataset(JSONDataset):
    """Like ``json.JSONDataset`` (versioning included), but a missing file loads as ``None``."""

    def load(self) -> Any:
        if not self._exists():
            return None
        return super().load()
