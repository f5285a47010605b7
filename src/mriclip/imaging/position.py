"""Where a crop lies in the head, as input channels: each voxel's coordinates on the
preprocessed grid.

A lesion's region (frontal, cerebellar, ...) is a statement about *where* it is. A cube cut
from the volume has lost that: a 16³ view of white matter looks alike in every lobe, so a
model that sees only the cube can tell lesion from none but barely which region (these
channels raise the lesion-level region AUC: docs/benchmarks.md, section 'Levers', measured
with ``benchmarks/alignment_choices.py``). Preprocessed volumes share one RAS grid, so a grid
coordinate is the same place in every head; an encoder built with ``position_channels`` takes
them after its image channels (:class:`mriclip.models.encoders.ImageEncoder`).

Coordinates are voxel centres scaled to [-1, 1] over the grid, per axis; voxels of a crop
that leave the grid (zero-padded) get values beyond that range, as they should.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def grid_coordinates(
    start: Sequence[int], size: Sequence[int], grid_shape: Sequence[int]
) -> np.ndarray:
    """(3, *size) float32: the coordinates, in [-1, 1] over ``grid_shape``, of the voxels of
    the crop ``[start : start + size]``."""
    if not len(start) == len(size) == len(grid_shape) == 3:
        raise ValueError(
            f"grid coordinates need 3D start, size and grid; got {start}, {size}, {grid_shape}"
        )
    axes = [
        ((np.arange(extent) + begin + 0.5) / side * 2 - 1).astype(np.float32)
        for begin, extent, side in zip(start, size, grid_shape, strict=True)
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def with_position(
    image: torch.Tensor, start: Sequence[int], grid_shape: Sequence[int]
) -> torch.Tensor:
    """``image`` (C, D, H, W), cut at ``start`` from a volume of ``grid_shape``, with its three
    coordinate channels appended."""
    coordinates = grid_coordinates(start, tuple(image.shape[1:]), grid_shape)
    return torch.cat([image, torch.from_numpy(coordinates).to(image.dtype)])
