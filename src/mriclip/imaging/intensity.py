"""Intensity checks that run before any preprocessing: voxels a registration or a
normalisation cannot use are found while the catalog is built, and the scan is named there.

A corrupted float file (data bytes overwritten) holds values such as 1e30 or inf; SimpleITK's
registration then spent more than 15 minutes on one such scan without an end. A constant
volume (all zeros: an empty export) has no head to find.
"""

from __future__ import annotations

import numpy as np

#: The setting that bounds voxel magnitudes, as messages name it.
MAX_ABS_SETTING = "data_engineering.max_abs_intensity"
_NON_FINITE = "NaN/inf voxel(s)"
_EXTREME = "voxel(s) beyond"
_CONSTANT = "constant volume"


def intensity_problem(data: np.ndarray, max_abs: float | None) -> str | None:
    """Problem text when ``data`` holds NaN/inf voxels, voxels beyond ``±max_abs`` (None: no
    bound) or a single value everywhere; else None."""
    finite = np.isfinite(data)
    if not finite.all():
        return f"{int((~finite).sum())} {_NON_FINITE}"
    low, high = float(data.min()), float(data.max())
    if max_abs is not None and (high > max_abs or low < -max_abs):
        n_extreme = int(np.count_nonzero((data > max_abs) | (data < -max_abs)))
        return (
            f"{n_extreme} {_EXTREME} +-{max_abs:g} (min {low:.3g}, max {high:.3g}): "
            "corrupted data bytes?"
        )
    if low == high:
        return f"{_CONSTANT}: every voxel is {low:g}, so there is no head to find"
    return None


def intensity_fix(problem: str) -> str | None:
    """The fix of a problem :func:`intensity_problem` reported, else None."""
    if _EXTREME in problem:
        return (
            "re-export the file or remove it (its data look corrupted); if such values are "
            f"real, raise {MAX_ABS_SETTING}"
        )
    if problem.startswith(_CONSTANT):
        return "re-export the file (it holds no image) or remove it"
    if problem.endswith(_NON_FINITE):
        return "re-export the file or remove it (NaN/inf voxels cannot be preprocessed)"
    return None
