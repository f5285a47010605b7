"""Data files of installed packages (templates, atlases), found without importing the
package, and volumes downsampled to a working resolution. The phantom's anatomy and
registration's template both read through here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def package_data_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The phantom cohort reads template anatomy from the '{package}' package, which is "
            f"not installed. Install the project requirements (pip install {package})."
        )
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"The phantom cohort needs '{'/'.join(parts)}' from the '{package}' package, but "
            f"{path} does not exist. Reinstall {package} (pip install --force-reinstall "
            f"{package}); versions without this file are not supported."
        )
    return path


def downsample(
    volume: np.ndarray, affine: np.ndarray, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian anti-aliasing then linear resampling to ``spacing_mm`` along each axis finer
    than it (never upsamples); returns the float32 volume and its affine."""
    factors = np.maximum(1.0, spacing_mm / nib.affines.voxel_sizes(affine))
    if np.all(factors == 1):
        return volume, affine
    # sigma = (factor - 1) / 2 is the anti-aliasing that skimage.transform.rescale uses.
    smoothed = ndimage.gaussian_filter(volume, sigma=(factors - 1) / 2)
    shape = tuple(int((size - 1) // f) + 1 for size, f in zip(volume.shape, factors, strict=True))
    # New voxel i sits at old voxel i * factor, so voxel 0 keeps its place.
    resampled = ndimage.affine_transform(smoothed, factors, output_shape=shape, order=1)
    return resampled.astype(np.float32), affine @ np.diag([*factors, 1.0])
