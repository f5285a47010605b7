"""Kedro dataset for figures that later nodes can read back (MatplotlibDataset cannot)."""

from __future__ import annotations

import io
from typing import Any

from kedro_datasets._typing import ImagePreview
from matplotlib.figure import Figure

from mriclip.datasets._fsspec_base import FsspecVersionedDataset
from mriclip.datasets.previews import png_preview


class FigurePNGDataset(FsspecVersionedDataset):
    """Saves a matplotlib ``Figure`` as PNG; ``load`` returns the PNG bytes, e.g. for
    embedding in a self-contained HTML report."""

    DEFAULT_SAVE_ARGS: dict[str, Any] = {"dpi": 110, "bbox_inches": "tight"}

    def __init__(self, *, save_args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}

    def _load_existing(self) -> bytes:
        with self._fs.open(self.load_path, mode="rb") as handle:
            return handle.read()

    def save(self, data: Figure) -> None:
        buffer = io.BytesIO()
        data.savefig(buffer, format="png", **self._save_args)
        self._write_bytes(self.save_path, buffer.getvalue())

    def preview(self) -> ImagePreview:
        """The saved PNG itself, for kedro-viz."""
        return png_preview(self._load_existing())
