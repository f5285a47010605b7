"""Thin node of the demo_data pipeline; the work is in mriclip.imaging.phantom."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import pandas as pd

from mriclip.imaging.phantom import PhantomConfig, generate_cohort


def generate_phantom_cohort(
    params: dict[str, Any],
) -> tuple[dict[str, nib.Nifti1Image], dict[str, nib.Nifti1Image], pd.DataFrame, pd.DataFrame]:
    """The phantom cohort as the four raw catalog entries: images, labels, scans, lesions.

    ``params`` are the ``demo_data`` parameters (see ``PhantomConfig``), ``seed`` included.
    Images and labels are keyed ``"<scan_id>.nii.gz"``: the partitions' file names.
    """
    cohort = generate_cohort(PhantomConfig.from_params(params))
    return cohort.images, cohort.labels, cohort.scans, cohort.lesions
