"""Lesions on a scan grid: where a lesion is centred, and how it is painted (enhancing
rim, necrotic core, oedema halo) into the images and the label map."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from mriclip.phantom.config import _LESION_LOOKS, PhantomConfig
from mriclip.phantom.regions import REGIONS

#: The single image (``sequences: null``) has every lesion's drawn look.
_SINGLE_IMAGE_LOOK = {
    "rim": "enhancement",
    "core": "necrosis_intensity",
    "edema": "edema_intensity",
}


def _choose_centre(lesion, region_map, label, placed, spacing, scan_id, rng):
    """A brain-tissue voxel of the lesion's region, clear of the lesions placed before."""
    in_region = (region_map == REGIONS.index(lesion.region) + 1) & (label == 0)
    candidates = np.argwhere(in_region)
    if len(candidates) == 0:
        raise RuntimeError(
            f"Scan {scan_id}: no free brain voxel in the {lesion.region} region for lesion "
            f"{lesion.lesion_id}; use a finer demo_data.voxel_spacing_mm or fewer lesions."
        )
    # Prefer centres whose lesion does not touch an earlier one; crowded scans fall back to
    # any free voxel (the earlier lesion keeps its voxels).
    clear = np.ones(len(candidates), bool)
    for centre, radius in placed:
        distance_mm = np.linalg.norm((candidates - centre) * spacing, axis=1)
        clear &= distance_mm > radius + lesion.radius_mm
    if clear.any():
        candidates = candidates[clear]
    return tuple(int(v) for v in candidates[rng.integers(len(candidates))])


def paint_lesion(
    intensity: np.ndarray | Mapping[str | None, np.ndarray],
    label: np.ndarray,
    centre: tuple[int, int, int],
    radius_mm: float,
    lesion_id: int,
    spacing_mm: np.ndarray,
    brain: np.ndarray,
    config: PhantomConfig,
    rng: np.random.Generator,
) -> None:
    """Paint a ring-enhancing lesion with necrotic core and oedema halo, in place.

    ``intensity`` (white matter = 1) and ``label`` are the scan's arrays, ``centre`` a voxel,
    ``intensity`` either one image (the single-image phantom) or the images by sequence
    (``None``: the single image), all
    painted with the same lesion (shape, core, oedema), each in its sequence's look
    (``config.sequence_contrasts``: the rim, core and oedema values below are those of T1ce),
    ``spacing_mm`` the voxel size along each array axis and ``brain`` the brain mask. The
    rim is set to ``config.enhancement``, the core (``config.necrotic_core_fraction`` of the
    radius) to ``config.necrosis_intensity``, blended by ``config.lesion_contrast``; oedema
    multiplies intensity by ``config.edema_intensity`` at the rim, fading out over
    ``config.edema_extent`` radii. The label (``lesion_id``) covers rim and core, what
    radiologists outline as the lesion, never voxels of an earlier lesion; oedema changes
    intensity only. Nothing changes outside the brain, except that the centre voxel is
    always labelled.
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    enhancement = rng.uniform(*config.enhancement)
    necrosis = rng.uniform(*config.necrosis_intensity)
    core_radius_mm = radius_mm * rng.uniform(*config.necrotic_core_fraction)
    edema_factor = rng.uniform(*config.edema_intensity)
    edema_width_mm = radius_mm * rng.uniform(*config.edema_extent)

    # Work in a box around the centre that holds the lesion and its oedema.
    reach_mm = (radius_mm + edema_width_mm) * (1 + config.lesion_irregularity)
    half = np.ceil(reach_mm / spacing).astype(int)
    box = tuple(
        slice(max(c - h, 0), min(c + h + 1, n))
        for c, h, n in zip(centre, half, label.shape, strict=True)
    )
    axis_offsets_mm = [
        (np.arange(part.start, part.stop) - c) * d
        for part, c, d in zip(box, centre, spacing, strict=True)
    ]
    offsets = np.meshgrid(*axis_offsets_mm, indexing="ij")
    distance_mm = np.sqrt(sum(offset**2 for offset in offsets))
    centre_in_box = tuple(c - part.start for c, part in zip(centre, box, strict=True))
    if config.lesion_irregularity > 0:
        # Smooth bumps: scaling the distance by a smooth field makes the sphere lumpy.
        bumps = ndimage.gaussian_filter(
            rng.standard_normal(distance_mm.shape), sigma=np.maximum(0.4 * radius_mm / spacing, 1)
        )
        bumps /= bumps.std() or 1.0
        distance_mm /= np.clip(1 + config.lesion_irregularity * bumps, 0.5, None)
        distance_mm[centre_in_box] = 0.0

    patch_label = label[box]  # a view: writing to it writes into the scan
    # Brain voxels not taken by an earlier lesion.
    free = brain[box] & (patch_label == 0)
    contrast = config.lesion_contrast
    # Oedema: strongest at the rim, fading linearly to nothing at the halo's outer edge.
    fade = np.clip((radius_mm + edema_width_mm - distance_mm) / max(edema_width_mm, 1e-6), 0, 1)
    inside_lesion = (distance_mm <= radius_mm) & free
    inside_lesion[centre_in_box] = True
    is_core = distance_mm <= core_radius_mm
    drawn = {
        "enhancement": enhancement,
        "necrosis_intensity": necrosis,
        "edema_intensity": edema_factor,
    }
    images = {None: intensity} if isinstance(intensity, np.ndarray) else intensity
    for name, image in images.items():
        look = _SINGLE_IMAGE_LOOK if name is None else config.sequence_contrasts[name]
        rim, core, edema = (
            drawn[look[key]] if isinstance(look[key], str) else look[key] for key in _LESION_LOOKS
        )
        patch = image[box]  # a view, as above
        patch *= np.where(free, 1 - contrast * (1 - edema) * fade, 1.0)
        target = np.where(is_core, core, rim)
        patch[inside_lesion] += contrast * (target[inside_lesion] - patch[inside_lesion])
    patch_label[inside_lesion] = lesion_id
