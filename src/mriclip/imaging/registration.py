"""Linear registration of a scan to a template head (SimpleITK), so that a voxel of the
preprocessed grid is the same place in the head for every scan.

Position channels give the encoder each voxel's coordinates on the preprocessed grid; without
registration those coordinates move with every scan's head pose and head shape, and a cube's
region is read from them only up to that. The transform is estimated once per scan on a
coarse copy (Mattes mutual information, so the template's contrast need not match the scan's)
and every volume of the scan (image, label map, twins) is resampled with it onto one grid in
template space.

Conventions: nibabel affines (voxel -> RAS+ mm). SimpleITK works in LPS mm; the conversion
happens here and nowhere else. A transform is a 4x4 matrix mapping template RAS mm to scanner
RAS mm, the direction resampling needs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mriclip.imaging.templates import downsample, package_data_file

#: The packaged template: nilearn's ICBM152 2009 (symmetric) T1, read from the installed package.
PACKAGED_TEMPLATE = "icbm152"
_PACKAGED_TEMPLATE_PARTS = ("datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
METHODS = ("none", "rigid", "affine")
_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
_MIN_LEVEL_VOXELS = 4  # SimpleITK's least image size per axis, at the coarser of two levels


def template_path(template: str) -> Path:
    """The template file: :data:`PACKAGED_TEMPLATE` or a NIfTI path."""
    if template == PACKAGED_TEMPLATE:
        return package_data_file("nilearn", *_PACKAGED_TEMPLATE_PARTS)
    path = Path(template)
    if not path.is_file():
        raise FileNotFoundError(
            f"preprocessing.registration_template {template!r} is neither "
            f"{PACKAGED_TEMPLATE!r} nor an existing NIfTI file"
        )
    return path


@functools.lru_cache(maxsize=4)
def _template(template: str, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The template on an axis-aligned RAS grid at ``spacing_mm``, cropped to its head;
    read-only, cached."""
    image = nib.as_closest_canonical(nib.load(template_path(template)))
    volume = np.asarray(image.dataobj, dtype=np.float32)
    coarse, affine = downsample(volume, image.affine, spacing_mm)
    head = np.argwhere(coarse > 0.05 * np.percentile(coarse[coarse > 0], 99))
    low, high = head.min(axis=0), head.max(axis=0) + 1
    coarse = np.ascontiguousarray(
        coarse[tuple(slice(a, b) for a, b in zip(low, high, strict=True))]
    )
    affine = affine @ nib.affines.from_matvec(np.eye(3), low)
    coarse.setflags(write=False)
    affine.setflags(write=False)
    return coarse, affine


def template_grid(
    template: str, spacing: Sequence[float]
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The grid (shape, affine) at ``spacing`` that covers the template's head, in template mm."""
    volume, affine = _template(template, float(min(spacing)))
    low = nib.affines.apply_affine(affine, np.zeros(3))
    high = nib.affines.apply_affine(affine, np.array(volume.shape) - 1.0)
    spacing = np.asarray(spacing, dtype=float)
    shape = tuple(int(n) for n in np.floor((high - low) / spacing) + 1)
    return shape, nib.affines.from_matvec(np.diag(spacing), low)


def _to_sitk(volume: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0), np.float32))
    lps = _RAS_LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    return image


def estimate_transform(
    volume: np.ndarray,
    affine: np.ndarray,
    method: str,
    template: str,
    spacing_mm: float,
    iterations: int,
) -> np.ndarray:
    """The 4x4 transform from template RAS mm to the scan's RAS mm (``affine`` maps the scan's
    voxels to them) that best aligns the scan with the template.

    Args:
        volume: the scan's intensities (non-negative, air 0).
        affine: the scan's voxel-to-RAS-mm affine.
        method: "rigid" (rotation and shift) or "affine" (plus scaling and shear, which also
            evens out head size).
        template: :data:`PACKAGED_TEMPLATE` or a NIfTI path.
        spacing_mm: the resolution the transform is estimated at.
        iterations: optimiser iterations per resolution level.
    """
    import SimpleITK as sitk

    if method not in ("rigid", "affine"):
        raise ValueError(f"registration method must be rigid or affine, got {method!r}")
    fixed = _to_sitk(*_template(template, spacing_mm))
    coarse, coarse_affine = downsample(volume.astype(np.float32), affine, spacing_mm)
    if min(coarse.shape) < 2 * _MIN_LEVEL_VOXELS:
        extent = np.array(volume.shape) * nib.affines.voxel_sizes(affine)
        raise ValueError(
            f"registration needs the scan to span {2 * _MIN_LEVEL_VOXELS} voxels of "
            f"registration_spacing_mm ({spacing_mm:g} mm) along every axis, and this one spans "
            f"{'x'.join(f'{e:.0f}' for e in extent)} mm: set preprocessing.registration: none "
            "or a smaller registration_spacing_mm"
        )
    moving = _to_sitk(coarse, coarse_affine)

    # Every voxel of the coarse copies, and one thread: the same scan always gets the same
    # transform, which the preprocessing cache, its worker processes and the twins
    # (registered separately) rely on. ITK's metric splits its work by the global default
    # thread count, not by the method's SetNumberOfThreads; with 2 threads one call's
    # transform differed from the next one's by up to 6e-5, so the default is 1 meanwhile.
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        transform = sitk.Euler3DTransform() if method == "rigid" else sitk.AffineTransform(3)
        initial = sitk.CenteredTransformInitializer(
            fixed, moving, transform, sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        registration = sitk.ImageRegistrationMethod()
        registration.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        registration.SetMetricSamplingStrategy(registration.NONE)
        registration.SetInterpolator(sitk.sitkLinear)
        registration.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.6
        )
        registration.SetOptimizerScalesFromPhysicalShift()
        registration.SetShrinkFactorsPerLevel([2, 1])
        registration.SetSmoothingSigmasPerLevel([1.0, 0.0])
        registration.SetInitialTransform(initial, inPlace=False)
        fitted = registration.Execute(fixed, moving)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return _ras_matrix(fitted)


def _ras_matrix(transform) -> np.ndarray:
    """A SimpleITK linear transform (fixed LPS mm -> moving LPS mm) as a RAS 4x4 matrix."""
    import SimpleITK as sitk

    if isinstance(transform, sitk.CompositeTransform):
        transform = transform.GetBackTransform()
    linear = sitk.AffineTransform(3)
    linear.SetMatrix(transform.GetMatrix())
    linear.SetCenter(transform.GetCenter())
    linear.SetTranslation(transform.GetTranslation())
    matrix = np.array(linear.GetMatrix()).reshape(3, 3)
    centre = np.array(linear.GetCenter())
    offset = np.array(linear.GetTranslation()) + centre - matrix @ centre
    return _RAS_LPS @ nib.affines.from_matvec(matrix, offset) @ _RAS_LPS


def resample(
    volume: np.ndarray,
    affine: np.ndarray,
    transform: np.ndarray,
    grid_shape: Sequence[int],
    grid_affine: np.ndarray,
    nearest: bool = False,
) -> np.ndarray:
    """``volume`` (voxels -> scanner mm by ``affine``) on the template-space grid: each grid
    voxel takes the scan's value at ``transform`` of its template mm; outside the scan, 0.
    ``nearest`` for label maps, else linear."""
    voxel_map = np.linalg.inv(affine) @ transform @ grid_affine
    return ndimage.affine_transform(
        volume,
        voxel_map[:3, :3],
        offset=voxel_map[:3, 3],
        output_shape=tuple(grid_shape),
        order=0 if nearest else 1,
        mode="constant",
        cval=0.0,
    )
