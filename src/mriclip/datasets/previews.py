"""kedro-viz previews of volumes and figures: base64 PNGs (kedro-viz's ``ImagePreview``)."""

from __future__ import annotations

import base64
import io

import numpy as np
from kedro_datasets._typing import ImagePreview


def png_preview(png: bytes) -> ImagePreview:
    return ImagePreview(base64.b64encode(png).decode("ascii"))


def volume_preview(volume: np.ndarray) -> ImagePreview:
    """The middle sagittal, coronal and axial slices of a RAS-ordered volume side by side
    (of its first channel when it has leading channel axes)."""
    from matplotlib.figure import Figure  # no pyplot: kedro-viz previews from server threads

    volume = np.asarray(volume[(0,) * (volume.ndim - 3)], dtype=np.float32)
    centre = [size // 2 for size in volume.shape]
    slices = [volume[centre[0]], volume[:, centre[1]], volume[:, :, centre[2]]]
    figure = Figure(figsize=(9, 3))
    for axis, image in zip(figure.subplots(1, 3), slices, strict=True):
        axis.imshow(np.rot90(image), cmap="gray")
        axis.axis("off")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return png_preview(buffer.getvalue())
