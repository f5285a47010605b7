"""The driver: the whole phantom cohort, planned, every patient's anatomy drawn once and
every scan rendered from its own random stream, in the user data contract."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mriclip.imaging.file_index import image_file_name
from mriclip.phantom.anatomy import PatientAnatomy, sample_patient_anatomy
from mriclip.phantom.atlas import load_template_anatomy
from mriclip.phantom.cohort_plan import plan_cohort
from mriclip.phantom.config import _PATIENT_STREAM, _SCAN_STREAM, PhantomConfig
from mriclip.phantom.render import render_scan

logger = logging.getLogger(__name__)


@dataclass
class PhantomCohort:
    """A whole cohort in the user data contract (see DESIGN.md, "Input data contract"), plus
    the lesion-ablated twins (empty unless ``ablated_twins``)."""

    images: dict[str, nib.Nifti1Image]
    labels: dict[str, nib.Nifti1Image]
    scans: pd.DataFrame
    lesions: pd.DataFrame
    ablated_images: dict[str, nib.Nifti1Image] = field(default_factory=dict)


def generate_cohort(config: PhantomConfig | Mapping[str, Any]) -> PhantomCohort:
    """Generate the whole phantom cohort in the user data contract.

    ``images`` and ``labels`` are keyed by file name (the catalog's partitions):
    ``"<scan_id>.nii.gz"``, and with ``sequences`` images ``"<scan_id>_<sequence>.nii.gz"``;
    ``scans`` has the columns of :data:`SCAN_COLUMNS` and ``lesions`` the columns of
    :data:`LESION_COLUMNS`; ``ablated_images`` the lesion-ablated twins, keyed like images.
    """
    if not isinstance(config, PhantomConfig):
        config = PhantomConfig.from_params(config)
    anatomy = load_template_anatomy(float(config.template_spacing_mm), config.atlas)
    scans, planned = plan_cohort(config)
    logger.info(
        "Generating phantom cohort (seed %d): %d patients, %d scans, %d lesions",
        config.seed,
        scans["patient_id"].nunique(),
        len(scans),
        len(planned),
    )
    planned_by_scan = dict(tuple(planned.groupby("scan_id", sort=False)))
    no_lesions = planned.iloc[:0]
    patient_numbers = {pid: n for n, pid in enumerate(scans["patient_id"].unique())}
    patients: dict[str, PatientAnatomy] = {}
    images, labels, ablated, lesion_tables = {}, {}, {}, []
    for scan_number, scan in enumerate(
        tqdm(scans.itertuples(index=False), total=len(scans), desc="phantom scans", disable=None)
    ):
        if scan.patient_id not in patients:
            patient_rng = np.random.default_rng(
                [config.seed, _PATIENT_STREAM, patient_numbers[scan.patient_id]]
            )
            patients[scan.patient_id] = sample_patient_anatomy(
                config, anatomy, patient_rng, atrophic=scan.diagnosis == "atrophy"
            )
        rendered = render_scan(
            scan.scan_id,
            planned_by_scan.get(scan.scan_id, no_lesions),
            patients[scan.patient_id],
            anatomy,
            config,
            np.random.default_rng([config.seed, _SCAN_STREAM, scan_number]),
        )
        for sequence, image in rendered.images.items():
            images[image_file_name(scan.scan_id, sequence)] = image
        for sequence, image in rendered.ablated_images.items():
            ablated[image_file_name(scan.scan_id, sequence)] = image
        labels[image_file_name(scan.scan_id, None)] = rendered.label
        lesion_tables.append(rendered.lesions)
    lesions = pd.concat(lesion_tables, ignore_index=True)
    logger.info("Phantom cohort ready: %d scans, %d lesions", len(images), len(lesions))
    return PhantomCohort(images, labels, scans, lesions, ablated)
