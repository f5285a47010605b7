"""A patient's anatomy: head scaling and a smooth elastic field, drawn once per patient,
and the template after global atrophy."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from mriclip.phantom.atlas import TemplateAnatomy
from mriclip.phantom.config import _COHORT_WARP_STREAM, PhantomConfig

# The patient's elastic field lives on a coarse grid; a Gaussian of this many grid steps
# (sigma) resolves it well.
_FIELD_SIGMA_STEPS = 4.0


@dataclass(frozen=True)
class PatientAnatomy:
    """A patient's head: per-axis scaling about the brain centre and an elastic field.

    ``displacement`` (3, X, Y, Z) holds mm displacements on a coarse grid whose voxel (0,0,0)
    sits at ``field_origin_mm`` with spacing ``field_spacing_mm``, in patient-head mm.
    ``atrophy_mm`` is the depth of tissue lost to CSF (0: no atrophy, see
    :func:`atrophied_intensities`).
    """

    scale: np.ndarray
    displacement: np.ndarray
    field_origin_mm: np.ndarray
    field_spacing_mm: float
    atrophy_mm: float = 0.0


def sample_patient_anatomy(
    config: PhantomConfig,
    anatomy: TemplateAnatomy,
    rng: np.random.Generator,
    atrophic: bool = False,
) -> PatientAnatomy:
    """Draw a patient's head scaling, smooth elastic displacement field and, for an
    ``atrophic`` patient, the strength of atrophy."""
    scale = rng.uniform(*config.scale_range, size=3) * np.asarray(config.anatomy_scale)
    spacing = max(config.deformation_smoothness_mm / _FIELD_SIGMA_STEPS, 1.0)
    # The field covers the brain of the largest allowed head plus room for the deformation.
    largest = config.scale_range[1] * max(config.anatomy_scale)
    reach = largest * (anatomy.brain_box_mm - anatomy.brain_centre_mm)
    margin = 3 * (config.deformation_mm + config.anatomy_warp_mm) + spacing
    origin = anatomy.brain_centre_mm + reach[0] - margin
    shape = tuple(np.ceil((reach[1] - reach[0] + 2 * margin) / spacing).astype(int) + 1)
    displacement = _smooth_field(rng.standard_normal((3, *shape)), config.deformation_mm)
    if config.anatomy_warp_mm > 0:
        cohort = np.random.default_rng([config.anatomy_warp_seed, _COHORT_WARP_STREAM])
        displacement += _smooth_field(cohort.standard_normal((3, *shape)), config.anatomy_warp_mm)
    atrophy_mm = float(rng.uniform(*config.atrophy_mm)) if atrophic else 0.0
    return PatientAnatomy(scale, displacement.astype(np.float32), origin, spacing, atrophy_mm)


def _smooth_field(noise: np.ndarray, rms_mm: float) -> np.ndarray:
    """(3, ...) white noise smoothed into a displacement field of RMS length ``rms_mm``: each
    component gets std ``rms_mm / sqrt(3)``. Zero when ``rms_mm`` is 0."""
    displacement = np.zeros_like(noise)
    if rms_mm > 0:
        for axis in range(3):
            smooth = ndimage.gaussian_filter(noise[axis], sigma=_FIELD_SIGMA_STEPS)
            displacement[axis] = smooth / smooth.std() * rms_mm / np.sqrt(3)
    return displacement


def atrophied_intensities(
    anatomy: TemplateAnatomy, atrophy_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """The template's ``t1`` and ``grey_signal`` after global atrophy: tissue within
    ``atrophy_mm`` of CSF or of the brain surface becomes CSF, which widens sulci and
    ventricles. The change is blended over one voxel so edges stay partial-volumed."""
    if atrophy_mm <= 0:
        return anatomy.t1, anatomy.grey_signal
    lost = _tissue_lost(anatomy, atrophy_mm)
    t1 = anatomy.t1 * (1 - lost) + anatomy.csf_level * lost
    return t1.astype(np.float32), (anatomy.grey_signal * (1 - lost)).astype(np.float32)


def atrophied_tissue(anatomy: TemplateAnatomy, atrophy_mm: float) -> tuple[np.ndarray, ...]:
    """The template's grey- and white-matter maps after the atrophy of
    :func:`atrophied_intensities` (lost tissue becomes CSF, the rest of the brain mask)."""
    if atrophy_mm <= 0:
        return anatomy.grey_matter, anatomy.white_matter
    kept = 1 - _tissue_lost(anatomy, atrophy_mm)
    return tuple(
        (tissue * kept).astype(np.float32) for tissue in (anatomy.grey_matter, anatomy.white_matter)
    )


def _tissue_lost(anatomy: TemplateAnatomy, atrophy_mm: float) -> np.ndarray:
    """The fraction of each voxel's tissue that atrophy turns into CSF, blended over a voxel."""
    voxel_mm = float(np.mean(nib.affines.voxel_sizes(anatomy.affine)))
    depth = anatomy.tissue_depth_mm
    return np.where(depth > 0, np.clip((atrophy_mm - depth) / voxel_mm + 0.5, 0, 1), 0)
