"""Lesion-ablated twins of preprocessed scans: the same scan with its lesions removed.

A metric that should come from lesions has to fall to chance on the same scans without them.
The phantom renders the exact counterfactual (every draw the same, lesion contrast 0); for user
data with label maps, :func:`inpaint_lesions` removes what the label map marks:

1. Each lesion's voxels are dilated by ``dilation_factor`` times its equivalent radius plus
   ``dilation_voxels``, so the oedema around a labelled lesion goes too.
2. Each masked voxel takes the value of its mirror image across the head's mid-sagittal plane
   (the first axis of a RAS+ volume, mirrored about the centre of the head mask): real healthy
   tissue of the same kind at the same depth, with its texture and noise.
3. Where the mirror voxel is itself masked or outside the head, the value comes from the
   nearest unmasked head voxel, plus Gaussian noise of the standard deviation measured in a
   shell around the mask, so the fill is neither empty nor suspiciously smooth.

Voxels outside the dilated mask are never changed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def lesion_mask(
    label: np.ndarray, dilation_factor: float = 1.5, dilation_voxels: int = 1
) -> np.ndarray:
    """Union of every lesion of ``label`` dilated by ``dilation_factor`` × its equivalent
    radius ((3V / 4π)^(1/3), in voxels) plus ``dilation_voxels``."""
    if dilation_factor < 0 or dilation_voxels < 0:
        raise ValueError(
            "ablation dilation_factor and dilation_voxels must be >= 0, got "
            f"{dilation_factor} and {dilation_voxels}"
        )
    mask = np.zeros(label.shape, dtype=bool)
    ids = [int(i) for i in np.unique(label) if i != 0]
    distance_to = {}
    for lesion_id in ids:
        lesion = label == lesion_id
        radius = (3 * lesion.sum() / (4 * np.pi)) ** (1 / 3)
        reach = dilation_factor * radius + dilation_voxels
        if lesion_id not in distance_to:
            distance_to[lesion_id] = ndimage.distance_transform_edt(~lesion)
        mask |= distance_to[lesion_id] <= reach
    return mask


def inpaint_lesions(
    volume: np.ndarray,
    label: np.ndarray,
    dilation_factor: float = 1.5,
    dilation_voxels: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """``volume`` (RAS+, background 0) with the dilated lesions of ``label`` filled with
    healthy-looking tissue (see the module docstring); a copy, ``volume`` is untouched."""
    if volume.shape != label.shape:
        raise ValueError(
            f"inpaint_lesions: label map shape {label.shape} differs from volume {volume.shape}"
        )
    result = np.array(volume, dtype=np.float32)
    mask = lesion_mask(label, dilation_factor, dilation_voxels) & (result != 0)
    if not mask.any():
        return result
    head = result != 0
    healthy = head & ~mask
    centre = np.argwhere(head)[:, 0]
    middle = (centre.min() + centre.max()) / 2
    voxels = np.argwhere(mask)
    mirrored = voxels.copy()
    mirrored[:, 0] = np.rint(2 * middle - voxels[:, 0]).astype(int)
    inside = (mirrored[:, 0] >= 0) & (mirrored[:, 0] < volume.shape[0])
    usable = np.zeros(len(voxels), dtype=bool)
    usable[inside] = healthy[tuple(mirrored[inside].T)]
    result[tuple(voxels[usable].T)] = result[tuple(mirrored[usable].T)]

    rest = voxels[~usable]
    if len(rest):
        nearest = ndimage.distance_transform_edt(
            ~healthy, return_distances=False, return_indices=True
        )
        source = tuple(index[tuple(rest.T)] for index in nearest)
        shell = ndimage.binary_dilation(mask, iterations=2) & healthy
        spread = float(result[shell].std()) if shell.any() else 0.0
        noise = np.random.default_rng(seed).normal(0.0, spread, len(rest))
        result[tuple(rest.T)] = result[source] + noise.astype(np.float32)
    return result
