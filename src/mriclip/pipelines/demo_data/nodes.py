"""Thin node of the demo_data pipeline; the work is in mriclip.phantom."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import pandas as pd

from mriclip.phantom import PhantomConfig, generate_cohort, plan_cohort


def generate_phantom_cohort(
    params: dict[str, Any], scans_on_disk: pd.DataFrame
) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame, dict[str, nib.Nifti1Image]]:
    """The phantom cohort as the raw catalog entries: images, labels, scans, lesions and the
    lesion-ablated twins (empty unless ``ablated_twins``).

    ``params`` are the ``demo_data`` parameters (see ``PhantomConfig``), ``seed`` included,
    plus ``overwrite_existing`` and ``workers`` (processes rendering the patients).
    ``scans_on_disk`` is the scans table already in ``data/01_raw`` (empty if none): if it is
    not this phantom's, it may be a user's own data and is not overwritten unless
    ``overwrite_existing`` is true.
    Images and labels are keyed by the partitions' file names: ``"<scan_id>.nii.gz"``, and
    with ``sequences`` images ``"<scan_id>_<sequence>.nii.gz"``.
    """
    overwrite = bool(params.get("overwrite_existing", False))
    config = PhantomConfig.from_params(params)
    if len(scans_on_disk) and not overwrite:
        planned, _ = plan_cohort(config)
        on_disk = set(scans_on_disk.get("scan_id", pd.Series(dtype=str)).astype(str))
        if on_disk != set(planned["scan_id"]):
            raise ValueError(
                f"data/01_raw/scans.csv already lists {len(on_disk)} scans that this phantom "
                "cohort would not write (your own data, or another phantom). Refusing to "
                "overwrite them: run `kedro run --pipeline data_engineering` (and later "
                "pipelines) on your data, or set demo_data.overwrite_existing: true."
            )
    cohort = generate_cohort(config, params.get("workers", 1))
    return cohort.images, cohort.labels, cohort.scans, cohort.lesions, cohort.ablated_images
